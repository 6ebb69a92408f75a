"""The admin's playground: the page for staff allowed it, the tenant API with a staff session and its CSRF
token (REST and the WebSocket), and the page itself in Debian's Chromium (Selenium): log in, open the
playground from the agent's page, send, watch the reply stream, reload mid-reply and see it complete;
uploads with citations, data frames paged through the slice endpoint, cancel."""

from __future__ import annotations

import asyncio
import html
import json
import re
import shutil
from pathlib import Path

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.test import Client, override_settings

from conversations.models import Message, MessageStatus
from tests.conftest import wait_until
from tests.servers import BASE_DIR, served

PASSWORD = "a-strong-password-123"
ARTIFACTS = BASE_DIR / "var" / "test-artifacts"


def make_user(name: str, *, staff: bool = True, allowed: bool = True) -> User:
    user = User.objects.create_user(name, f"{name}@example.com", PASSWORD, is_staff=staff)
    user.user_permissions.add(Permission.objects.get(codename="view_agent"))
    if allowed:
        user.user_permissions.add(Permission.objects.get(codename="use_playground"))
    return user


def playground_url(ctx) -> str:
    return f"/admin/agents/agent/{quote(ctx.agent.id)}/playground/"  # (the admin's quoting: _ is _5F)


def page_config(content: str) -> dict:
    found = re.search(r'<script id="playground-config" type="application/json">(.*?)</script>', content, re.S)
    return json.loads(html.unescape(found.group(1)))


# --- The page and the API with a session (in process) --------------------------------------------------


@pytest.mark.django_db
def test_the_agent_page_links_the_playground_for_staff_allowed_it(owner):
    change = f"/admin/agents/agent/{quote(owner.agent.id)}/change/"
    for user, allowed in [(make_user("ada"), True), (make_user("bob", allowed=False), False)]:
        client = Client()
        client.force_login(user)
        assert (playground_url(owner) in client.get(change).content.decode()) is allowed
        page = client.get(playground_url(owner))
        assert page.status_code == (200 if allowed else 403)
        if allowed:
            config = page_config(page.content.decode())
            assert config["socket"] == f"/tenants/{owner.tenant.id}/api/v2/ws"
            assert config["agent_id"] == owner.agent.id and config["csrf_token"]
    assert Client().get(playground_url(owner)).status_code == 302  # to the login page
    superuser = Client()
    superuser.force_login(User.objects.create_superuser("root", "root@example.com", PASSWORD))
    assert superuser.get("/admin/agents/agent/agt_nope/playground/").status_code == 404


@pytest.mark.django_db
def test_a_staff_session_calls_the_tenant_api_with_the_pages_csrf_token(owner, outsider):
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("ada"))
    token = page_config(client.get(playground_url(owner)).content.decode())["csrf_token"]
    conversations = f"{owner.agent_url}/conversations"
    assert client.get(conversations).status_code == 200
    refused = client.post(conversations, {}, content_type="application/json")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    created = client.post(conversations, {"name": "From the playground"}, content_type="application/json",
                          headers={"X-CSRFToken": token})  # fmt: skip
    assert created.status_code == 201, created.content
    conversation = owner.agent.conversations.get(name="From the playground")
    # An upload is a form: its CSRF check must not read the body before the upload limits apply.
    uploaded = client.post(f"{owner.conversation_url(conversation)}/files", {"files": ContentFile(b"hi", name="a.txt")},
                           headers={"X-CSRFToken": token})  # fmt: skip
    assert uploaded.status_code == 201, uploaded.content
    assert [f.name for f in conversation.files.all()] == ["a.txt"]
    # Every unsafe method needs the token, the async views' too; a form with too many fields is 400.
    conversation_url = owner.conversation_url(conversation)
    for method, url, body in [
        ("patch", conversation_url, {"name": "x"}),
        ("delete", conversation_url, None),
        ("post", f"{conversation_url}/messages", {"content": "hello"}),
    ]:
        answer = getattr(client, method)(url, body, content_type="application/json")
        assert (answer.status_code, answer.json()["error"]["code"]) == (403, "forbidden"), (method, url)
    fields = {f"field{n}": "x" for n in range(1100)}  # over DATA_UPLOAD_MAX_NUMBER_FIELDS
    crowded = client.post(f"{conversation_url}/files", fields, headers={"X-CSRFToken": token})
    assert (crowded.status_code, crowded.json()["error"]["code"]) == (400, "invalid")
    assert not Message.objects.filter(conversation=conversation).exists()
    # A request with a key is the key's alone: a bad key with the session is 401, not the session's.
    keyed = client.get(conversations, headers={"Authorization": "Bearer prl_00000000_nope"})
    assert keyed.status_code == 401
    # Staff act on any tenant's API, as in the admin; an unknown tenant is 404.
    assert client.get(f"{outsider.agent_url}/conversations").status_code == 200
    assert client.get("/tenants/nobody/api/v2/agents").status_code == 404
    # Tickets are for keys; the page opens its socket with the session.
    ticket = client.post(f"{owner.base}/ws-tickets", content_type="application/json", headers={"X-CSRFToken": token})
    assert ticket.status_code == 403 and ticket.json()["error"]["code"] == "forbidden"
    # Staff without the permission, and users who are not staff, are not signed in to the API.
    for user in [make_user("bob", allowed=False), make_user("eve", staff=False)]:
        other = Client()
        other.force_login(user)
        response = other.get(conversations)
        assert response.status_code == 401 and response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.django_db
