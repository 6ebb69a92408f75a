"""Requests to the tenants' URLs (their HTTP tools and MCP servers), which must not become a way into the
operator's network (server-side request forgery).

A URL's host is resolved once; every address it has must be public, or within TOOL_ALLOWED_NETWORKS, and
the connection goes to that checked address (TLS still checks the host's certificate, by SNI), so a name
that resolves elsewhere a moment later changes nothing. Plain HTTP is allowed only within the allowed
networks. No proxy from the environment; no request to another host than the URL's; redirects are not
followed by the clients made here; an answer longer than its cap ends the request (`Refused`).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator

import httpx2
from django.conf import settings


class Refused(Exception):
    """The request is not made (or its answer not read further); the message says why (the model reads it)."""


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


async def _resolved(host: str, port: int, what: str) -> str:
    """The address to connect to: the host's first, once every address it has is allowed."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise Refused(f"{what}'s host {host!r} does not resolve.") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for address in addresses:
        if not address_allowed(address)[0]:
            # (Which address is not said: the tenant must not learn the operator's internal names this way.)
            raise Refused(
                f"{what}'s host {host!r} resolves to a private or reserved address; the operator allows none "
                "but TOOL_ALLOWED_NETWORKS."
            )
    return addresses[0]


async def pinned_transport(url: str, *, max_response_bytes: int, what: str) -> PinnedTransport:
    """A transport for requests to `url`'s origin only, connected to its checked address (Refused if none)."""
    target = httpx2.URL(url)
    host = target.raw_host.decode("ascii")  # (as sent: IDNA-encoded, an IPv6 literal without brackets)
    address = await _resolved(host, target.port or (443 if target.scheme == "https" else 80), what)
    if target.scheme == "http" and not address_allowed(address)[1]:
        raise Refused(f"{what} must use HTTPS (plain HTTP only within TOOL_ALLOWED_NETWORKS).")
    return PinnedTransport(host=host, address=address, max_response_bytes=max_response_bytes, what=what)


def pinned_client(transport: PinnedTransport, *, timeout: float, headers: dict[str, str]) -> httpx2.AsyncClient:
    """A client for the transport's origin: no proxy from the environment, no redirects."""
    return httpx2.AsyncClient(
        transport=transport, trust_env=False, follow_redirects=False, timeout=timeout, headers=headers
    )


class PinnedTransport(httpx2.AsyncBaseTransport):
    """httpx's transport, with each request sent to the checked address of its host, asked for its answer
    uncompressed (the cap counts the bytes read, and a compressed answer could be any size), and answered
    with a redirect refused and an answer over the cap cut short (`Refused`)."""

    def __init__(self, *, host: str, address: str, max_response_bytes: int, what: str) -> None:
        self.host, self.address, self.max_response_bytes, self.what = host, address, max_response_bytes, what
        self._transport = httpx2.AsyncHTTPTransport(verify=_tls(settings.TOOL_CA_BUNDLE), trust_env=False, retries=0)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.raw_host.decode("ascii").lower() != self.host.lower():
            raise Refused(f"{self.what} may be reached only at {self.host}, not {request.url.host}.")
        extensions = {**request.extensions, "sni_hostname": self.host} if request.url.scheme == "https" else {}
        # A request of its own for the address: the client's keeps its URL (redirects, the answer's request),
        # and the Host header keeps the name (set from the URL when the request was made).
        headers = httpx2.Headers(request.headers)
        headers["Accept-Encoding"] = "identity"
        pinned = httpx2.Request(
            request.method,
            request.url.copy_with(host=self.address),
            headers=headers,
            stream=request.stream,
            extensions=request.extensions | extensions,
        )
        response = await self._transport.handle_async_request(pinned)
        length = response.headers.get("Content-Length", "")
        refusal = None
        if 300 <= response.status_code < 400:
            refusal = Refused(f"{self.what} answered a redirect ({response.status_code}); redirects are not followed.")
        elif response.headers.get("Content-Encoding", "identity").lower() != "identity":
            refusal = Refused(f"{self.what} answered compressed content, which was not asked for.")
        elif length.isdigit() and int(length) > self.max_response_bytes:
            refusal = self._too_long()
        if refusal is not None:
            await response.aclose()
            raise refusal
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_Capped(response.stream, self.max_response_bytes, self._too_long),
            extensions=response.extensions,
        )

    def _too_long(self) -> Refused:
        return Refused(f"{self.what} answered more than {self.max_response_bytes:,} bytes.")

    async def aclose(self) -> None:
        await self._transport.aclose()


class _Capped(httpx2.AsyncByteStream):
    def __init__(self, stream, limit: int, too_long) -> None:
        self._stream, self._limit, self._too_long = stream, limit, too_long

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        async for chunk in self._stream:
            received += len(chunk)
            if received > self._limit:
                raise self._too_long()
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


@functools.cache
def _tls(ca_bundle: str) -> ssl.SSLContext:
    """Certificates checked against the authorities httpx trusts by default, and the operator's own
    (TOOL_CA_BUNDLE: for servers within TOOL_ALLOWED_NETWORKS that a private authority certifies)."""
    context = httpx2.create_ssl_context(trust_env=False)
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context
