from django.apps import AppConfig


class DataframesConfig(AppConfig):
    name = "dataframes"
    default_auto_field = "django.db.models.BigAutoField"
