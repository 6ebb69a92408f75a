from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest
from django.middleware.csrf import get_token
from django.template.response import TemplateResponse
from django.urls import path

from agents.models import Agent, HttpTool, McpServer
from core.admin import ReadOnlyMixin
from tenants.authentication import may_use_playground


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "tenant", "engine", "model", "created_at"]
    list_filter = ["engine", "tenant"]
    search_fields = ["id", "name", "tenant__id"]
    readonly_fields = ["id", "created_at", "updated_at"]
    change_form_template = "admin/agents/agent/change_form.html"

    def get_urls(self):
        playground = self.admin_site.admin_view(self.playground_view)
        return [path("<path:object_id>/playground/", playground, name="agents_agent_playground"), *super().get_urls()]

    def render_change_form(self, request: HttpRequest, context: dict, *args, **kwargs):
        context["may_use_playground"] = may_use_playground(request.user)
        return super().render_change_form(request, context, *args, **kwargs)

    def playground_view(self, request: HttpRequest, object_id: str) -> TemplateResponse:
        """A chat with the agent for staff allowed the playground: the page talks to the tenant's API as
        its clients do, over the WebSocket and REST, with the staff user's session and CSRF token
        (tenants.authentication.StaffSessionAuthentication); its script is agents/static/agents/playground.js."""
        agent = self.get_object(request, unquote(object_id))
        if agent is None:
            raise Http404("No such agent.")
        if not (may_use_playground(request.user) and self.has_view_permission(request, agent)):
            raise PermissionDenied
        api = f"/tenants/{agent.tenant_id}/api/v2"
        context = {
            **self.admin_site.each_context(request),
            "title": f"Playground: {agent.name or agent.id}",
            "subtitle": None,
            "opts": self.opts,
            "agent": agent,
            "playground": {
                "tenant_id": agent.tenant_id,
                "agent_id": agent.id,
                "api": api,  # REST
                "socket": f"{api}/ws",  # WebSocket, same origin
                "csrf_token": get_token(request),  # (also sets the CSRF cookie the token is checked against)
            },
        }
        return TemplateResponse(request, "admin/agents/agent/playground.html", context)


class _TenantsRemoteAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """A tenant's HTTP tool or MCP server: the API defines them (it encrypts their secrets); the operator
    sees where they point and may delete them. Header values and secrets are never shown."""

    list_filter = ["tenant"]
    search_fields = ["id", "name", "url", "tenant__id"]
    exclude = ["headers_encrypted", "signing_secret_encrypted"]


@admin.register(HttpTool)
class HttpToolAdmin(_TenantsRemoteAdmin):
    list_display = ["id", "name", "tenant", "url", "created_at"]


@admin.register(McpServer)
class McpServerAdmin(_TenantsRemoteAdmin):
    list_display = ["id", "name", "tenant", "url", "created_at"]
