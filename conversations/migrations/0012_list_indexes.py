from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # The lists' indexes gain `archived` and `pinned` (pinned conversations come first), `user_id` and
    # `metadata` filters get theirs: built without blocking writes, the new ones before the old go, so the
    # lists never go without one.
    atomic = False

    dependencies = [
        ("conversations", "0011_archived_and_pinned"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="conversation",
            index=models.Index(
                fields=["tenant", "agent", "archived", "-pinned", "-updated_at", "-id"], name="conv_agent_list"
            ),
        ),
        AddIndexConcurrently(
            model_name="conversation",
            index=models.Index(fields=["tenant", "archived", "-pinned", "-updated_at", "-id"], name="conv_tenant_list"),
        ),
        AddIndexConcurrently(
            model_name="conversation",
            index=models.Index(
                fields=["tenant", "user_id", "archived", "-pinned", "-updated_at", "-id"], name="conv_user_list"
            ),
        ),
        AddIndexConcurrently(
            model_name="conversation",
            index=GinIndex(fields=["metadata"], name="conversation_metadata", opclasses=["jsonb_path_ops"]),
        ),
        RemoveIndexConcurrently(model_name="conversation", name="conv_agent_activity"),
        RemoveIndexConcurrently(model_name="conversation", name="conv_tenant_activity"),
    ]
