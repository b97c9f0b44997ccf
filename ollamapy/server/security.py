"""Who may call the API: three ASGI guards that answer before any route runs.

    HostGuard     DNS rebinding (CVE-2024-28224): bound to a loopback address, a request
                  whose `Host` is not a local name or address is refused (Ollama's
                  allowedHostsMiddleware, ../shared/reference/ollama-api.md §7.2).
    OriginGuard   CORS, and a browser's cross-origin requests: an `Origin` outside the
                  allowed list is refused whatever the method, so a foreign page's blind
                  `text/plain` POST (no preflight) never reaches /api/pull or /api/delete.
                  Allowed origins get `Access-Control-Allow-Origin` and their preflight a 204.
                  Starlette's CORSMiddleware would run such a request and only leave the
                  header out (../shared/reference/hardening.md §1.2), hence our own.
    ApiKeyGuard   With OLLAMAPY_API_KEY set, `Authorization: Bearer <key>` (or the
                  anthropic SDK's `x-api-key: <key>`) on every route but the `GET /`
                  health check (Ollama has no authentication).

They run in that order, outermost first, and decide from the scope and headers alone: a
refused request is never routed and its body is never read. Refusals are JSON errors, in
Anthropic's shape on /v1/messages, OpenAI's elsewhere under /v1.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ollamapy.server.anthropic import anthropic_error
from ollamapy.server.openai import openai_error
from ollamapy.server.streaming import error_response

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Ollama's built-in origins (envconfig.AllowedOrigins); OLLAMA_ORIGINS entries come first
BUILTIN_ORIGINS = (
    *(f"{scheme}://{host}{port}" for host in ("localhost", "127.0.0.1", "0.0.0.0")
      for scheme, port in (("http", ""), ("https", ""), ("http", ":*"), ("https", ":*"))),
    "app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*",
)
# what a browser may send cross-origin (Ollama's corsConfig.AllowHeaders, for the OpenAI
# SDKs' x-stainless-* headers in particular)
ALLOWED_HEADERS = (
    "Authorization", "Content-Type", "User-Agent", "Accept", "X-Requested-With", "OpenAI-Beta",
    *(f"x-stainless-{name}" for name in (
        "arch", "async", "custom-poll-interval", "helper-method", "lang", "os",
        "package-version", "poll-helper", "retry-count", "runtime", "runtime-version",
        "timeout")),
    # beyond Ollama's list: what the anthropic SDKs send to /v1/messages
    "x-api-key", "anthropic-version", "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
)
ALLOWED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
PREFLIGHT_MAX_AGE_S = 12 * 3600  # gin-contrib/cors's default
# Go's netip IsPrivate: RFC 1918 and unique-local IPv6 only (Python's is_private is wider)
_PRIVATE = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal")


def reject(scope: Scope, status: int, message: str,
           headers: Mapping[str, str] | None = None) -> Response:
    """An error answered by a guard, in the shape the route's clients parse."""
    if scope.get("path", "") == "/v1/messages":
        return anthropic_error(status, message, headers)
    if scope.get("path", "").startswith("/v1/"):
        code = "invalid_api_key" if status == 401 else None
        return openai_error(status, message, headers, code=code)
    return error_response(status, message, headers)


# -- Host -----------------------------------------------------------------------------------