def test_the_schema_documents_keys_not_sessions(anon):
    schema = anon.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert list(schema["components"]["securitySchemes"]) == ["ApiKey"]


# --- Through a real server ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(django_db_blocker, _writes_under_a_temporary_directory):
    # The page's script and styles, where the server's WhiteNoise finds them (as `make run` collects them).
    with override_settings(STATIC_ROOT=_writes_under_a_temporary_directory / "static"):
        call_command("collectstatic", "--noinput", verbosity=0)
    # https://partner.example may open sockets (WS_ALLOWED_ORIGINS) but is no CSRF-trusted origin.
    environment = {"REDIS_URL": "", "WS_KEY_CHECK_SECONDS": "0.5", "WS_ALLOWED_ORIGINS": "127.0.0.1,partner.example"}
    with django_db_blocker.unblock(), served(**environment) as base:
        yield base


def signed_in(server: str, username: str) -> httpx.Client:
    """A client signed in to the admin through its login form, as a browser is."""
    client = httpx.Client(base_url=server, follow_redirects=True, timeout=15)
    form = client.get("/admin/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    answer = client.post("/admin/login/?next=/admin/", data={
        "username": username, "password": PASSWORD, "csrfmiddlewaretoken": token, "next": "/admin/",
    }, headers={"Referer": f"{server}/admin/login/"})  # fmt: skip
    assert answer.status_code == 200 and "sessionid" in client.cookies, answer.text[:500]
    return client


def socket_of(server: str, client: httpx.Client, config: dict, *, csrf: str | None = None, origin=None):
    cookies = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    url = (
        f"{server.replace('http://', 'ws://')}{config['socket']}?csrf={config['csrf_token'] if csrf is None else csrf}"
    )
    return websockets.connect(url, additional_headers={"Cookie": cookies}, origin=origin or server)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
