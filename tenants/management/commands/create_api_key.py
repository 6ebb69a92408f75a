from django.core.management.base import BaseCommand, CommandError

from tenants.models import Tenant
from tenants.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key for a tenant and print it alone on the last line."

    def add_arguments(self, parser):
        parser.add_argument("tenant_id")
        parser.add_argument("--name", default="")

    def handle(self, *args, tenant_id: str, name: str, **options):
        tenant = Tenant.objects.filter(id=tenant_id).first()
        if tenant is None:
            raise CommandError(f"No tenant {tenant_id!r}.")
        key, secret = api_key_create(tenant=tenant, name=name)
        self.stdout.write(f"API key {key.prefix} for {tenant.id} (shown once):")
        self.stdout.write(secret)