def _ip(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1, as Go's netip unmaps it
    return ip


def host_name(header: str) -> str:
    """A Host header without its port or IPv6 brackets: `[::1]:11434` → `::1`."""
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    if header.count(":") == 1:
        return header.split(":")[0]
    return header  # a name, or a bare IPv6 literal


@functools.cache
def _machine() -> tuple[str, frozenset[IPAddress]]:
    """This machine's hostname and the addresses it resolves to (Ollama also allows the
    addresses of local interfaces; the hostname's are the ones the standard library sees)."""
    hostname = socket.gethostname().lower()
    try:
        infos = socket.getaddrinfo(hostname, None)
    except OSError:
        infos = []
    addresses = {ip for info in infos if (ip := _ip(str(info[4][0]).split("%")[0]))}
    return hostname, frozenset(addresses)


def host_allowed(header: str) -> bool:
    """Ollama's rule: empty, localhost, the machine's name, *.localhost / *.local /
    *.internal, or an address that is loopback, private, unspecified or the machine's own."""
    host = host_name(header).lower().removesuffix(".")  # "localhost." is localhost
    hostname, addresses = _machine()
    if host in ("", "localhost", hostname) or host.endswith(_LOCAL_SUFFIXES):
        return True
    ip = _ip(host)
    return ip is not None and (ip.is_loopback or ip.is_unspecified or ip in addresses
                               or any(ip in net for net in _PRIVATE))


def binds_loopback(host: str) -> bool:
    """Whether listening on `host` (OLLAMA_HOST's host part) is listening on loopback only:
    "" and 0.0.0.0 are every interface; a name counts as the address it resolves to."""
    ip = _ip(host)
    if ip is None and host:
        try:
            ip = _ip(socket.gethostbyname(host))  # what uvicorn's bind resolves it to
        except OSError:
            return True  # it cannot be bound anyway; keep the guard
    return ip is not None and ip.is_loopback


class HostGuard:
    """403 for a request whose Host is not local, when the server listens on loopback.

    Only requests that came over a socket are checked: uvicorn puts the socket's IP address
    in scope["server"], while in-process transports (Starlette's TestClient) put a name
    there, "testserver", that no browser can reach."""

    def __init__(self, app: ASGIApp, *, loopback: bool) -> None:
        self.app, self.loopback = app, loopback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.loopback and _over_a_socket(scope):
            host = Headers(scope=scope).get("host", "")
            if not host_allowed(host):
                await reject(scope, 403, "host not allowed")(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _over_a_socket(scope: Scope) -> bool:
    server = scope.get("server")
    return server is None or _ip(str(server[0]).split("%")[0]) is not None


# -- Origin ---------------------------------------------------------------------------------


class Origins:
    """Allowed origins: exact (`http://localhost`) or with `*` wildcards (`http://localhost:*`,
    `chrome-extension://*`); a lone `*` allows every origin. Compared case-insensitively."""

    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = [p.strip().lower() for p in patterns if p.strip()]
        self.allow_all = "*" in patterns
        # a wildcard stands for one origin's characters, never a path
        self._regex = re.compile("|".join(
            "[^/]*".join(re.escape(part) for part in p.split("*")) for p in patterns
            if p != "*") or "(?!)")

    def allows(self, origin: str) -> bool:
        return self.allow_all or self._regex.fullmatch(origin.lower()) is not None


class OriginGuard:
    """CORS for allowed origins; 403 before routing for any other `Origin`.

    Unlike gin-contrib/cors, an origin equal to the request's own host is not let through
    for that alone: ollamapy serves no pages, so such a request can only come from a page
    on a re-bound name (on a server bound to every interface, where HostGuard is off)."""

    def __init__(self, app: ASGIApp, *, origins: Origins) -> None:
        self.app, self.origins = app, origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = Headers(scope=scope).get("origin") if scope["type"] == "http" else None
        if origin is None:  # not a browser's cross-origin request: the CLI, the SDKs
            await self.app(scope, receive, send)
            return
        if not self.origins.allows(origin):
            await reject(scope, 403, "origin not allowed")(scope, receive, send)
            return
        allow = {"Access-Control-Allow-Origin": "*" if self.origins.allow_all else origin}
        if not self.origins.allow_all:
            allow["Vary"] = "Origin"
        if scope["method"] == "OPTIONS":  # the preflight: answered here, never routed
            await Response(status_code=204, headers={
                **allow, "Access-Control-Allow-Methods": ",".join(ALLOWED_METHODS),
                "Access-Control-Allow-Headers": ",".join(ALLOWED_HEADERS),
                "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S)})(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() not in (b"access-control-allow-origin", b"vary")]
                headers += [(k.lower().encode(), v.encode()) for k, v in allow.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cors)


# -- API key --------------------------------------------------------------------------------


class ApiKeyGuard:
    """401 unless `Authorization: Bearer <key>` or `x-api-key: <key>`; `GET /` (the health
    check) stays open.
    The token is compared in constant time, as bytes (a header may hold any latin-1)."""

    def __init__(self, app: ASGIApp, *, key: str) -> None:
        self.app, self.key = app, key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or not self.key
                or (scope["path"] == "/" and scope["method"] in ("GET", "HEAD"))):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        scheme, _, token = headers.get("authorization", "").partition(" ")
        # the anthropic SDK sends its key as x-api-key
        given = (token if scheme.lower() == "bearer" else headers.get("x-api-key", "")
                 ).strip().encode("latin-1")
        if not given or not hmac.compare_digest(given, self.key):
            response = reject(scope, 401, "unauthorized: a valid API key is required "
                              "(Authorization: Bearer <OLLAMAPY_API_KEY>)",
                              {"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