async def test_a_staff_session_opens_the_socket_with_the_csrf_token_from_this_origin(server, owner):
    await sync_to_async(make_user)("ada")
    await sync_to_async(make_user)("bob", allowed=False)
    ada = await sync_to_async(signed_in)(server, "ada")
    config = page_config((await sync_to_async(ada.get)(playground_url(owner))).text)
    async with socket_of(server, ada, config) as socket:
        await socket.send(json.dumps({"type": "ping", "request_id": "p"}))
        assert json.loads(await socket.recv()) == {"type": "pong", "request_id": "p"}
        # The permission taken away: the open socket closes within seconds (WS_KEY_CHECK_SECONDS).
        await sync_to_async(lambda: User.objects.get(username="ada").user_permissions.clear())()
        async with asyncio.timeout(5):
            frame = json.loads(await socket.recv())
            assert (frame["type"], frame["status"]) == ("error", 401)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await socket.recv()
        assert closed.value.rcvd.code == 4401
    await sync_to_async(lambda: make_user("cy"))()
    ada = await sync_to_async(signed_in)(server, "cy")
    config = page_config((await sync_to_async(ada.get)(playground_url(owner))).text)
    # A wrong token (403, 4403), and a user without the permission (401, 4401, as on REST): an error frame,
    # then the socket closes.
    bob = await sync_to_async(signed_in)(server, "bob")
    bobs_token = bob.cookies["csrftoken"]  # (bob cannot open the page; Django takes the cookie's secret too)
    for client, csrf, status, code in [
        (ada, "not-the-token", 403, "forbidden"),
        (bob, bobs_token, 401, "not_authenticated"),
    ]:
        async with socket_of(server, client, config, csrf=csrf) as socket:
            frame = json.loads(await socket.recv())
            assert (frame["type"], frame["status"], frame["error"]["code"]) == ("error", status, code)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await socket.recv()
            assert closed.value.rcvd.code == 4000 + status
    # Another site's page is refused at the handshake; a page of an origin the socket accepts but CSRF does
    # not trust, with the right token, is refused by the CSRF check.
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with socket_of(server, ada, config, origin="https://evil.example"):
            pass
    assert refused.value.response.status_code == 403
    async with socket_of(server, ada, config, origin="https://partner.example") as socket:
        frame = json.loads(await socket.recv())
        assert (frame["status"], frame["error"]["code"]) == (403, "forbidden") and "Origin" in frame["error"]["message"]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await socket.recv()
        assert closed.value.rcvd.code == 4403
    # Signing out closes the session's open sockets.
    async with socket_of(server, ada, config) as socket:
        await socket.send(json.dumps({"type": "ping"}))
        assert json.loads(await socket.recv())["type"] == "pong"
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', (await sync_to_async(ada.get)("/admin/")).text)
        await sync_to_async(ada.post)("/admin/logout/", data={"csrfmiddlewaretoken": token.group(1)},
                                      headers={"Referer": f"{server}/admin/"})  # fmt: skip
        async with asyncio.timeout(5):
            frame = json.loads(await socket.recv())
            assert (frame["status"], frame["error"]["message"]) == (
                401,
                "Signed out, or no longer allowed the playground.",
            )
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await socket.recv()
        assert closed.value.rcvd.code == 4401


# --- In a real browser ----------------------------------------------------------------------------------


