from django.core.management.base import BaseCommand, CommandError

from core.errors import ApplicationError
from tenants.services import api_key_create, tenant_create


class Command(BaseCommand):
    help = "Create a tenant and print a new API key for it alone on the last line."

    def add_arguments(self, parser):
        parser.add_argument("tenant_id")
        parser.add_argument("--name", default="")

    def handle(self, *args, tenant_id: str, name: str, **options):
        try:
            tenant = tenant_create(tenant_id=tenant_id, name=name)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        except Exception as exc:  # model validation of the slug
            raise CommandError(f"Invalid tenant id {tenant_id!r}: {exc}") from exc
        key, secret = api_key_create(tenant=tenant, name="initial")
        self.stdout.write(f"Created tenant {tenant.id}; API key {key.prefix} (shown once):")
        self.stdout.write(secret)
