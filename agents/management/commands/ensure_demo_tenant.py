from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from agents.models import Agent
from tenants.models import ApiKey, Tenant
from tenants.services import api_key_create

DEMO_TENANT = "demo"
DEMO_KEY_NAME = "make run"


class Command(BaseCommand):
    help = "Ensure the demo tenant and its builtin agent exist; print a fresh API key and a curl example."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)

    @transaction.atomic
    def handle(self, *args, port: int, **options):
        tenant, _ = Tenant.objects.get_or_create(id=DEMO_TENANT, defaults={"name": "Demo"})
        agent = Agent.objects.filter(tenant=tenant).order_by("created_at").first()
        if agent is None:
            agent = Agent.objects.create(
                tenant=tenant,
                name="Demo assistant",
                description="The builtin engine: offline, answers from files and data frames.",
                system_prompt="You are a helpful assistant.",
            )
        # Secrets are stored hashed, so each run issues a new key and retires the previous run's.
        ApiKey.objects.active().filter(tenant=tenant, name=DEMO_KEY_NAME).update(revoked_at=timezone.now())
        _, secret = api_key_create(tenant=tenant, name=DEMO_KEY_NAME)
        base = f"http://127.0.0.1:{port}/tenants/{tenant.id}/api/v2"
        self.stdout.write(
            f"\nDemo tenant '{tenant.id}', agent {agent.id}.\n"
            f"Try:\n  curl -H 'Authorization: Bearer {secret}' {base}/agents/{agent.id}/conversations\n"
            f"API docs: http://127.0.0.1:{port}/api/docs/\nAPI key (shown once):"
        )
        self.stdout.write(secret)
