from django.core.management.base import BaseCommand

from core.idempotency import idempotency_purge_expired
from turns.services import message_sweep_stale


class Command(BaseCommand):
    help = (
        "Mark replies left in progress by stopped servers as failed (keeping the text they streamed), and "
        "purge expired idempotency keys. Running servers do both by themselves, and continue such replies "
        "instead where the agent allows (on_crash): use this only where no server will run again."
    )

    def handle(self, *args, **options):
        swept, _ = message_sweep_stale(fail=True)
        purged = idempotency_purge_expired()
        self.stdout.write(f"Marked {swept} stale message(s) failed; purged {purged} expired idempotency key(s).")
