"""Webhooks through the API and a real receiver: endpoints registered with a secret shown once; events
recorded in the transaction that makes them (an outbox) and sent by the sender, signed as Standard Webhooks
specifies (checked here with that specification's own library); retries with backoff until delivered, one
event id however many attempts; a backlog sent in order; private addresses refused; deliveries listed and
replayed."""

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import override_settings
from django.utils import timezone
from standardwebhooks import Webhook

from tenants.models import WebhookDelivery, WebhookEndpoint
from tenants.webhooks import webhook_event_record
from tests.conftest import async_client, await_until, wait_until
from tests.servers import served
from turns.webhooks import webhooks_send_due

pytestmark = pytest.mark.django_db(transaction=True)

LOCAL = ["127.0.0.1/32"]


class Receiver:
    """A local HTTP server that answers each request with the next of `statuses` (then 200), keeping what
    it received."""

    def __init__(self, statuses=()):
        self.statuses = list(statuses)
        self.received: list[tuple[dict, bytes, int]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def verified(self, secret: str) -> list[dict]:
        """The bodies whose signature checks, once per webhook-id (as a receiver de-duplicates)."""
        events: dict[str, dict] = {}
        for headers, body, status in self.received:
            payload = Webhook(secret).verify(body, headers)
            if status < 300:
                events.setdefault(headers["webhook-id"], payload)
        return list(events.values())


@pytest.fixture
def receiver():
    servers = []

    def start(statuses=()):
        servers.append(Receiver(statuses))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def register(ctx, url: str, events=("message.completed",)) -> dict:
    response = ctx.client.post(f"{ctx.base}/webhooks", {"url": url, "events": list(events)}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def send_until_settled(*, rounds: int = 50) -> None:
    """Run the sender until no delivery is pending and due (retries made due at once)."""

    async def run():
        for _ in range(rounds):
            tasks = await webhooks_send_due()
            for task in tasks:
                await task
            if not await WebhookDelivery.objects.filter(status="pending").aexists():
                return
            await WebhookDelivery.objects.filter(status="pending").aupdate(next_attempt_at=timezone.now())
        raise AssertionError("deliveries still pending")

    async_to_sync(run)()


def test_an_endpoint_is_registered_with_a_secret_shown_once(owner):
    created = register(owner, "https://hooks.acme.example/parley", ["message.failed", "message.completed"])
    assert created["secret"].startswith("whsec_") and created["events"] == ["message.completed", "message.failed"]
    url = f"{owner.base}/webhooks/{created['id']}"
    shown = owner.client.get(url).json()
    assert "secret" not in shown and shown["url"] == "https://hooks.acme.example/parley"
    assert "secret" not in owner.client.get(f"{owner.base}/webhooks").json()["items"][0]
    paused = owner.client.patch(url, {"active": False}, format="json")
    assert paused.status_code == 200 and paused.json()["active"] is False
    bad = owner.client.post(
        f"{owner.base}/webhooks", {"url": "ftp://x", "events": ["message.completed"]}, format="json"
    )
    assert bad.status_code == 400 and bad.json()["error"]["message"].startswith("url:")
    unknown = owner.client.post(
        f"{owner.base}/webhooks", {"url": "https://x.example", "events": ["message.edited"]}, format="json"
    )
    assert unknown.status_code == 400 and unknown.json()["error"]["message"].startswith("events[0]:")
    assert owner.client.delete(url).status_code == 200 and not WebhookEndpoint.objects.exists()


def test_a_completed_reply_is_delivered_signed_once_per_id_after_two_failures(owner, receiver, settings):
    settings.TOOL_ALLOWED_NETWORKS = LOCAL
    hook = receiver(statuses=[503, 500])
    endpoint = register(owner, hook.url)
    conversation = owner.conversation()
    posted = owner.client.post(f"{owner.conversation_url(conversation)}/messages", {"content": "Hi"}, format="json")
    reply = posted.json()["messages"][1]
    delivery = WebhookDelivery.objects.get()
    assert delivery.event_type == "message.completed" and delivery.status == "pending"  # (nothing sent yet)
    send_until_settled()
    assert [status for _, _, status in hook.received] == [503, 500, 200]
    assert len({headers["webhook-id"] for headers, _, _ in hook.received}) == 1  # the same id on every attempt
    assert len({body for _, body, _ in hook.received}) == 1
    [event] = hook.verified(endpoint["secret"])
    assert event["type"] == "message.completed" and event["data"]["message"]["id"] == reply["id"]
    assert event["data"]["message"]["content"] == reply["content"] and event["data"]["agent_id"] == owner.agent.id
    listed = owner.client.get(f"{owner.base}/webhooks/{endpoint['id']}/deliveries").json()["items"]
    assert [(d["status"], d["attempts"]) for d in listed] == [("delivered", 3)]
    assert [a["status_code"] for a in listed[0]["attempt_log"]] == [503, 500, 200]


def test_a_backlog_is_sent_in_order_once_the_endpoint_is_back(owner, receiver, settings):
    settings.TOOL_ALLOWED_NETWORKS = LOCAL
    settings.WEBHOOK_MAX_IN_FLIGHT = 1
    hook = receiver(statuses=[503] * 3)
    endpoint = register(owner, hook.url, ["conversation.deleted"])
    conversations = [owner.conversation(f"c{number}") for number in range(8)]
    for conversation in conversations:
        assert owner.client.delete(owner.conversation_url(conversation)).status_code == 200
    send_until_settled()
    names = [event["data"]["conversation"]["name"] for event in hook.verified(endpoint["secret"])]
    assert names == [f"c{number}" for number in range(8)]
    # While the first failed, nothing later went before it: the first three attempts were all the first's.
    assert len({headers["webhook-id"] for headers, _, _ in hook.received[:4]}) == 1


def test_an_event_rolled_back_is_never_sent_and_a_committed_one_survives_a_dead_sender(owner, receiver, settings):
    settings.TOOL_ALLOWED_NETWORKS = LOCAL
    hook = receiver()
    endpoint = register(owner, hook.url, ["message.completed"])
    with pytest.raises(RuntimeError), transaction.atomic():
        webhook_event_record(tenant_id=owner.tenant.id, event_type="message.completed", data=lambda: {"n": 1})
        raise RuntimeError("the event's transaction fails")
    assert not WebhookDelivery.objects.exists()
    webhook_event_record(tenant_id=owner.tenant.id, event_type="message.completed", data=lambda: {"n": 2})
    # A process that leased the endpoint died while sending: nobody sends until its lease ends, then one does.
    WebhookEndpoint.objects.update(sending_until=timezone.now() + timedelta(hours=1))
    assert async_to_sync(webhooks_send_due)() == [] and hook.received == []
    WebhookEndpoint.objects.update(sending_until=timezone.now() - timedelta(seconds=1))
    send_until_settled()
    assert [event["data"] for event in hook.verified(endpoint["secret"])] == [{"n": 2}]


def test_a_private_address_is_refused_and_the_delivery_can_be_replayed(owner, receiver, settings):
    hook = receiver()
    endpoint = register(owner, hook.url, ["message.completed"])
    webhook_event_record(tenant_id=owner.tenant.id, event_type="message.completed", data=lambda: {"n": 1})
    with override_settings(TOOL_ALLOWED_NETWORKS=[]):

        async def once():
            for task in await webhooks_send_due():
                await task

        async_to_sync(once)()
    delivery = WebhookDelivery.objects.get()
    assert hook.received == [] and delivery.status == "pending" and delivery.attempts == 1
    assert "private or reserved address" in delivery.attempt_log[0]["error"]
    settings.TOOL_ALLOWED_NETWORKS = LOCAL
    send_until_settled()
    url = f"{owner.base}/webhooks/{endpoint['id']}/deliveries"
    delivered = owner.client.get(url, {"status": "delivered"}).json()["items"]
    assert [d["id"] for d in delivered] == [delivery.id]
    replayed = owner.client.post(f"{url}/{delivery.id}/replay")
    assert replayed.status_code == 200 and replayed.json()["status"] == "pending"
    send_until_settled()
    assert len(hook.received) == 2 and hook.received[0][1] == hook.received[1][1]
    assert owner.client.get(url, {"status": "sent"}).status_code == 400


def test_an_uploaded_files_extraction_and_an_inactive_endpoint(owner, receiver, settings):
    settings.TOOL_ALLOWED_NETWORKS = LOCAL
    hook = receiver()
    endpoint = register(owner, hook.url, ["file.extracted"])
    conversation = owner.conversation()
    upload = owner.client.post(
        f"{owner.conversation_url(conversation)}/files",
        {"files": [SimpleUploadedFile("notes.txt", b"Hello there")]},
        format="multipart",
    )
    assert upload.status_code == 201
    owner.client.patch(f"{owner.base}/webhooks/{endpoint['id']}", {"active": False}, format="json")
    owner.client.post(
        f"{owner.conversation_url(conversation)}/files",
        {"files": [SimpleUploadedFile("more.txt", b"More")]},
        format="multipart",
    )
    send_until_settled()
    [event] = hook.verified(endpoint["secret"])
    assert event["type"] == "file.extracted" and event["data"]["file"]["name"] == "notes.txt"
    assert event["data"]["file"]["extraction_status"] == "done" and event["data"]["conversation_id"] == conversation.id


def test_payload_is_the_body_sent(owner):
    register(owner, "https://hooks.acme.example/parley", ["message.completed"])
    webhook_event_record(tenant_id=owner.tenant.id, event_type="message.completed", data=lambda: {"n": 3})
    delivery = WebhookDelivery.objects.get()
    assert json.loads(delivery.body)["data"] == {"n": 3} and delivery.event_id.startswith("evt_")


async def test_a_background_posts_webhook_url_must_be_a_registered_endpoint_which_gets_its_reply(
    owner, receiver, settings
):
    settings.TOOL_ALLOWED_NETWORKS = LOCAL
    hook = receiver()
    endpoint = await sync_to_async(register)(owner, hook.url, ["file.extracted"])  # (no message events)
    conversation = await sync_to_async(owner.conversation)()
    client, url = async_client(owner), f"{owner.conversation_url(conversation)}/messages"

    async def post(body):
        return await client.post(url, body, content_type="application/json")

    unknown = await post({"content": "Hi", "background": True, "webhook_url": "https://elsewhere.example/hook"})
    assert unknown.status_code == 400 and unknown.json()["error"]["message"].startswith("webhook_url:")
    waiting = await post({"content": "Hi", "webhook_url": hook.url})
    assert (
        waiting.status_code == 400 and waiting.json()["error"]["message"] == "webhook_url: Only with background: true."
    )
    started = await post({"content": "Hi", "background": True, "webhook_url": hook.url})
    assert started.status_code == 202, started.json()
    reply_id = started.json()["current_message_id"]
    await await_until(lambda: WebhookDelivery.objects.filter(endpoint_id=endpoint["id"]).aexists(), timeout=20)
    await sync_to_async(send_until_settled)()
    [event] = hook.verified(endpoint["secret"])
    assert event["type"] == "message.completed" and event["data"]["message"]["id"] == reply_id


@pytest.mark.slow
def test_an_event_committed_before_its_process_died_is_delivered_by_the_next_one(owner, receiver, settings):
    """A process that dies right after an event's commit sends nothing; the outbox row waits in the database,
    and a server process started afterwards (a real uvicorn, with its maintenance) delivers it."""
    hook = receiver()
    endpoint = register(owner, hook.url, ["message.completed"])
    webhook_event_record(tenant_id=owner.tenant.id, event_type="message.completed", data=lambda: {"n": 7})
    assert hook.received == []  # nobody sent it: the process that made it is gone
    # (The server decrypts the endpoint's secret with the key this process encrypted it with.)
    with served(TOOL_ALLOWED_NETWORKS="127.0.0.1/32", SECRET_KEY=settings.SECRET_KEY):
        wait_until(lambda: hook.received, timeout=30, what="the delivery")
    [event] = hook.verified(endpoint["secret"])
    assert event["data"] == {"n": 7}
    assert WebhookDelivery.objects.get().status == "delivered"


def test_a_secret_the_server_cannot_decrypt_is_an_attempts_error_not_a_loop(owner, receiver, settings):
    settings.TOOL_ALLOWED_NETWORKS = LOCAL
    hook = receiver()
    register(owner, hook.url, ["message.completed"])
    WebhookEndpoint.objects.update(secret_encrypted="not a token of this SECRET_KEY")
    webhook_event_record(tenant_id=owner.tenant.id, event_type="message.completed", data=lambda: {"n": 1})

    async def once():
        for task in await webhooks_send_due():
            await task

    async_to_sync(once)()
    delivery = WebhookDelivery.objects.get()
    assert hook.received == [] and delivery.attempts == 1 and delivery.status == "pending"
    assert "cannot be decrypted" in delivery.attempt_log[0]["error"]
    assert delivery.next_attempt_at > timezone.now()  # (its backoff, not the next poll)
