"""Archive, pin and retention: `archived` hides a conversation from the lists (`archived=true` lists those
instead), `pinned` lists it first (paged consistently); `retention_days`, per agent or else per tenant,
deletes conversations idle longer, with their files, frames and stored bytes, from the maintenance of
every process or `manage.py purge_expired`, in short batches."""

import datetime
import io

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.utils import timezone

from agents.models import Agent
from conversations.models import Conversation, Message
from dataframes.models import DataFrame
from files.models import File
from tests.file_factories import upload
from turns.services import conversations_purge_expired

pytestmark = pytest.mark.django_db


def ids(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return [item["id"] for item in response.json()["items"]]


def test_archived_conversations_are_hidden_and_pinned_ones_come_first(owner):
    url = f"{owner.agent_url}/conversations"
    made = [owner.client.post(url, {"name": f"c{i}"}, format="json").json()["id"] for i in range(5)]
    pin = owner.client.patch(f"{url}/{made[1]}", {"pinned": True}, format="json")
    assert pin.status_code == 200 and pin.json()["pinned"] is True
    archived = owner.client.patch(f"{url}/{made[3]}", {"archived": True}, format="json")
    assert archived.status_code == 200 and archived.json()["archived"] is True
    created_archived = owner.client.post(url, {"name": "old", "archived": True}, format="json").json()
    expected = [made[1], made[4], made[2], made[0]]  # pinned first, then by activity
    assert ids(owner.client.get(url)) == expected
    assert ids(owner.client.get(f"{owner.base}/conversations")) == expected
    assert ids(owner.client.get(url, {"archived": "true"})) == [created_archived["id"], made[3]]
    paged, cursor = [], None
    while True:
        page = owner.client.get(url, {"limit": 1, **({"next": cursor} if cursor else {})}).json()
        paged += [item["id"] for item in page["items"]]
        if not (cursor := page["next"]):
            break
    assert paged == expected
    unpinned = owner.client.patch(f"{url}/{made[1]}", {"pinned": False}, format="json").json()
    # A pin is not activity: unpinned, it goes back to its place, and its retention clock never moved.
    assert unpinned["pinned"] is False and ids(owner.client.get(url)) == [made[4], made[2], made[1], made[0]]
    assert (
        unpinned["updated_at"]
        == pin.json()["updated_at"]
        == Conversation.objects.get(pk=made[1]).updated_at.isoformat().replace("+00:00", "Z")
    )
    bad = owner.client.get(url, {"archived": "maybe"})
    assert bad.status_code == 400 and bad.json()["error"]["message"].startswith("archived:")
    not_bool = owner.client.patch(f"{url}/{made[0]}", {"pinned": "yes"}, format="json")
    assert not_bool.status_code == 400 and not_bool.json()["error"]["message"].startswith("pinned:")


def idle(conversation: Conversation, days: float) -> None:
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now() - datetime.timedelta(days=days))


def test_retention_deletes_idle_conversations_with_what_they_own(
    owner, outsider, settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.MEDIA_ROOT = tmp_path / "media"
    owner.tenant.retention_days = 30
    owner.tenant.save()
    keeper = Agent.objects.create(tenant=owner.tenant, name="keeps a year", retention_days=365)
    old = owner.conversation("old")
    (file_ref,) = [f["file_ref"] for f in upload(owner, old, [("notes.txt", b"old notes")]).json()["items"]]
    stored = File.objects.get(id=file_ref).storage_key
    DataFrame.objects.create(tenant=owner.tenant, conversation=old, name="t", storage_key="k")
    Message.objects.create(tenant=owner.tenant, conversation=old, role="user", content="hello")
    recent = owner.conversation("recent")
    kept_by_agent = owner.conversation("older, but its agent keeps a year", agent=keeper)
    theirs = outsider.conversation("another tenant keeps everything")
    pinned_old = owner.conversation("pinned and old")
    Conversation.objects.filter(pk=pinned_old.pk).update(pinned=True, archived=True)
    for conversation, days in [(old, 31), (recent, 29), (kept_by_agent, 200), (theirs, 400), (pinned_old, 45)]:
        idle(conversation, days)

    with django_capture_on_commit_callbacks(execute=True):  # (stored bytes go once the deletion commits)
        assert conversations_purge_expired() == 2
    left = set(Conversation.objects.values_list("id", flat=True))
    assert {recent.id, kept_by_agent.id, theirs.id} <= left and not {old.id, pinned_old.id} & left
    assert not File.objects.filter(id=file_ref).exists() and not DataFrame.objects.filter(conversation_id=old.id)
    assert not Message.objects.filter(conversation_id=old.id).exists()
    assert not default_storage.exists(stored)
    # Through the API too: gone.
    assert owner.client.get(owner.conversation_url(old)).status_code == 404
    # The agent's setting wins; null falls back to the tenant's.
    idle(kept_by_agent, 400)
    out = io.StringIO()
    call_command("purge_expired", stdout=out)
    assert out.getvalue().strip() == "Deleted 1 expired conversation(s)."
    assert conversations_purge_expired() == 0


def test_retention_goes_in_batches(owner, monkeypatch):
    monkeypatch.setattr("turns.services.RETENTION_BATCH", 2)
    owner.agent.retention_days = 1
    owner.agent.save()
    for i in range(5):
        idle(owner.conversation(f"c{i}"), 2)
    assert conversations_purge_expired(batches_max=2) == 4  # two batches of two, the rest at the next run
    assert conversations_purge_expired() == 1
    assert not Conversation.objects.filter(tenant=owner.tenant).exists()


def test_retention_days_is_validated_on_the_agent(owner):
    for value, status in [(0, 400), (36_501, 400), ("30", 400), (30, 200), (None, 200)]:
        response = owner.client.patch(owner.agent_url, {"retention_days": value}, format="json")
        assert response.status_code == status, (value, response.json())
    assert owner.client.get(owner.agent_url).json()["retention_days"] is None


@pytest.mark.django_db(transaction=True)
def test_every_server_process_purges_by_itself(owner, django_db_blocker):
    from tests.conftest import wait_until
    from tests.servers import served

    owner.agent.retention_days = 1
    owner.agent.save()
    expired, kept = owner.conversation("expired"), owner.conversation("kept")
    idle(expired, 2)
    with django_db_blocker.unblock(), served(REDIS_URL="", RETENTION_PURGE_SECONDS="0.5"):
        wait_until(lambda: not Conversation.objects.filter(pk=expired.pk).exists(), timeout=30, what="the purge")
    assert Conversation.objects.filter(pk=kept.pk).exists()
