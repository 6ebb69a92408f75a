from typing import Any

from django.db import IntegrityError, transaction

from agents.models import MCP_SEPARATOR, Agent, HttpTool, McpServer
from core.crypto import secret_encrypt
from core.errors import Invalid
from core.signing import signing_secret_new
from tenants.models import Tenant

EDITABLE_FIELDS = ("name", "description", "system_prompt", "engine", "model", "options", "retention_days")


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
    _set_fields(tool, data, TOOL_FIELDS)
    server = tool.name.partition(MCP_SEPARATOR)[0]
    if McpServer.objects.filter(tenant_id=tool.tenant_id, name__in={tool.name, server}).exists():
        raise Invalid("name: an MCP server of this tenant has this name, or its tools do.", details={"name": tool.name})
    return _save_named(tool, create=create, what="tool")


def _set_fields(remote: HttpTool | McpServer, data: dict[str, Any], fields: tuple[str, ...]) -> None:
    for field in fields:
        if field in data:
            setattr(remote, field, data[field])
    if "headers" in data:  # replaced whole; the values are kept encrypted, the names shown
        remote.header_names = sorted(data["headers"])
        remote.headers_encrypted = secret_encrypt(data["headers"]) if data["headers"] else ""


def _save_named(remote, *, create: bool, what: str):
    try:
        with transaction.atomic():
            remote.save(force_insert=create)
    except IntegrityError:
        raise Invalid(f"name: another {what} of this tenant has this name.", details={"name": remote.name}) from None
    return remote


def http_tool_delete(*, tool: HttpTool) -> None:
    tool.delete()


MCP_SERVER_FIELDS = ("name", "url", "timeout_seconds", "max_response_bytes")


def mcp_server_create(*, tenant: Tenant, data: dict[str, Any]) -> McpServer:
    return _mcp_server_save(McpServer(tenant=tenant), data, create=True)


def mcp_server_update(*, server: McpServer, data: dict[str, Any]) -> McpServer:
    return _mcp_server_save(server, data, create=False)


def _mcp_server_save(server: McpServer, data: dict[str, Any], *, create: bool) -> McpServer:
    _set_fields(server, data, MCP_SERVER_FIELDS)
    tools = HttpTool.objects.filter(tenant_id=server.tenant_id)
    if tools.filter(name=server.name).exists() or tools.filter(name__startswith=server.name + MCP_SEPARATOR).exists():
        raise Invalid(
            "name: a tool of this tenant has this name, or one of its tools would.", details={"name": server.name}
        )
    return _save_named(server, create=create, what="MCP server")


def mcp_server_delete(*, server: McpServer) -> None:
    server.delete()
