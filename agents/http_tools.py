"""Tenants' HTTP tools: the model's call, checked against the tool's JSON Schema, POSTed to the tool's URL
and signed as Standard Webhooks signs (https://www.standardwebhooks.com: `webhook-id`, `webhook-timestamp`,
`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">` under the tool's `whsec_` secret).

The URL is the tenant's, so the request must not become a way into the operator's network (server-side
request forgery): the host is resolved once, every address it has must be public, or in
TOOL_ALLOWED_NETWORKS, and the connection goes to that address (TLS still checks the host's certificate);
plain HTTP only to the allowed networks; redirects are not followed; no proxy from the environment. The
answer is read up to the tool's max_response_bytes within its timeout. Whatever fails, the model gets an
error result it can read, and the reply goes on.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import time
import uuid
from urllib.parse import urlsplit

import httpx2
import jsonschema
from django.conf import settings

from agents.models import HttpTool
from agents.tools import Tool, ToolContext, ToolResult
from core.crypto import secret_decrypt

SECRET_PREFIX = "whsec_"


def _not_json(constant: str):
    raise ValueError(f"{constant} is not JSON (and PostgreSQL stores no such number)")


def signing_secret_new() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def signature(secret: str, *, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value of a body (Standard Webhooks, v1)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(network, strict=False) for network in settings.TOOL_ALLOWED_NETWORKS]


# IPv6 ranges that carry an IPv4 address a gateway may forward to (NAT64) or that are deprecated: never "public".
_TRANSLATED = [ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96", "::ffff:0:0:0/96")]


def address_allowed(address: str) -> tuple[bool, bool]:
    """(may connect, is one of the operator's allowed networks) for a resolved address. An IPv6 address that
    embeds an IPv4 one (mapped, 6to4, Teredo) is judged by that one too."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if any(ip in network for network in allowed_networks()):
        return True, True
    public = ip.is_global and not ip.is_multicast
    if ip.version == 6:
        embedded = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
        if ip.ipv4_mapped is not None:
            return address_allowed(str(ip.ipv4_mapped))
        public = public and not any(ip in network for network in _TRANSLATED)
        public = public and all(v4.is_global for v4 in embedded if v4 is not None)
    return public, False


class Refused(Exception):
    """The call is not made; the message says why (the model reads it)."""


async def _resolved(host: str, port: int) -> str:
    """The address to connect to: the host's first, once every address it has is allowed."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise Refused(f"The tool's host {host!r} does not resolve.") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for address in addresses:
        if not address_allowed(address)[0]:
            raise Refused(
                f"The tool's host {host!r} resolves to a private or reserved address ({address}); the operator "
                "allows none but TOOL_ALLOWED_NETWORKS."
            )
    return addresses[0]


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
    parts = urlsplit(tool.url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    address = await _resolved(host, port)
    if parts.scheme == "http" and not address_allowed(address)[1]:
        raise Refused(f"The tool {tool.name} must use HTTPS (plain HTTP only within TOOL_ALLOWED_NETWORKS).")
    body = json.dumps(arguments, ensure_ascii=False, separators=(",", ":")).encode()
    message_id, timestamp = f"msg_{uuid.uuid4().hex}", int(time.time())
    headers = dict(secret_decrypt(tool.headers_encrypted)) if tool.headers_encrypted else {}
    headers.update({
        "Host": parts.netloc.rpartition("@")[2].encode("idna").decode("ascii"),
        "Content-Type": "application/json",
        "User-Agent": "Parley-Tools/1",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(
            secret_decrypt(tool.signing_secret_encrypted), message_id=message_id, timestamp=timestamp, body=body
        ),
    })  # fmt: skip
    literal = f"[{address}]" if ":" in address else address
    target = f"{parts.scheme}://{literal}:{port}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    async with httpx2.AsyncClient(trust_env=False, follow_redirects=False, timeout=tool.timeout_seconds) as client:
        async with asyncio.timeout(tool.timeout_seconds):
            async with client.stream("POST", target, content=body, headers=headers, extensions=extensions) as answer:
                received = bytearray()
                async for chunk in answer.aiter_bytes():
                    received += chunk
                    if len(received) > tool.max_response_bytes:
                        raise Refused(f"The tool {tool.name} answered more than {tool.max_response_bytes:,} bytes.")
    text = received.decode("utf-8", errors="replace")
    if 300 <= answer.status_code < 400:
        raise Refused(f"The tool {tool.name} answered a redirect ({answer.status_code}); redirects are not followed.")
    if not answer.is_success:
        return ToolResult(f"The tool {tool.name} answered {answer.status_code}: {text[:500]}", status="error")
    if answer.headers.get("Content-Type", "").split(";")[0].strip() == "application/json":
        try:
            value = json.loads(text, parse_constant=_not_json)
        except ValueError:
            return ToolResult(f"The tool {tool.name} answered JSON that does not parse.", status="error")
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
