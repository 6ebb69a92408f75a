from django.apps import AppConfig
from django.db.models.signals import post_migrate

from core.tenancy import row_security_install, scoping_install


class CoreConfig(AppConfig):
    name = "core"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        scoping_install()
        # Sent for this app once every app's migrations have run: the policies cover every table there is.
        post_migrate.connect(row_security_install, sender=self, dispatch_uid="core.tenancy.row_security")