def chromium_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip(
            "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)"
        )
    return browser, driver


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400"]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for a failure's message
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def log_in(driver, server: str, username: str, then: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{server}/admin/login/?next={then}")
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    ready = 'return document.readyState === "complete"'
    waited(driver, lambda d: "/login/" not in d.current_url and d.execute_script(ready), "signed in")


def waited(driver, predicate, what: str, timeout: float = 20):
    """predicate(driver)'s first truthy value; on a timeout, the failure says what the page showed."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(predicate)
    except TimeoutException:
        shown = driver.execute_script(
            "const $ = (id) => document.getElementById(id);"
            "return $('playground') && [$('pg-status').textContent, $('pg-error').textContent];"
        )
        console = [entry["message"] for entry in driver.get_log("browser")]
        pytest.fail(f"waited {timeout}s for {what}; the page showed {shown}, its console: {console}")


def replies(driver) -> list[dict]:
    """The replies on the page: id, status, content and citations as shown."""
    return driver.execute_script(
        """return [...document.querySelectorAll("#pg-messages li.assistant")].map((li) => ({
            id: li.dataset.id, status: li.dataset.status,
            content: li.querySelector(".pg-content").textContent,
            thinking: li.querySelector(".pg-thinking").textContent,
            citations: [...li.querySelectorAll(".pg-citations li")].map((c) => c.textContent),
            frames: [...li.querySelectorAll(".pg-frame caption")].map((c) => c.textContent),
        }));"""
    )


def send_message(driver, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    waited(driver, lambda d: d.find_element(By.ID, "playground").get_attribute("data-state") == "open", "socket open")
    waited(driver, lambda d: d.find_element(By.ID, "pg-send").is_enabled(), "ready to send")
    box = driver.find_element(By.ID, "pg-input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_playground_streams_a_reply_and_resumes_it_after_a_reload(server, owner, browser):
    from selenium.webdriver.common.by import By

    owner.agent.options = {"chunk_delay_ms": 60}  # a reply of several seconds: time to reload mid-way
    owner.agent.save()
    make_user("ada")
    log_in(browser, server, "ada", f"/admin/agents/agent/{quote(owner.agent.id)}/change/")
    browser.find_element(By.CSS_SELECTOR, "a.playgroundlink").click()  # (the admin shows it in capitals)
    send_message(browser, "What is in the March invoices?")

    def streaming(driver):
        shown = replies(driver)
        return shown and shown[-1]["status"] == "in_progress" and shown[-1]["content"] and shown[-1]

    partial = waited(browser, streaming, "the reply streaming")
    reply = Message.objects.get(id=partial["id"])
    assert reply.status == MessageStatus.IN_PROGRESS and partial["thinking"]  # the builtin engine's steps
    browser.refresh()  # mid-reply: the page shows the conversation again and follows the reply to its end
    resumed = waited(browser, lambda d: replies(d) and replies(d)[-1], "the reply shown again")
    assert resumed["status"] == "in_progress"  # (still running: what follows is the socket's doing)
    waited(browser, lambda d: replies(d)[-1]["status"] == "completed", "the reply completed", 60)
    reply.refresh_from_db()
    (shown,) = replies(browser)
    assert reply.status == MessageStatus.COMPLETED and len(partial["content"]) < len(reply.content)
    assert shown["content"] == reply.content  # nothing lost, nothing shown twice
    user_messages = browser.find_elements(By.CSS_SELECTOR, "#pg-messages li.user .pg-content")
    assert [m.text for m in user_messages] == ["What is in the March invoices?"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "playground.png"))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_playground_uploads_cites_pages_a_data_frame_and_cancels(server, owner, browser, tmp_path: Path):
    from selenium.webdriver.common.by import By

    make_user("ada")
    log_in(browser, server, "ada", playground_url(owner))
    notes = tmp_path / "march-invoices.txt"
    notes.write_text("Invoices of March 2025.\n\nThe total for March 2025 is 48,250.00 EUR, paid on April 2.\n")
    browser.find_element(By.ID, "pg-files").send_keys(str(notes))
    waited(browser, lambda d: "march-invoices.txt" in d.find_element(By.ID, "pg-attached").text, "the upload")
    send_message(browser, "What is the total for March 2025?")
    done = waited(browser, lambda d: replies(d) and replies(d)[-1]["status"] == "completed" and replies(d)[-1], "cited")
    assert any("march-invoices.txt" in citation for citation in done["citations"]), done

    send_message(browser, "SELECT range AS n, range * range AS square FROM range(25)")
    caption = waited(browser, lambda d: (replies(d)[-1]["frames"] or [None])[0], "a data frame table")
    assert re.fullmatch(r"\w+: rows 1 to 10 of 25", caption), caption
    browser.find_element(By.XPATH, "//button[text()='Next rows']").click()
    waited(browser, lambda d: "rows 11 to 20 of 25" in replies(d)[-1]["frames"][0], "the next page of rows")
    cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, ".pg-frame tbody tr:first-child td")]
    assert cells == ["10", "100"]

    owner.agent.options = {"chunk_delay_ms": 100}
    owner.agent.save()
    send_message(browser, "Tell me a long story about invoices.")
    waited(browser, lambda d: replies(d)[-1]["status"] == "in_progress" and replies(d)[-1]["content"], "streaming")
    browser.find_element(By.ID, "pg-cancel").click()
    waited(browser, lambda d: replies(d)[-1]["status"] == "cancelled", "the reply cancelled")
    cancelled = Message.objects.get(id=replies(browser)[-1]["id"])
    assert cancelled.status == MessageStatus.CANCELLED
    assert wait_until(
        lambda: replies(browser)[-1]["content"] == cancelled.content, what="the page shows what is stored"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "playground-tools.png"))


@pytest.mark.django_db
def test_a_session_renewed_by_a_secret_key_rotation_is_saved_and_answers(owner):
    """Signed in under a key that became a fallback: Django renews the session's hash during authentication;
    it is saved as the owner (the tenant's database role may not write sessions), and the request answers."""
    client = Client()
    with override_settings(SECRET_KEY="the-old-secret-key-" * 3):
        client.force_login(make_user("ada"))
    with override_settings(SECRET_KEY="the-new-secret-key-" * 3, SECRET_KEY_FALLBACKS=["the-old-secret-key-" * 3]):
        assert client.get(f"{owner.agent_url}/conversations").status_code == 200
        assert client.get(f"{owner.agent_url}/conversations").status_code == 200  # the renewed session holds
