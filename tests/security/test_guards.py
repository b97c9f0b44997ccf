"""The HTTP guards in-process (server/security.py, server/limits.py, the 503 header of
server/errors.py): which Host, Origin and API key get through, how large and how slow a body
may be, and what a malformed body is answered (../shared/reference/hardening.md §7 items 10,
11, 13, 14, 26). tests/e2e/test_security_live.py checks the same over a real socket.

Starlette's TestClient reaches HostGuard only with an IP address as its base URL (it puts the
URL's host in scope["server"]); the body tests that must count reads or stall call the ASGI
app directly, with a `receive` that records what the guard asked for."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.testclient import TestClient

from ollamapy.contract import ServerBusy
from ollamapy.scheduler import Scheduler
from ollamapy.server import security
from ollamapy.server.app import create_app
from ollamapy.server.errors import RETRY_AFTER_S, error_headers
from ollamapy.server.security import (
    ALLOWED_HEADERS,
    BUILTIN_ORIGINS,
    Origins,
    binds_loopback,
    host_allowed,
    host_name,
)
from ollamapy.settings import Settings
from ollamapy.store import Store, create_model
from tests.server.test_http_fake import FakeRunner
from tests.store.conftest import upload, write_gguf

KEY = "s3cret-Key_0123456789"
EVIL = "https://evil.example"
FRIEND = "http://localhost:3000"
LOCAL = "http://127.0.0.1:11434"  # a base URL that makes TestClient look like a socket
CAP = 1000  # OLLAMAPY_MAX_BODY_BYTES in the body tests


class BusyRunner(FakeRunner):
    """A runner whose queue is always full."""

    async def _events(self):
        raise ServerBusy()
        yield  # an async generator, like the real one


@dataclass
class Server:
    app: Starlette
    store: Store

    def client(self, base_url: str = LOCAL) -> TestClient:
        return TestClient(self.app, base_url=base_url)

    def names(self) -> list[str]:
        return sorted(m.name.display_shortest() for m in self.store.list_models())


@pytest.fixture()
def make_server(tmp_path: Path) -> Callable[..., Server]:
    """An app over a store holding one model, "fake", served by FakeRunner; keyword
    arguments are environment variables (OLLAMAPY_API_KEY=…)."""
    FakeRunner.mode, FakeRunner.instances = "ok", []
    gguf = write_gguf(tmp_path / "tiny.gguf")

    def make(runner: type[FakeRunner] = FakeRunner, **env: str) -> Server:
        settings = Settings.from_env({"OLLAMA_MODELS": str(tmp_path / "models"), **env})
        store = Store(settings.models)
        if not store.list_models():
            list(create_model(store, "fake", files={"tiny.gguf": upload(store, gguf)}))
        return Server(create_app(settings, Scheduler(settings, make_runner=runner)), store)

    return make


@pytest.fixture()
def body_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths whose handler read its request body (every JSON handler and the blob
    upload start by reading it): a spy on Starlette's Request."""
    reads: list[str] = []
    body, stream = Request.body, Request.stream

    async def spy_body(self: Request) -> bytes:
        reads.append(self.url.path)
        return await body(self)

    def spy_stream(self: Request):
        reads.append(self.url.path)
        return stream(self)

    monkeypatch.setattr(Request, "body", spy_body)
    monkeypatch.setattr(Request, "stream", spy_stream)
    return reads


def error_of(response) -> str:
    """The message of an error in either shape: Ollama's or OpenAI's."""
    error = response.json()["error"]
    return error["message"] if isinstance(error, dict) else error


# -- Host: DNS rebinding ----------------------------------------------------------------------


@pytest.mark.parametrize(("header", "name"), [
    ("localhost:11434", "localhost"), ("127.0.0.1", "127.0.0.1"), ("[::1]:11434", "::1"),
    ("[::1]", "::1"), ("::1", "::1"), ("example.com:80", "example.com"), ("", ""),
])
def test_host_name_strips_port_and_brackets(header: str, name: str) -> None:
    """host_name keeps the host part, IPv6 literals included."""
    assert host_name(header) == name


ALLOWED_HOSTS = [
    "", "localhost", "localhost:11434", "LOCALHOST:11434", "localhost.", "127.0.0.1",
    "127.0.0.1:11434", "127.1.2.3", "[::1]", "[::1]:11434", "::1", "[::ffff:127.0.0.1]:80",
    "foo.localhost", "foo.localhost:8080", "printer.local", "db.internal", "0.0.0.0",
    "10.1.2.3", "172.16.0.1", "192.168.1.10:11434", "[fd00::1]:11434",
]
REFUSED_HOSTS = [
    "evil.example.com", "evil.example.com:11434", "localhost.evil.com", "127.0.0.1.nip.io",
    "8.8.8.8", "172.32.0.1", "169.254.169.254", "100.64.0.1", "[2001:db8::1]:11434",
    "[::ffff:8.8.8.8]", "localhostevil.com", "evil-localhost",
]


