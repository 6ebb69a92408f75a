from django.apps import AppConfig


class TurnsConfig(AppConfig):
    name = "turns"

    def ready(self) -> None:
        from turns.wiring import wire  # the apps' modules may import models only once the registry is ready

        wire()
