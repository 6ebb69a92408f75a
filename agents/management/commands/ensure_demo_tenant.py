import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from agents.models import Agent
from tenants.models import ApiKey, Tenant
from tenants.services import api_key_create, api_key_verify

DEMO_TENANT = "demo"
DEMO_KEY_NAME = "make run"


class Command(BaseCommand):
    help = (
        "Ensure the demo tenant and its builtin agent exist; print its API key (the same on every run: kept in "
        "a file readable by you only, for the local demo) and curl examples."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--key-file", type=Path, default=None, help="Where the demo key is kept (default: var/demo_key)."
        )

    @transaction.atomic
    def handle(self, *args, port: int, key_file: Path | None, **options):
        key_file = key_file or settings.VAR_DIR / "demo_key"
        tenant, _ = Tenant.objects.get_or_create(id=DEMO_TENANT, defaults={"name": "Demo"})
        agent = Agent.objects.filter(tenant=tenant).order_by("created_at").first()
        if agent is None:
            agent = Agent.objects.create(
                tenant=tenant,
                name="Demo assistant",
                description="The builtin engine: offline, answers from files and data frames.",
                system_prompt="You are a helpful assistant.",
            )
        secret = _kept_secret(key_file, tenant)
        if secret is None:  # the first run, or its key was revoked: a new one, and no other demo key
            ApiKey.objects.active().filter(tenant=tenant, name=DEMO_KEY_NAME).update(revoked_at=timezone.now())
            _, secret = api_key_create(tenant=tenant, name=DEMO_KEY_NAME)
            _keep_secret(key_file, secret)
        base = f"http://127.0.0.1:{port}/tenants/{tenant.id}/api/v2"
        self.stdout.write(
            f"\nDemo tenant '{tenant.id}', agent {agent.id}. In a shell:\n"
            f"  export KEY=$(cat {key_file}) AID={agent.id} BASE={base}\n"
            f'  curl -H "Authorization: Bearer $KEY" $BASE/agents/$AID/conversations\n'
            f"API docs: http://127.0.0.1:{port}/api/docs/\nAPI key (kept in {key_file} for the next runs):"
        )
        self.stdout.write(secret)


def _kept_secret(key_file: Path, tenant: Tenant) -> str | None:
    try:
        secret = key_file.read_text().strip()
    except FileNotFoundError:
        return None
    key = api_key_verify(secret)
    return secret if key is not None and key.tenant_id == tenant.id else None


def _keep_secret(key_file: Path, secret: str) -> None:
    key_file.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(secret + "\n")
