"""The HTTP guards over a real socket: `ollamapy serve` on loopback with an API key, an extra
allowed origin, a 1 MiB JSON body cap and a body deadline (../shared/reference/hardening.md
§7 items 11, 13, 14). The store holds one tiny model, "victim", that no test loads: the
guards answer before any model would. tests/security/test_guards.py has the in-process cases.

No test here needs the machine to be fast. The main server's body deadline is a generous
60 s, so no client of these tests is ever cut off for sending slowly; the deadline itself is
tested on a second server with a 3 s one, bounded from below (not before the deadline) and
shown by what was sent (cut off before the body was complete), never by an upper time
bound: the timeouts here are hang guards.
"""

from __future__ import annotations

import hashlib
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from ollamapy.store import Store, create_model
from tests.e2e.conftest import Server, start_server, stop_server
from tests.store.conftest import upload, write_gguf

KEY = "live-test-key-7f3a"
AUTH = {"Authorization": f"Bearer {KEY}"}
APP_ORIGIN = "https://app.example.com"  # OLLAMA_ORIGINS
EVIL_ORIGIN = "https://evil.example"
MIB = 2**20
CAP = MIB  # OLLAMAPY_MAX_BODY_BYTES
# OLLAMAPY_BODY_TIMEOUT, seconds: the main server's, so long that no request of these tests
# can miss it however slow the machine; and the deadline under test, on a server of its own
BODY_TIMEOUT = 60.0
SHORT_BODY_TIMEOUT = 3.0
HANG_GUARD_S = 60  # socket timeouts: every answer here takes milliseconds
RSS_BUDGET = 64 * MIB  # the most the server may grow while refusing a 128 MiB body


def guarded_server(tmp_path_factory: pytest.TempPathFactory, body_timeout: float
                   ) -> Iterator[Server]:
    models = tmp_path_factory.mktemp("guarded-models")
    store = Store(models)
    gguf = write_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    list(create_model(store, "victim", files={"tiny.gguf": upload(store, gguf)}))
    srv = start_server(models, OLLAMAPY_API_KEY=KEY, OLLAMA_ORIGINS=APP_ORIGIN,
                       OLLAMAPY_MAX_BODY_BYTES=str(CAP),
                       OLLAMAPY_BODY_TIMEOUT=str(body_timeout))
    try:
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from guarded_server(tmp_path_factory, BODY_TIMEOUT)


@pytest.fixture(scope="module")
def short_deadline_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from guarded_server(tmp_path_factory, SHORT_BODY_TIMEOUT)


@pytest.fixture()
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=HANG_GUARD_S) as c:
        yield c


def address(server: Server) -> tuple[str, int]:
    host, port = server.host.rsplit(":", 1)
    return host, int(port)


def model_names(http: httpx.Client) -> list[str]:
    r = http.get("/api/tags")
    assert r.status_code == 200
    return sorted(m["name"] for m in r.json()["models"])


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset after its answer included: a
    server that stops reading a body closes with unread bytes, which is a TCP reset)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def request_head(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", f"Authorization: Bearer {KEY}",
             *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class PeakRSS:
    """The server process's largest resident set while the block runs, above its start."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.base = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.base

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


# -- Host: DNS rebinding ----------------------------------------------------------------------

CHAT = {"model": "victim", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/", None), ("GET", "/api/tags", None), ("GET", "/api/version", None),
    ("POST", "/api/chat", CHAT), ("POST", "/api/show", {"model": "victim"}),
    ("DELETE", "/api/delete", {"model": "victim"}), ("POST", "/v1/chat/completions", CHAT),
    ("GET", "/v1/models", None), ("OPTIONS", "/api/chat", None),
])
def test_rebound_host_is_403(server: Server, http: httpx.Client, method: str, path: str,
                             body: dict | None) -> None:
    """Bound to 127.0.0.1, a request for `Host: evil.example.com` is refused on every route,
    a preflight from an allowed origin included, and the victim model survives."""
    r = http.request(method, path, json=body, headers={
        "Host": "evil.example.com", "Origin": "http://localhost:3000",
        "Access-Control-Request-Method": "POST"})
    assert r.status_code == 403
    error = r.json()["error"]
    assert (error["message"] if path.startswith("/v1/") else error) == "host not allowed"
    assert model_names(http) == ["victim:latest"]


def test_rebound_host_over_a_raw_socket(server: Server) -> None:
    """The same on the wire, without any client library's Host handling."""
    with socket.create_connection(address(server), timeout=HANG_GUARD_S) as s:
        s.sendall(request_head("GET", "/api/tags", "Connection: close").replace(
            b"Host: localhost", b"Host: evil.example.com"))
        response = read_all(s)
    assert status_of(response) == 403 and response.endswith(b'{"error":"host not allowed"}')


@pytest.mark.parametrize("host", ["localhost", "localhost:{port}", "127.0.0.1",
                                  "127.0.0.1:{port}", "[::1]:{port}", "foo.localhost:{port}",
                                  "LOCALHOST:{port}", "192.168.0.10:{port}", "{hostname}"])
def test_local_host_values_pass(server: Server, http: httpx.Client, host: str) -> None:
    """Local names and addresses, and the machine's hostname, are served."""
    host = host.format(port=address(server)[1], hostname=socket.gethostname())
    r = http.get("/api/tags", headers={"Host": host})
    assert r.status_code == 200 and r.json()["models"][0]["name"] == "victim:latest"


# -- Origin: cross-origin writes --------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), [
    ("DELETE", "/api/delete", {"model": "victim"}),
    ("POST", "/api/copy", {"source": "victim", "destination": "stolen"}),
    ("POST", "/api/create", {"model": "planted", "from": "victim"}),
    ("POST", "/api/pull", {"model": "attacker/model"}),
])
def test_cross_origin_write_is_refused(http: httpx.Client, method: str, path: str,
                                       body: dict) -> None:
    """A foreign page's blind text/plain write is a 403; the store is unchanged."""
    r = http.request(method, path, content=json.dumps(body),
                     headers={"Origin": EVIL_ORIGIN, "Content-Type": "text/plain"})
    assert r.status_code == 403 and r.json() == {"error": "origin not allowed"}
    assert "access-control-allow-origin" not in r.headers
    assert model_names(http) == ["victim:latest"]


