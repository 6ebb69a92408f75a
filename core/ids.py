"""Public identifiers: a short type prefix and a ULID, e.g. `conv_01jd3x...` (opaque and time-sortable)."""

from functools import partial

from django.db import models
from ulid import ULID


def new_id(prefix: str) -> str:
    return f"{prefix}_{str(ULID()).lower()}"


class PublicIdField(models.CharField):
    """A primary key filled with `new_id(prefix)`; integers are never exposed by the API."""

    def __init__(self, prefix: str | None = None, **kwargs):
        self.prefix = prefix
        kwargs.setdefault("max_length", 40)
        kwargs.setdefault("primary_key", True)
        kwargs.setdefault("editable", False)
        if prefix is not None:
            kwargs.setdefault("default", partial(new_id, prefix))
        super().__init__(**kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs["prefix"] = self.prefix
        kwargs.pop("default", None)
        for key, value in (("max_length", 40), ("primary_key", True), ("editable", False)):
            if kwargs.get(key) == value:
                kwargs.pop(key)
        return name, path, args, kwargs
