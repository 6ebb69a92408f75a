"""Serializer plumbing shared by the apps."""

from __future__ import annotations

import copy

from rest_framework import serializers


class FieldsOnceMixin:
    """For output serializers whose fields depend on nothing but their class: build them once per class.

    DRF builds a serializer's fields again for every instance, and a ModelSerializer introspects its model
    each time: 0.45 ms for a message here, nine times the cost of representing one, paid by every response
    (encode/django-rest-framework#7093). With this mixin the first instance keeps the unbound fields it
    built as the class's prototype, and each instance binds shallow copies of them. Nested serializers and
    fields holding a child field (ListField, DictField, many related fields) are deep-copied, as DRF copies
    declared fields: the child is bound to its parent, and a nested serializer keeps fields of its own.
    Not for a serializer whose get_fields() depends on its instance (context, data, instance).
    """

    def get_fields(self) -> dict[str, serializers.Field]:
        cls = type(self)
        prototype = cls.__dict__.get("_fields_prototype")  # a subclass builds its own
        if prototype is None:
            prototype = super().get_fields()
            cls._fields_prototype = prototype  # two threads building it at once keep either: both are right
        return {
            name: copy.deepcopy(field) if _has_children(field) else copy.copy(field)
            for name, field in prototype.items()
        }


def _has_children(field: serializers.Field) -> bool:
    return isinstance(field, serializers.BaseSerializer) or hasattr(field, "child") or hasattr(field, "child_relation")
