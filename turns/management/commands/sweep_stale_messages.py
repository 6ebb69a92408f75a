from django.core.management.base import BaseCommand

from core.idempotency import idempotency_purge_expired
from turns.services import message_sweep_stale


class Command(BaseCommand):
    help = (
        "Mark replies left in progress by a stopped server as failed (keeping their partial content), "
        "and purge expired idempotency keys. Run at start-up and periodically (e.g. every minute from cron)."
    )

    def handle(self, *args, **options):
        swept = message_sweep_stale()
        purged = idempotency_purge_expired()
        self.stdout.write(f"Marked {swept} stale message(s) failed; purged {purged} expired idempotency key(s).")