@pytest.mark.parametrize("header", ALLOWED_HOSTS)
def test_local_hosts_are_allowed(header: str) -> None:
    """Ollama's allowed Host values: local names, loopback, private and unspecified IPs."""
    assert host_allowed(header)


@pytest.mark.parametrize("header", REFUSED_HOSTS)
def test_foreign_hosts_are_refused(header: str) -> None:
    """Any other name, and public or link-local addresses, are a rebinding attempt."""
    assert not host_allowed(header)


def test_machine_hostname_is_allowed() -> None:
    """The machine's own name is local, with a port and in any case."""
    name = socket.gethostname()
    assert host_allowed(name) and host_allowed(f"{name.upper()}:11434")


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("::1", True), ("localhost", True), ("127.0.0.2", True),
    ("0.0.0.0", False), ("", False), ("::", False), ("10.0.0.1", False),
    ("192.168.1.2", False), ("no-such-host.invalid", True),
])
def test_binds_loopback(host: str, loopback: bool) -> None:
    """The Host check is on exactly when the listener is loopback-only (a name that does not
    resolve cannot be bound at all, so the guard stays on)."""
    assert binds_loopback(host) is loopback


ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/", None), ("HEAD", "/", None), ("GET", "/api/tags", None),
    ("GET", "/api/version", None), ("GET", "/api/ps", None),
    ("POST", "/api/chat", {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/api/generate", {"model": "fake", "prompt": "hi"}),
    ("POST", "/api/show", {"model": "fake"}), ("DELETE", "/api/delete", {"model": "fake"}),
    ("POST", "/api/pull", {"model": "fake"}), ("GET", "/v1/models", None),
    ("POST", "/v1/chat/completions", {"model": "fake",
                                      "messages": [{"role": "user", "content": "hi"}]}),
    ("GET", "/openapi.json", None), ("GET", "/no/such/route", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_rebound_host_is_refused_on_every_route(make_server, body_reads, method: str,
                                                path: str, body: dict | None) -> None:
    """Bound to loopback, `Host: evil.example.com` is a 403 before routing, body unread."""
    server = make_server()
    with server.client() as c:
        r = c.request(method, path, json=body, headers={"Host": "evil.example.com"})
        assert r.status_code == 403
        if method != "HEAD":
            assert error_of(r) == "host not allowed"
            assert ("message" in r.json()["error"]) is path.startswith("/v1/")
    assert body_reads == [] and FakeRunner.instances == []
    assert server.names() == ["fake:latest"]


@pytest.mark.parametrize("host", ["localhost:11434", "127.0.0.1", "[::1]:11434",
                                  "foo.localhost", socket.gethostname()])
def test_local_host_header_passes(make_server, host: str) -> None:
    """The same app serves a local Host."""
    with make_server().client() as c:
        r = c.get("/api/tags", headers={"Host": host})
        assert r.status_code == 200 and r.json()["models"][0]["name"] == "fake:latest"


def test_host_check_is_off_when_bound_to_every_interface(make_server) -> None:
    """OLLAMA_HOST=0.0.0.0: any Host is allowed (Ollama's semantics; use an API key)."""
    with make_server(OLLAMA_HOST="0.0.0.0:11434").client() as c:
        assert c.get("/api/tags", headers={"Host": "evil.example.com"}).status_code == 200


def test_host_check_skips_in_process_transports(make_server) -> None:
    """No browser reaches an in-process app: scope["server"] is a name, not an address."""
    with make_server().client(base_url="http://testserver") as c:
        assert c.get("/api/tags", headers={"Host": "evil.example.com"}).status_code == 200


# -- Origin: CORS and cross-origin writes -----------------------------------------------------


@pytest.mark.parametrize(("patterns", "origin", "allowed"), [
    (["http://localhost"], "http://localhost", True),
    (["http://localhost"], "http://localhost:3000", False),
    (["http://localhost"], "http://localhostx", False),
    (["http://localhost:*"], "http://localhost:3000", True),
    (["http://localhost:*"], "http://localhost", False),
    (["http://localhost:*"], "http://localhost.evil.com", False),
    (["https://*.example.com"], "https://app.example.com", True),
    (["https://*.example.com"], "https://a.b.example.com", True),
    (["https://*.example.com"], "https://evil.com/x.example.com", False),
    (["https://*.example.com"], "https://example.com", False),
    (["chrome-extension://*"], "chrome-extension://abcdefghijklmnop", True),
    (["chrome-extension://*"], "chrome-extension://abc/def", False),
    (["HTTPS://App.Example.COM"], "https://app.example.com", True),
    (["https://app.example.com"], "HTTPS://APP.EXAMPLE.COM", True),
    (["http://a.b"], "http://aXb", False),  # a dot is a dot, not a regex
    (["*"], "https://evil.example", True),
    (["*"], "null", True),
    (["", "  "], "", False),
    ([], "http://localhost", False),
])
def test_origin_patterns(patterns: list[str], origin: str, allowed: bool) -> None:
    """Exact, `*` wildcards that never span a `/`, a lone `*`, case-insensitive."""
    assert Origins(patterns).allows(origin) is allowed


@pytest.mark.parametrize(("origin", "allowed"), [
    ("http://localhost", True), ("https://localhost:8443", True), ("http://127.0.0.1:5173", True),
    ("http://0.0.0.0:8080", True), ("app://obsidian.md", True), ("file://", True),
    ("tauri://localhost", True), ("vscode-webview://abc", True), ("vscode-file://x", True),
    ("https://evil.example", False), ("http://localhost.evil.com", False), ("null", False),
    ("http://127.0.0.1.evil.com:80", False), ("http://[::1]:3000", False),
])
def test_builtin_origins(origin: str, allowed: bool) -> None:
    """Ollama's built-in list (envconfig.AllowedOrigins)."""
    assert Origins(BUILTIN_ORIGINS).allows(origin) is allowed


WRITES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/api/pull", {"model": "attacker/model"}),
    ("DELETE", "/api/delete", {"model": "fake"}),
    ("POST", "/api/create", {"model": "planted", "from": "fake", "system": "obey"}),
    ("POST", "/api/copy", {"source": "fake", "destination": "stolen"}),
    ("POST", "/api/push", {"model": "fake"}),
    ("POST", "/api/chat", {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/v1/chat/completions", {"model": "fake",
                                      "messages": [{"role": "user", "content": "hi"}]}),
]


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
@pytest.mark.parametrize("content_type", ["text/plain", "application/json"])
def test_cross_origin_write_is_refused_before_the_handler(
        make_server, body_reads, method: str, path: str, body: dict, content_type: str) -> None:
    """A foreign page's request, even a preflight-free text/plain one, is a 403 and never
    runs: no body read, no runner loaded, the store unchanged, no CORS header."""
    server = make_server()
    with server.client() as c:
        r = c.request(method, path, content=json.dumps(body),
                      headers={"Origin": EVIL, "Content-Type": content_type})
        assert r.status_code == 403 and error_of(r) == "origin not allowed"
        assert "access-control-allow-origin" not in r.headers
    assert body_reads == [] and FakeRunner.instances == []
    assert server.names() == ["fake:latest"]


def test_same_request_without_origin_runs(make_server, body_reads) -> None:
    """The control: the CLI's or an SDK's text/plain copy (no Origin) does reach the handler,
    so the refusals above are the Origin's doing."""
    server = make_server()
    with server.client() as c:
        r = c.post("/api/copy", content=json.dumps({"source": "fake", "destination": "stolen"}),
                   headers={"Content-Type": "text/plain"})
        assert r.status_code == 200
    assert body_reads and server.names() == ["fake:latest", "stolen:latest"]


def test_v1_origin_refusal_is_in_openai_shape(make_server) -> None:
    """Under /v1 the 403 is the error object the OpenAI SDKs parse."""
    with make_server().client() as c:
        r = c.get("/v1/models", headers={"Origin": EVIL})
        assert r.status_code == 403
        assert r.json() == {"error": {"message": "origin not allowed",
                                      "type": "invalid_request_error", "param": None,
                                      "code": None}}


def test_allowed_origin_gets_cors_headers(make_server) -> None:
    """An allowed origin's request runs, and its origin is echoed with `Vary: Origin` (on
    success and on errors, so a page can read either)."""
    server = make_server()
    with server.client() as c:
        r = c.request("DELETE", "/api/delete", json={"model": "fake"},
                      headers={"Origin": FRIEND})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == FRIEND
        assert r.headers["vary"] == "Origin"
        r = c.post("/api/show", json={"model": "gone"}, headers={"Origin": FRIEND})
        assert r.status_code == 404 and r.headers["access-control-allow-origin"] == FRIEND
    assert server.names() == []


def test_allowed_origin_streams_with_cors(make_server) -> None:
    """CORS headers go on a streamed answer too, and the stream is intact."""
    with make_server().client() as c:
        r = c.post("/api/generate", json={"model": "fake", "prompt": "hi"},
                   headers={"Origin": "http://127.0.0.1:8080"})
        assert r.headers["access-control-allow-origin"] == "http://127.0.0.1:8080"
        assert [json.loads(line)["response"] for line in r.text.splitlines()] == [
            "Hel", "lo", ""]


def test_preflight_from_allowed_origin(make_server, body_reads) -> None:
    """OPTIONS from an allowed origin is a 204 naming the methods and headers a browser may
    use (the OpenAI SDKs' x-stainless-* included), answered without routing."""
    with make_server().client() as c:
        r = c.options("/v1/chat/completions", headers={
            "Origin": FRIEND, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-stainless-os"})
    assert r.status_code == 204 and r.content == b""
    assert r.headers["access-control-allow-origin"] == FRIEND
    assert r.headers["vary"] == "Origin"
    methods = r.headers["access-control-allow-methods"].split(",")
    assert {"GET", "POST", "DELETE", "OPTIONS"} <= set(methods)
    headers = {h.lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-stainless-os"} <= headers
    assert headers == {h.lower() for h in ALLOWED_HEADERS}
    assert int(r.headers["access-control-max-age"]) > 0
    assert body_reads == []


def test_preflight_from_foreign_origin_is_refused(make_server) -> None:
    """A foreign page's preflight gets a 403 and no CORS headers."""
    with make_server().client() as c:
        r = c.options("/api/pull", headers={"Origin": EVIL,
                                            "Access-Control-Request-Method": "POST"})
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers


def test_ollama_origins_are_honoured(make_server) -> None:
    """OLLAMA_ORIGINS entries (exact and wildcard) are allowed next to the built-ins."""
    server = make_server(OLLAMA_ORIGINS="https://app.example.com, chrome-extension://*")
    with server.client() as c:
        for origin in ("https://app.example.com", "chrome-extension://abcdef", FRIEND):
            r = c.get("/api/tags", headers={"Origin": origin})
            assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
        for origin in (EVIL, "https://app.example.com.evil.example", "moz-extension://abc"):
            assert c.get("/api/tags", headers={"Origin": origin}).status_code == 403


def test_ollama_origins_star_allows_every_origin(make_server) -> None:
    """OLLAMA_ORIGINS=* lets every page in (CSRF allowed, documented), answering `*`."""
    server = make_server(OLLAMA_ORIGINS="*")
    with server.client() as c:
        r = c.request("DELETE", "/api/delete", json={"model": "fake"}, headers={"Origin": EVIL})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    assert "vary" not in r.headers and server.names() == []


# -- API key ----------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer ", "Bearer wrong", f"Bearer {KEY}x", f"Bearer {KEY[:-1]}",
    f"Bearer {KEY.upper()}", f"Token {KEY}", KEY, f"Bearer{KEY}",
    "Basic " + base64.b64encode(f"user:{KEY}".encode()).decode(),
])
def test_missing_or_wrong_key_is_401(make_server, body_reads, authorization: str | None
                                     ) -> None:
    """Without `Bearer <key>`, a 401 with `WWW-Authenticate: Bearer`, body unread."""
    headers = {} if authorization is None else {"Authorization": authorization}
    with make_server(OLLAMAPY_API_KEY=KEY).client() as c:
        for r in (c.get("/api/tags", headers=headers),
                  c.post("/api/chat", headers=headers, json={"model": "fake"})):
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert error_of(r).startswith("unauthorized")
    assert body_reads == [] and FakeRunner.instances == []


@pytest.mark.parametrize("authorization", [f"Bearer {KEY}", f"bearer {KEY}",
                                           f"BEARER  {KEY} "])
def test_right_key_passes(make_server, authorization: str) -> None:
    """The key, whatever the scheme's case and the spaces around the token, lets every
    route through, streams included."""
    headers = {"Authorization": authorization}
    with make_server(OLLAMAPY_API_KEY=KEY).client() as c:
        assert c.get("/api/tags", headers=headers).json()["models"][0]["name"] == "fake:latest"
        r = c.post("/api/chat", headers=headers, json={
            "model": "fake", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200
        assert json.loads(r.text.splitlines()[-1])["done"] is True


def test_health_check_stays_open(make_server) -> None:
    """GET and HEAD `/` answer without a key; everything else, /api/version too, needs it."""
    with make_server(OLLAMAPY_API_KEY=KEY).client() as c:
        assert c.get("/").text == "Ollama is running"
        assert c.head("/").status_code == 200
        assert c.get("/api/version").status_code == 401
        assert c.post("/").status_code == 401
        assert c.get("/openapi.json").status_code == 401


def test_v1_401_is_in_openai_shape(make_server) -> None:
    """Under /v1 the 401 carries OpenAI's `invalid_api_key` code."""
    with make_server(OLLAMAPY_API_KEY=KEY).client() as c:
        r = c.get("/v1/models", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    error = r.json()["error"]
    assert error["code"] == "invalid_api_key" and error["message"].startswith("unauthorized")


def test_anthropic_sdk_key_header_and_error_shape(make_server) -> None:
    """The anthropic SDK sends its key as x-api-key: accepted as the bearer token is; a
    refusal on /v1/messages is in Anthropic's error shape."""
    with make_server(OLLAMAPY_API_KEY=KEY).client() as c:
        assert c.get("/api/tags", headers={"x-api-key": KEY}).status_code == 200
        assert c.get("/api/tags", headers={"x-api-key": KEY + "x"}).status_code == 401
        r = c.post("/v1/messages", headers={"x-api-key": "nope"}, json={})
    assert r.status_code == 401
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert body["error"]["message"].startswith("unauthorized")


def test_key_is_compared_in_constant_time(make_server, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    """The token goes through hmac.compare_digest, as bytes."""
    calls: list[tuple[bytes, bytes]] = []
    compare = security.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    with make_server(OLLAMAPY_API_KEY=KEY).client() as c:
        assert c.get("/api/tags", headers={"Authorization": "Bearer guess"}).status_code == 401
        assert c.get("/api/tags", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert calls == [(b"guess", KEY.encode()), (KEY.encode(), KEY.encode())]


def test_non_ascii_key_and_token(make_server) -> None:
    """A UTF-8 key matches its UTF-8 bytes on the wire; a stray latin-1 byte is a 401, not a
    500 (str compare_digest would raise on non-ASCII)."""
    key = "clé-ünïcode"
    with make_server(OLLAMAPY_API_KEY=key).client() as c:
        r = c.get("/api/tags", headers={"Authorization": b"Bearer " + key.encode()})
        assert r.status_code == 200
        r = c.get("/api/tags", headers={"Authorization": "Bearer clé".encode("latin-1")})
        assert r.status_code == 401


def test_no_key_configured_means_no_authentication(make_server) -> None:
    """OLLAMAPY_API_KEY unset: as Ollama, no route asks for one."""
    with make_server().client() as c:
        assert c.get("/api/version").status_code == 200
        assert c.get("/api/tags", headers={"Authorization": "Bearer whatever"}).status_code == 200


def test_preflight_needs_no_key(make_server) -> None:
    """A browser's preflight never carries Authorization: it is answered before the key
    check, while the actual request still needs the key."""
    with make_server(OLLAMAPY_API_KEY=KEY).client() as c:
        r = c.options("/api/chat", headers={"Origin": FRIEND,
                                            "Access-Control-Request-Method": "POST"})
        assert r.status_code == 204
        r = c.post("/api/chat", json={"model": "fake"}, headers={"Origin": FRIEND})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == FRIEND


def test_guards_run_in_order(make_server) -> None:
    """Host, then Origin, then the key: each refusal names the outermost failing check."""
    with make_server(OLLAMAPY_API_KEY=KEY).client() as c:
        evil_all = {"Host": "evil.example.com", "Origin": EVIL}
        assert error_of(c.get("/api/tags", headers=evil_all)) == "host not allowed"
        assert error_of(c.get("/api/tags", headers={"Origin": EVIL})) == "origin not allowed"
        assert c.get("/api/tags", headers={"Origin": FRIEND}).status_code == 401


# -- request bodies: size and speed -----------------------------------------------------------


@dataclass
class Exchange:
    """One request through the ASGI app, with what the app asked of `receive`."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    reads: int = 0  # body chunks handed to the app

    def json(self) -> Any:
        return json.loads(self.body)


def call(app: Starlette, method: str, path: str, chunks: Iterable[bytes] = (), *,
         headers: Iterable[tuple[str, str]] = (), delay: float = 0.0, stall: bool = False
         ) -> Exchange:
    """Send a request straight to the app: the body is `chunks`, each after `delay` s; at
    their end the body is complete, or with `stall` the sender goes quiet for good."""
    out = Exchange()

    async def run() -> None:
        feed: Iterator[bytes] = iter(chunks)
        ended = False

        async def receive() -> dict[str, Any]:
            nonlocal ended
            if ended or (chunk := next(feed, None)) is None and stall:
                await asyncio.Event().wait()  # until cancelled: nothing more comes
            if chunk is None:
                ended = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.sleep(delay)
            out.reads += 1
            return {"type": "http.request", "body": chunk, "more_body": True}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                out.status = message["status"]
                out.headers = {k.decode(): v.decode() for k, v in message["headers"]}
            elif message["type"] == "http.response.body":
                out.body += message.get("body", b"")

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 11434),
            "headers": [(b"host", b"localhost:11434"),
                        *((k.lower().encode(), v.encode("latin-1")) for k, v in headers)],
        }
        await app(scope, receive, send)

    asyncio.run(run())
    return out


def test_declared_length_over_cap_is_413_before_reading(make_server) -> None:
    """A Content-Length over OLLAMAPY_MAX_BODY_BYTES is refused without a byte read (a
    100 GB lie costs nothing), and the connection is to be closed."""
    app = make_server(OLLAMAPY_MAX_BODY_BYTES=str(CAP)).app
    for declared in (CAP + 1, 100 * 2**30):
        r = call(app, "POST", "/api/chat", itertools.repeat(b"x" * 100, 50),
                 headers=[("content-length", str(declared))])
        assert (r.status, r.reads) == (413, 0)
        assert r.json() == {"error": f"request body too large: the limit is {CAP} bytes"}
        assert r.headers["connection"] == "close"


def test_chunked_body_is_stopped_at_the_chunk_that_crosses_the_cap(make_server) -> None:
    """Without a Content-Length the bytes are counted as they come: an endless body is cut
    at the first chunk past the cap (400 + 400 + 400 > 1000), never buffered in full."""
    app = make_server(OLLAMAPY_MAX_BODY_BYTES=str(CAP)).app
    for path in ("/api/chat", "/api/generate", "/api/create", "/v1/chat/completions"):
        r = call(app, "POST", path, itertools.repeat(b" " * 400, 50))
        assert (r.status, r.reads) == (413, 3), path
        assert r.headers["connection"] == "close"
        assert error_of(r) == f"request body too large: the limit is {CAP} bytes"
    r = call(app, "POST", "/v1/completions", itertools.repeat(b" " * 400, 50))
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_body_of_exactly_the_cap_passes(make_server) -> None:
    """The cap is inclusive, declared or counted: CAP bytes are parsed, CAP + 1 are not."""
    server = make_server(OLLAMAPY_MAX_BODY_BYTES=str(CAP))
    body = b'{"model":"fake"}'
    body = body + b" " * (CAP - len(body))
    with server.client() as c:
        r = c.post("/api/show", content=body)
        assert r.status_code == 200 and "modelfile" in r.json()
        assert c.post("/api/show", content=body + b" ").status_code == 413
    halves = [body[:CAP // 2], body[CAP // 2:]]
    assert call(server.app, "POST", "/api/show", halves).status == 200
    assert call(server.app, "POST", "/api/show", [*halves, b" "]).status == 413


def test_zero_cap_means_no_cap(make_server) -> None:
    """OLLAMAPY_MAX_BODY_BYTES=0 turns the cap off."""
    server = make_server(OLLAMAPY_MAX_BODY_BYTES="0")
    body = b'{"model":"fake"}' + b" " * (40 * 2**20)  # above the 32 MiB default
    with server.client() as c:
        assert c.post("/api/show", content=body).status_code == 200


def test_default_cap_is_32_mib(make_server) -> None:
    """The default refuses a body declared one byte over 32 MiB."""
    r = call(make_server().app, "POST", "/api/chat", [b"{}"],
             headers=[("content-length", str(32 * 2**20 + 1))])
    assert (r.status, r.reads) == (413, 0)


def test_non_ascii_digit_content_length_is_not_a_500(make_server) -> None:
    """A Content-Length of latin-1 digits such as "²" (str.isdigit() says yes, int() says
    no) is left to the server's parser, never a crash in the guard."""
    r = call(make_server().app, "POST", "/api/show", [b'{"model":"fake"}'],
             headers=[("content-length", "\u00b2")])
    assert r.status == 200


def blob(data: bytes) -> str:
    return "/api/blobs/sha256:" + hashlib.sha256(data).hexdigest()


def test_blob_uploads_are_not_under_the_json_cap(make_server) -> None:
    """/api/blobs streams to disk: an upload far above OLLAMAPY_MAX_BODY_BYTES is stored."""
    server = make_server(OLLAMAPY_MAX_BODY_BYTES=str(CAP))
    data = bytes(range(256)) * 4096  # 1 MiB
    with server.client() as c:
        assert c.post(blob(data), content=data).status_code == 201
        assert c.head(blob(data)).status_code == 200
    chunks = [data[i:i + 4096] for i in range(0, len(data), 4096)]
    assert call(server.app, "POST", blob(data), chunks).status == 200  # already there


def test_blob_cap_when_configured(make_server) -> None:
    """OLLAMAPY_MAX_BLOB_BYTES caps uploads, declared or counted; nothing is stored."""
    server = make_server(OLLAMAPY_MAX_BLOB_BYTES="4096")
    data = b"z" * 5000
    before = sorted(p.name for p in server.store.root.rglob("*"))
    with server.client() as c:
        r = c.post(blob(data), content=data)
        assert r.status_code == 413
        assert r.json() == {"error": "request body too large: the limit is 4096 bytes"}
        assert c.head(blob(data)).status_code == 404
    r = call(server.app, "POST", blob(data), [data[:2500], data[2500:]])
    assert (r.status, r.reads) == (413, 2)
    assert sorted(p.name for p in server.store.root.rglob("*")) == before
    assert call(server.app, "POST", blob(b"ok"), [b"ok"]).status == 201


def test_stalled_json_body_is_408(make_server) -> None:
    """A body that stops arriving is a 408 after OLLAMAPY_BODY_TIMEOUT, and the connection
    is to be closed; /v1 answers in OpenAI's shape."""
    app = make_server(OLLAMAPY_BODY_TIMEOUT="0.2").app
    r = call(app, "POST", "/api/chat", [b'{"model":'], stall=True)
    assert r.status == 408 and r.headers["connection"] == "close"
    assert r.json() == {"error": "request timeout: the request body did not arrive within "
                                 "0.2 s"}
    r = call(app, "POST", "/v1/chat/completions", [b"{"], stall=True)
    assert r.status == 408 and r.json()["error"]["type"] == "invalid_request_error"


def test_trickled_json_body_hits_the_whole_body_deadline(make_server) -> None:
    """The JSON deadline is for the whole body: chunks each well within the timeout, but
    slower in sum, are still cut off (slowloris)."""
    app = make_server(OLLAMAPY_BODY_TIMEOUT="0.3").app
    r = call(app, "POST", "/api/chat", itertools.repeat(b" ", 20), delay=0.05)
    assert r.status == 408 and r.reads < 20


def test_upload_timeout_is_per_chunk(make_server) -> None:
    """An upload may take as long as it needs while bytes keep coming: 60 chunks 20 ms
    apart take 1.2 s at least (a sleep never ends early), past a 1 s timeout, and pass,
    each gap ~50 times inside the timeout (no speed is needed to pass); a pause longer than
    the timeout is a 408 and leaves no blob (on the same store, with a 0.3 s timeout so the
    stall costs little)."""
    server = make_server(OLLAMAPY_BODY_TIMEOUT="1")
    data = b"q" * 60
    r = call(server.app, "POST", blob(data), [data[i:i + 1] for i in range(60)], delay=0.02)
    assert (r.status, r.reads) == (201, 60)
    server = make_server(OLLAMAPY_BODY_TIMEOUT="0.3")
    other = b"stalls"
    r = call(server.app, "POST", blob(other), [other[:3]], stall=True)
    assert r.status == 408
    assert r.json() == {"error": "request timeout: no bytes of the upload arrived for 0.3 s"}
    with server.client() as c:
        assert c.head(blob(other)).status_code == 404


def test_refusal_before_routing_answers_openai_shape_under_v1(make_server) -> None:
    """A declared-length 413 under /v1 is OpenAI's error object."""
    r = call(make_server(OLLAMAPY_MAX_BODY_BYTES=str(CAP)).app, "POST",
             "/v1/embeddings", headers=[("content-length", str(CAP * 10))])
    assert r.status == 413
    assert r.json()["error"] == {"message": f"request body too large: the limit is {CAP} "
                                            "bytes", "type": "invalid_request_error",
                                 "param": None, "code": None}


# -- malformed JSON: 400, never 500 or 422 ----------------------------------------------------

DEEP = b"[" * 10_000 + b"]" * 10_000
MALFORMED: list[tuple[bytes, str]] = [
    (b"", "missing request body"),
    (b"  \n", "missing request body"),
    (b"nope", "invalid character 'n' looking for beginning of value"),
    (b'{"model": "fake"', "unexpected EOF"),
    (b'{"model": "fake"} x', "invalid character 'x' after top-level value"),
    (b"[]", "json: cannot unmarshal array into Go value of type api.ChatRequest"),
    (b'"hi"', "json: cannot unmarshal string into Go value of type api.ChatRequest"),
    (b'{"model": NaN}', "invalid character 'N' looking for beginning of value"),
    (b'{"model": "fake", "options": {"temperature": Infinity}}',
     "invalid character 'I' looking for beginning of value"),
    (b'{"model": "fake", "options": {"temperature": -Infinity}}',
     "invalid character 'I' looking for beginning of value"),
    (b'{"model": "fake", "options": {"temperature": 1e999}}',
     "json: cannot unmarshal number 1e999 into Go value of type float64"),
    (DEEP, "exceeded max depth"),
    (b'{"model": "fake", "format": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001,
     "exceeded max depth"),
    (b'{"model": 5}',
     "json: cannot unmarshal number into Go struct field ChatRequest.model of type string"),
    (b'{"model": "fake", "options": "x"}', "json: cannot unmarshal string into Go struct "
                                          "field ChatRequest.options of type "
                                          "map[string]interface {}"),
    (b'{"model": "fake", "messages": {}}', "json: cannot unmarshal object into Go struct "
                                          "field ChatRequest.messages of type []api.Message"),
    (b'{"model": "fake", "keep_alive": "forever"}', 'time: invalid duration "forever"'),
    (b'{"model": "fake", "stream": "yes"}',
     "json: cannot unmarshal string into Go struct field ChatRequest.stream of type bool"),
]


@pytest.mark.parametrize(("body", "message"), MALFORMED, ids=lambda v: repr(v)[:40])
def test_malformed_chat_body_is_400_with_go_message(make_server, body: bytes, message: str
                                                    ) -> None:
    """Each malformed body is a 400 with Ollama's (encoding/json's) message, never a 500 or a
    422, and no runner is loaded."""
    with make_server().client() as c:
        r = c.post("/api/chat", content=body)
    assert r.status_code == 400 and r.json() == {"error": message}
    assert r.headers["content-type"].startswith("application/json")
    assert FakeRunner.instances == []


JSON_ROUTES = [("POST", p) for p in (
    "/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/api/tokenize",
    "/api/detokenize", "/api/show", "/api/create", "/api/copy", "/api/pull", "/api/push",
)] + [("DELETE", "/api/delete")]


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
def test_every_json_route_answers_malformed_bodies_400(make_server, method: str, path: str
                                                       ) -> None:
    """Empty, non-JSON, array, NaN, 10k-deep and wrong-typed bodies: 400 on every native
    JSON route, with a JSON error; the store is untouched."""
    server = make_server()
    with server.client() as c:
        for body in (b"", b"nope", b"[]", b'{"model": NaN}', DEEP, b'{"model": [1]}'):
            r = c.request(method, path, content=body)
            assert r.status_code == 400, (body[:20], r.text)
            assert isinstance(r.json()["error"], str) and r.json()["error"]
        assert c.request(method, path, content=b"").json() == {"error": "missing request body"}
    assert server.names() == ["fake:latest"] and FakeRunner.instances == []


def test_unknown_fields_are_ignored(make_server) -> None:
    """Fields Ollama does not know are no error (Go's decoder skips them)."""
    with make_server().client() as c:
        r = c.post("/api/generate", json={"model": "fake", "prompt": "hi", "stream": False,
                                          "bogus": {"x": [1, 2]}, "images2": None})
    assert r.status_code == 200 and r.json()["response"] == "Hello"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])
@pytest.mark.parametrize("body", [b"", b"nope", b"[]", b'{"model": NaN}', DEEP,
                                  b'{"model": "fake"'])
def test_v1_malformed_body_is_openai_invalid_request(make_server, path: str, body: bytes
                                                     ) -> None:
    """OpenAI routes answer malformed JSON with `{"error": {"type":
    "invalid_request_error", ...}}` and a 400."""
    with make_server().client() as c:
        r = c.post(path, content=body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert set(error) == {"message", "type", "param", "code"}


# -- 503: Retry-After -------------------------------------------------------------------------


def test_error_headers_add_retry_after_to_503_only() -> None:
    """error_headers adds Retry-After to a 503 (keeping one already set) and nothing else."""
    assert error_headers(503) == {"Retry-After": str(RETRY_AFTER_S)}
    assert error_headers(503, {"Retry-After": "7"}) == {"Retry-After": "7"}
    assert error_headers(500) == {} and error_headers(429, {"X": "y"}) == {"X": "y"}


@pytest.mark.parametrize(("path", "body"), [
    ("/api/generate", {"model": "fake", "prompt": "hi"}),
    ("/api/chat", {"model": "fake", "messages": [{"role": "user", "content": "hi"}],
                   "stream": False}),
    ("/v1/chat/completions", {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}),
])
def test_server_busy_503_carries_retry_after(make_server, path: str, body: dict) -> None:
    """A full queue is a 503 with Ollama's text and `Retry-After`, in both API shapes."""
    with make_server(BusyRunner).client() as c:
        r = c.post(path, json=body)
    assert r.status_code == 503 and r.headers["retry-after"] == str(RETRY_AFTER_S)
    assert error_of(r) == "server busy, please try again.  maximum pending requests exceeded"
