from django.core.management.base import BaseCommand, CommandError

from core.errors import NotFound
from tenants.services import api_key_revoke


class Command(BaseCommand):
    help = "Revoke the API key with this prefix (the 8 characters after 'prl_')."

    def add_arguments(self, parser):
        parser.add_argument("prefix")

    def handle(self, *args, prefix: str, **options):
        try:
            key = api_key_revoke(prefix=prefix)
        except NotFound as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"Revoked {key.prefix} of tenant {key.tenant_id}.")
