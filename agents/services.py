from typing import Any

from django.db import IntegrityError, transaction

from agents.http_tools import signing_secret_new
from agents.models import Agent, HttpTool
from core.crypto import secret_encrypt
from core.errors import Invalid
from tenants.models import Tenant

EDITABLE_FIELDS = ("name", "description", "system_prompt", "engine", "model", "options")


def agent_create(*, tenant: Tenant, data: dict[str, Any]) -> Agent:
    return Agent.objects.create(tenant=tenant, **{k: v for k, v in data.items() if k in EDITABLE_FIELDS})


def agent_update(*, agent: Agent, data: dict[str, Any]) -> Agent:
    changed = [field for field in EDITABLE_FIELDS if field in data]
    for field in changed:
        setattr(agent, field, data[field])
    agent.save(update_fields=[*changed, "updated_at"])
    return agent


TOOL_FIELDS = ("name", "description", "parameters", "url", "timeout_seconds", "max_response_bytes")


def http_tool_create(*, tenant: Tenant, data: dict[str, Any]) -> tuple[HttpTool, str]:
    """A new HTTP tool and its signing secret (shown once: only its encryption is stored)."""
    secret = signing_secret_new()
    tool = HttpTool(tenant=tenant, parameters={"type": "object"}, signing_secret_encrypted=secret_encrypt(secret))
    return _http_tool_save(tool, data, create=True), secret


def http_tool_update(*, tool: HttpTool, data: dict[str, Any]) -> HttpTool:
    return _http_tool_save(tool, data, create=False)


def _http_tool_save(tool: HttpTool, data: dict[str, Any], *, create: bool) -> HttpTool:
    for field in TOOL_FIELDS:
        if field in data:
            setattr(tool, field, data[field])
    if "headers" in data:  # replaced whole; the values are kept encrypted, the names shown
        tool.header_names = sorted(data["headers"])
        tool.headers_encrypted = secret_encrypt(data["headers"]) if data["headers"] else ""
    try:
        with transaction.atomic():
            tool.save(force_insert=create)
    except IntegrityError:
        raise Invalid("name: another tool of this tenant has this name.", details={"name": tool.name}) from None
    return tool


def http_tool_delete(*, tool: HttpTool) -> None:
    tool.delete()