def test_configured_origin_gets_cors(http: httpx.Client) -> None:
    """An OLLAMA_ORIGINS entry is echoed, and its preflight is a 204 without the key."""
    r = http.get("/api/tags", headers={"Origin": APP_ORIGIN})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == APP_ORIGIN
    r = httpx.options(str(http.base_url.join("/api/chat")), headers={
        "Origin": APP_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "Authorization" in r.headers["access-control-allow-headers"].split(",")


# -- API key: the official clients ------------------------------------------------------------


def test_ollama_client_needs_the_key(server: Server) -> None:
    """The `ollama` package works with `Authorization: Bearer <key>`, and gets a 401
    ResponseError without it or with a wrong one."""
    import ollama

    good = ollama.Client(host=server.url, headers=AUTH)
    try:
        assert [m.model for m in good.list().models] == ["victim:latest"]
        assert good.show("victim").details.format == "gguf"
        with pytest.raises(ollama.ResponseError) as e:  # past the key: the model's 404
            good.chat(model="nothing-here", messages=[{"role": "user", "content": "hi"}])
        assert e.value.status_code == 404
    finally:
        good.close()
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        bad = ollama.Client(host=server.url, headers=headers)
        try:
            with pytest.raises(ollama.ResponseError) as e:
                bad.list()
            assert e.value.status_code == 401 and e.value.error.startswith("unauthorized")
            with pytest.raises(ollama.ResponseError) as e:
                bad.chat(model="victim", messages=[{"role": "user", "content": "hi"}])
            assert e.value.status_code == 401
        finally:
            bad.close()


def test_openai_sdk_needs_the_key(server: Server) -> None:
    """The `openai` SDK works with api_key=<key> and raises AuthenticationError (401,
    `invalid_api_key`) with another key."""
    import openai

    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0) as good:
        assert [m.id for m in good.models.list()] == ["victim:latest"]
        assert good.models.retrieve("victim:latest").owned_by == "library"
        with pytest.raises(openai.NotFoundError):  # past the key: the model's 404
            good.chat.completions.create(model="nothing-here",
                                         messages=[{"role": "user", "content": "hi"}])
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as e:
            bad.models.list()
        assert e.value.status_code == 401 and e.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="victim",
                                        messages=[{"role": "user", "content": "hi"}])


def test_health_check_needs_no_key(server: Server) -> None:
    """`GET /` stays public (load balancers, `ollama` CLI liveness checks)."""
    assert httpx.get(server.url).text == "Ollama is running"
    assert httpx.head(server.url).status_code == 200
    assert httpx.get(f"{server.url}/api/version").status_code == 401
    assert httpx.post(server.url).status_code == 401


# -- oversized bodies -------------------------------------------------------------------------


def test_lying_content_length_is_413_at_once(server: Server) -> None:
    """A Content-Length of 10 GB followed by one byte is refused from the header alone: a
    413, with the connection closed, while the body is still 9,999,999,999 bytes short (a
    server waiting for more would answer nothing until its 60 s body deadline, and then a
    408)."""
    with socket.create_connection(address(server), timeout=HANG_GUARD_S) as s:
        s.sendall(request_head("POST", "/api/chat", "Content-Length: 10000000000") + b"{")
        response = read_all(s)
    assert status_of(response) == 413 and b"connection: close" in response.lower()
    assert response.endswith(b'{"error":"request body too large: the limit is 1048576 bytes"}')


