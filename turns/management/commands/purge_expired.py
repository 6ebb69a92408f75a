from django.core.management.base import BaseCommand

from turns.services import conversations_purge_expired


class Command(BaseCommand):
    help = (
        "Delete the conversations idle longer than their agent's or tenant's retention_days, with their files, "
        "data frames and stored bytes, in short batches. Running servers do it by themselves every "
        "RETENTION_PURGE_SECONDS; this does all of it at once (from cron, say, where no server runs)."
    )

    def handle(self, *args, **options):
        deleted = conversations_purge_expired()
        self.stdout.write(f"Deleted {deleted} expired conversation(s).")
