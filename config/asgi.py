import os

from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Django's ASGI handler serves both the DRF views and the async streaming views; it must be
# created before anything imports models.
django_application = get_asgi_application()

from django.conf import settings  # noqa: E402

from core.asgi import SharedSyncThreads, gc_prepare_for_serving  # noqa: E402
from turns.maintenance import MaintainedApplication  # noqa: E402 - needs the app registry

application = MaintainedApplication(
    SharedSyncThreads(ProtocolTypeRouter({"http": django_application}), size=settings.REQUEST_SYNC_THREADS)
)

# Modules the engines, their tools and the Redis stream log import on first use.
gc_prepare_for_serving("redis.asyncio")
