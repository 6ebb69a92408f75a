"""Tenants' HTTP tools: the model's call, checked against the tool's JSON Schema, POSTed to the tool's URL
and signed as Standard Webhooks signs (https://www.standardwebhooks.com: `webhook-id`, `webhook-timestamp`,
`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">` under the tool's `whsec_` secret).

The URL is the tenant's: the request goes out as agents/outbound.py allows (its checked address only, HTTPS
outside TOOL_ALLOWED_NETWORKS, no redirects), and the answer is read up to the tool's max_response_bytes
within its timeout. Whatever fails, the model gets an error result it can read, and the reply goes on.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx2
import jsonschema

from agents.models import HttpTool
from agents.outbound import Refused, pinned_client, pinned_transport
from agents.tools import Tool, ToolContext, ToolResult
from core.crypto import secret_decrypt
from core.signing import signed_headers


def _not_json(constant: str):
    raise ValueError(f"{constant} is not JSON (and PostgreSQL stores no such number)")


async def http_tool_call(tool: HttpTool, arguments: dict) -> ToolResult:
    """One call of the tool (see the module's docstring)."""
    errors = sorted(jsonschema.Draft202012Validator(tool.parameters).iter_errors(arguments), key=str)
    if errors:
        where = "/".join(str(part) for part in errors[0].absolute_path) or "(the arguments)"
        return ToolResult(f"Invalid arguments for {tool.name}: {where}: {errors[0].message}", status="error")
    try:
        async with asyncio.timeout(tool.timeout_seconds):  # (the name's lookup included)
            return await _post(tool, arguments)
    except Refused as exc:
        return ToolResult(str(exc), status="error")
    except (httpx2.TimeoutException, TimeoutError):
        return ToolResult(f"The tool {tool.name} did not answer within {tool.timeout_seconds:g} s.", status="error")
    except httpx2.HTTPError as exc:
        return ToolResult(f"The tool {tool.name} could not be reached ({type(exc).__name__}).", status="error")


async def _post(tool: HttpTool, arguments: dict) -> ToolResult:
    what = f"The tool {tool.name}"
    transport = await pinned_transport(tool.url, max_response_bytes=tool.max_response_bytes, what=what)
    body = json.dumps(arguments, ensure_ascii=False, separators=(",", ":")).encode()
    headers = dict(secret_decrypt(tool.headers_encrypted)) if tool.headers_encrypted else {}
    headers.update({"Content-Type": "application/json", "User-Agent": "Parley-Tools/1"})
    headers.update(
        signed_headers(secret_decrypt(tool.signing_secret_encrypted), message_id=f"msg_{uuid.uuid4().hex}", body=body)
    )
    async with pinned_client(transport, timeout=tool.timeout_seconds, headers=headers) as client:
        answer = await client.post(tool.url, content=body)
    text = answer.text
    if not answer.is_success:
        return ToolResult(f"{what} answered {answer.status_code}: {text[:500]}", status="error")
    if answer.headers.get("Content-Type", "").split(";")[0].strip() == "application/json":
        try:
            value = json.loads(text, parse_constant=_not_json)
        except ValueError:
            return ToolResult(f"{what} answered JSON that does not parse.", status="error")
        return ToolResult(json.dumps(value, ensure_ascii=False), content=value, content_type="json")
    return ToolResult(text)


def http_tools_for(tenant_id: str, names: list[str]) -> list[Tool]:
    """The tenant's HTTP tools among `names`, as tools an engine calls (a query: in a worker thread)."""
    tools = HttpTool.objects.filter(tenant_id=tenant_id, name__in=names)
    return [_as_tool(tool) for tool in tools]


def _as_tool(tool: HttpTool) -> Tool:
    async def run(context: ToolContext, arguments: dict) -> ToolResult:
        return await http_tool_call(tool, arguments)

    return Tool(name=tool.name, description=tool.description, parameters=tool.parameters, run=run)
