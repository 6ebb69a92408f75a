from agents.models import MCP_SEPARATOR, Agent, HttpTool, McpServer
from core.errors import NotFound
from tenants.models import Tenant


def agent_list(*, tenant: Tenant):
    return Agent.objects.for_tenant(tenant)


def agent_get(*, tenant: Tenant, agent_id: str) -> Agent:
    agent = Agent.objects.for_tenant(tenant).filter(id=agent_id).first()
    if agent is None:
        raise NotFound("Agent not found.")
    return agent


def http_tool_list(*, tenant: Tenant):
    return HttpTool.objects.for_tenant(tenant)


def http_tool_get(*, tenant: Tenant, tool_id: str) -> HttpTool:
    tool = HttpTool.objects.for_tenant(tenant).filter(id=tool_id).first()
    if tool is None:
        raise NotFound("Tool not found.")
    return tool


def tenant_tool_names(*, tenant: Tenant, names: list[str]) -> set[str]:
    """Those of `names` that are the tenant's: an HTTP tool's name, an MCP server's (all its tools), or an MCP
    server's followed by `__` and a tool's (whether the server lists it is known only when it is asked)."""
    own = set(HttpTool.objects.for_tenant(tenant).filter(name__in=names).values_list("name", flat=True))
    parts = {name: name.partition(MCP_SEPARATOR) for name in names if name not in own}
    servers = {server for server, separator, tool in parts.values() if not separator or tool}  # not `crm__`
    servers &= set(McpServer.objects.for_tenant(tenant).filter(name__in=servers).values_list("name", flat=True))
    return own | {
        name for name, (server, separator, tool) in parts.items() if server in servers and (tool or not separator)
    }


def mcp_server_list(*, tenant: Tenant):
    return McpServer.objects.for_tenant(tenant)


def mcp_server_get(*, tenant: Tenant, server_id: str) -> McpServer:
    server = McpServer.objects.for_tenant(tenant).filter(id=server_id).first()
    if server is None:
        raise NotFound("MCP server not found.")
    return server
