import os

from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Django's ASGI handler serves both the DRF views and the async streaming views; it must be
# created before anything imports models.
django_application = get_asgi_application()

from django.conf import settings  # noqa: E402

from conversations.maintenance import MaintainedApplication  # noqa: E402 - needs the app registry
from core.asgi import SharedSyncThreads, gc_prepare_for_serving  # noqa: E402
from core.daphne import install as daphne_install  # noqa: E402

application = MaintainedApplication(
    SharedSyncThreads(ProtocolTypeRouter({"http": django_application}), size=settings.REQUEST_SYNC_THREADS)
)

# Under daphne, keep request bodies on disk until Django reads them (see core/daphne.py).
daphne_install()

# Modules the engines, their tools and the Redis stream log import on first use.
gc_prepare_for_serving(
    "agents.engines.builtin",
    "agents.engines.openai",
    "dataframes.builtin",
    "dataframes.tools",
    "files.builtin",
    "files.tools",
    "redis.asyncio",
)
