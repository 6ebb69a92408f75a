import os

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Django's ASGI handler serves both the DRF views and the async streaming views; it must be
# created before anything imports models.
django_application = get_asgi_application()

from django.conf import settings  # noqa: E402

from core.asgi import (  # noqa: E402
    BrowserOriginValidator,
    SessionsOfBrowsers,
    SharedSyncThreads,
    gc_prepare_for_serving,
)
from turns.maintenance import MaintainedApplication  # noqa: E402 - needs the app registry
from turns.routing import websocket_urlpatterns  # noqa: E402

protocols = ProtocolTypeRouter(
    {
        "http": django_application,
        # The session (scope["user"]) is the admin playground's way in; API clients use keys or tickets.
        "websocket": BrowserOriginValidator(
            SessionsOfBrowsers(URLRouter(websocket_urlpatterns)), settings.WS_ALLOWED_ORIGINS
        ),
    }
)
application = MaintainedApplication(SharedSyncThreads(protocols, size=settings.REQUEST_SYNC_THREADS))

# Modules the engines, their tools and the Redis stream log import on first use.
gc_prepare_for_serving("redis.asyncio")
