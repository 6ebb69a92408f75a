import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile

from agents.models import HttpTool, McpServer
from conversations.models import Feedback, Message
from dataframes.models import DataFrame
from files.services import file_create_many
from tenants.models import ApiKey

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    user = User.objects.create_superuser("admin", "admin@example.com", "a-strong-password-123")
    client.force_login(user)
    return client


def test_creating_a_key_in_the_admin_shows_the_secret_once(staff, owner):
    response = staff.post("/admin/tenants/apikey/add/", {"tenant": owner.tenant.id, "name": "from admin"}, follow=True)
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    secret = next(m for m in shown if "prl_" in m).split()[-1]
    key = ApiKey.objects.get(name="from admin")
    assert secret.startswith(f"prl_{key.prefix}_")
    assert secret.split("_", 2)[2] not in key.hash
    owner.client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert owner.client.get(f"{owner.base}/agents").status_code == 200


def test_the_admin_pages_render(staff, owner):
    conversation = owner.conversation()
    Message.objects.create(tenant=owner.tenant, conversation=conversation, role="user", content="hello admin")
    tool = HttpTool.objects.create(
        tenant=owner.tenant, name="lookup", description="d", url="https://t.example/x", headers_encrypted="tool-cipher"
    )
    server = McpServer.objects.create(tenant=owner.tenant, name="crm", url="https://m.example/mcp",
                                      headers_encrypted="mcp-cipher")  # fmt: skip
    for url in [
        "/admin/tenants/tenant/",
        f"/admin/tenants/tenant/{owner.tenant.id}/change/",
        "/admin/tenants/apikey/",
        "/admin/agents/agent/",
        f"/admin/agents/agent/{owner.agent.id}/change/",
        "/admin/conversations/conversation/",
        f"/admin/conversations/conversation/{conversation.id}/change/",
        "/admin/conversations/message/?status__exact=completed",
        "/admin/conversations/feedback/?category__exact=inaccurate",
        "/admin/agents/httptool/",
        f"/admin/agents/httptool/{tool.id}/change/",
        "/admin/agents/mcpserver/",
        f"/admin/agents/mcpserver/{server.id}/change/",
    ]:
        response = staff.get(url)
        assert response.status_code == 200, url
        assert b"-cipher" not in response.content, url
    for url in (f"/admin/agents/httptool/{tool.id}/change/", f"/admin/agents/mcpserver/{server.id}/change/"):
        page = staff.get(url).content  # what only the API writes (it encrypts the secrets) has no Save button
        assert b'name="_save"' not in page and b"https://" in page, url
    assert b"hello admin" in staff.get(f"/admin/conversations/conversation/{conversation.id}/change/").content


def test_a_conversation_shows_its_messages_files_and_frames_and_files_are_read_only(staff, owner):
    conversation = owner.conversation()
    question = Message.objects.create(tenant=owner.tenant, conversation=conversation, role="user", content="q")
    reply = Message.objects.create(
        tenant=owner.tenant, conversation=conversation, parent=question, role="assistant", content="an answer",
        output_tokens=42,
    )  # fmt: skip
    Feedback.objects.create(tenant=owner.tenant, message=reply, thumbs_up=False, category="inaccurate")
    (file,) = file_create_many(
        tenant=owner.tenant, conversation_id=conversation.id, uploads=[ContentFile(b"hello", name="notes.txt")]
    )
    DataFrame.objects.create(tenant=owner.tenant, conversation=conversation, name="totals", row_count=3)

    page = staff.get(f"/admin/conversations/conversation/{conversation.id}/change/").content.decode()
    file_page = staff.get(f"/admin/files/file/{file.id}/change/").content.decode()
    messages = staff.get("/admin/conversations/message/").content.decode()

    assert "an answer" in page and "42" in page
    assert "inaccurate" in page
    assert "notes.txt" in page and "totals" in page
    assert 'name="_save"' not in file_page and "notes.txt" in file_page
    assert "an answer" in messages and "inaccurate" in messages  # the list shows content and feedback
    assert "Parley administration" in page