@pytest.mark.parametrize("framing", ["chunked", "declared"])
def test_128_mib_body_is_refused_early_with_bounded_memory(server: Server, framing: str
                                                           ) -> None:
    """A 128 MiB JSON body to /api/chat, with or without a Content-Length, is answered 413
    while the client is still sending, after a few MiB at most, and the server's resident
    memory grows by far less than the body: it is never buffered."""
    total = 128 * MIB
    if framing == "chunked":
        head = request_head("POST", "/api/chat", "Transfer-Encoding: chunked")
        piece = b"%x\r\n" % MIB + b" " * MIB + b"\r\n"
    else:
        head = request_head("POST", "/api/chat", f"Content-Length: {total}")
        piece = b" " * MIB
    sent = 0
    with (PeakRSS(server.process.pid) as rss,
          socket.create_connection(address(server), timeout=HANG_GUARD_S) as s):
        s.sendall(head)
        while sent < total and not select.select([s], [], [], 0)[0]:  # until it answers
            try:
                s.sendall(piece)
            except OSError:  # it closed the connection on us
                break
            sent += MIB
        response = read_all(s)
    assert status_of(response) == 413, response[:200]
    assert b"request body too large" in response
    assert sent <= 32 * MIB
    assert rss.growth < RSS_BUDGET, f"server grew by {rss.growth / MIB:.0f} MiB"
    assert server.process.poll() is None


def test_big_blob_upload_streams_to_disk(server: Server, http: httpx.Client) -> None:
    """/api/blobs is not under the JSON cap: a 48 MiB upload (chunked, 48 times the cap) is
    stored whole, without the server holding it in memory."""
    piece = hashlib.sha256(b"seed").digest() * (MIB // 32)
    data_chunks = [bytes([i]) + piece[1:] for i in range(48)]
    digest = "sha256:" + hashlib.sha256(b"".join(data_chunks)).hexdigest()
    with PeakRSS(server.process.pid) as rss:
        r = http.post(f"/api/blobs/{digest}", content=iter(data_chunks))
    assert r.status_code == 201, r.text
    assert rss.growth < RSS_BUDGET, f"server grew by {rss.growth / MIB:.0f} MiB"
    assert http.head(f"/api/blobs/{digest}").status_code == 200
    stored = Path(server.models) / "blobs" / digest.replace(":", "-")
    assert stored.stat().st_size == 48 * MIB


# -- slow bodies ------------------------------------------------------------------------------


class Trickle:
    """A client that sends a request head, then one byte a second of a body it never
    finishes (1000 bytes declared, or chunked without the last chunk), counting what it sent.
    """

    BODY = 1000

    def __init__(self, server: Server, *, chunked: bool) -> None:
        self.sock = socket.create_connection(address(server), timeout=HANG_GUARD_S)
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {self.BODY}"
        self.byte = b"1\r\n \r\n" if chunked else b" "
        self.sock.sendall(request_head("POST", "/api/chat", framing) + self.byte)
        self.sent = 1  # body bytes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, daemon=True)
        self._thread.start()

    def _send(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.sock.sendall(self.byte)
            except OSError:
                return
            self.sent += 1

    def answered(self) -> bool:
        return bool(select.select([self.sock], [], [], 0)[0])

    def close(self) -> bytes | None:
        """What the server answered once it ended the connection; None if it sent nothing
        for HANG_GUARD_S (a server that never cuts a slow sender off)."""
        try:
            return read_all(self.sock)
        except TimeoutError:
            return None
        finally:
            self._stop.set()
            self._thread.join()
            self.sock.close()

    def hang_up(self) -> None:
        """Leave without waiting for the server."""
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_slow_bodies_do_not_block_others(server: Server, http: httpx.Client) -> None:
    """While two clients trickle bodies at 1 byte/s, other clients are served: every one of
    their requests is answered while both trickles are still unanswered. (With the 60 s body
    deadline, a server that served nothing else until the trickles ended would answer these
    requests only after cutting the trickles off, or time out the client.)"""
    slow = [Trickle(server, chunked=False), Trickle(server, chunked=True)]
    try:
        for _ in range(3):
            assert model_names(http) == ["victim:latest"]
            assert http.post("/api/show", json={"model": "victim"}).status_code == 200
            assert http.post("/api/chat", json={"model": "gone"}).status_code == 404
        assert not any(t.answered() for t in slow), "the others waited for the slow senders"
    finally:
        for t in slow:
            t.hang_up()
    assert model_names(http) == ["victim:latest"]  # and the server is still fine


def test_slow_bodies_are_cut_off_at_the_deadline(short_deadline_server: Server) -> None:
    """Two clients trickling bodies at 1 byte/s are cut off with a 408 by the body deadline
    (3 s here): not before it, and while their bodies are still far from complete (the
    declared one would take 1000 s). A server that never cut them off would send nothing
    for HANG_GUARD_S, a hang guard, and fail the test as well."""
    server = short_deadline_server
    start = time.monotonic()
    slow = [Trickle(server, chunked=False), Trickle(server, chunked=True)]
    responses = [t.close() for t in slow]
    assert time.monotonic() - start >= SHORT_BODY_TIMEOUT, "cut off before the deadline"
    for trickle, response in zip(slow, responses, strict=True):
        assert response is not None, "a slow sender was never cut off"
        # (b"": the server's close reset the connection before its answer was read)
        assert response == b"" or status_of(response) == 408, response[:200]
        if response:
            assert b"request timeout" in response
        assert trickle.sent < Trickle.BODY  # the body was never complete
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=HANG_GUARD_S) as http:
        assert model_names(http) == ["victim:latest"]  # and the server is still fine
