import os

from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Django's ASGI handler serves both the DRF views and the async streaming views; it must be
# created before anything imports models.
django_application = get_asgi_application()

application = ProtocolTypeRouter({"http": django_application})
