import sys

from django.apps import AppConfig


class FilesConfig(AppConfig):
    name = "files"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Under daphne, Twisted parses every multipart POST body with the email package before the request
        # reaches Django: the whole upload in memory, about 13 times over (a 200 MiB upload took 2.6 GiB).
        # Daphne never reads what that parse produces, and Twisted has a per-request switch for it, which
        # daphne does not expose: pin it off. The module is only loaded in a daphne server process, and it
        # is imported there before the application.
        http_protocol = sys.modules.get("daphne.http_protocol")
        if http_protocol is not None:
            http_protocol.WebRequest._parsePOSTFormSubmission = property(lambda request: False, lambda *_: None)
