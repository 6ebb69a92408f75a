import pytest
from django.contrib.auth.models import User

from conversations.models import Message
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
    ]:
        response = staff.get(url)
        assert response.status_code == 200, url
    assert b"hello admin" in staff.get(f"/admin/conversations/conversation/{conversation.id}/change/").content
