import os
import sys

from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Django's ASGI handler serves both the DRF views and the async streaming views; it must be
# created before anything imports models.
django_application = get_asgi_application()

from django.conf import settings  # noqa: E402

from conversations.maintenance import MaintainedApplication  # noqa: E402 - needs the app registry
from core.asgi import SharedSyncThreads  # noqa: E402

application = MaintainedApplication(
    SharedSyncThreads(ProtocolTypeRouter({"http": django_application}), size=settings.REQUEST_SYNC_THREADS)
)

# Under daphne, Twisted parses every multipart POST body with the email package before the request
# reaches Django: the whole upload in memory, about 13 times over (a 200 MiB upload took 2.6 GiB).
# Daphne never reads what that parse produces, and Twisted has a per-request switch for it that daphne
# does not expose: pin it off. daphne.http_protocol is loaded only when daphne serves this module.
_daphne_http = sys.modules.get("daphne.http_protocol")
if _daphne_http is not None:
    _daphne_http.WebRequest._parsePOSTFormSubmission = property(lambda request: False, lambda *_: None)
