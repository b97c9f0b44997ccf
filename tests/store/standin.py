"""A registry stand-in: a small Starlette app on 127.0.0.1 that serves manifests and blobs the
way the distribution API does (`/v2/<repo>/manifests/<tag>`, `/v2/<repo>/blobs/<digest>` with
Range, monolithic uploads), logs every request it gets and the blob bytes it sends, and
misbehaves on demand:
bearer auth with a chosen realm, throttling, a connection cut once it has sent some bytes,
and `override`, a hook that answers a request in its place."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_json(config: tuple[str, int], layers: list[tuple[str, str, int]]) -> bytes:
    """A schema 2 manifest from (digest, size) of the config and (media type, digest, size)
    of each layer."""
    return json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config[0], "size": config[1]},
        "layers": [{"mediaType": t, "digest": d, "size": s} for t, d, s in layers],
    }).encode()


@dataclass
class Logged:
    method: str
    path: str
    headers: dict[str, str]
    sent: int = 0  # blob bytes sent in answer


class Cut(Exception):
    """Raised inside a body: the server drops the connection mid-answer."""


@dataclass
class StandIn:
    manifests: dict[str, bytes] = field(default_factory=dict)  # "repo:tag" → manifest bytes
    blobs: dict[str, bytes] = field(default_factory=dict)  # digest → bytes
    log: list[Logged] = field(default_factory=list)
    token: str | None = None  # when set, /v2/ answers need "Authorization: Bearer <token>"
    realm: str | None = None  # the challenge's realm; default: this server's /token
    chunk: int = 64 * 1024
    delay_s: float = 0.0  # per chunk of a blob answer
    cut_after: int | None = None  # blob bytes (over all answers) after which answers are cut
    blob_bytes_sent: int = 0
    override: Callable[[Request], Response | None] | None = None
    url: str = ""  # http://127.0.0.1:PORT once serving

    # -- content ----------------------------------------------------------------------------

    def add_blob(self, data: bytes) -> str:
        digest = digest_of(data)
        self.blobs[digest] = data
        return digest

    def add_model(self, repo_tag: str, layers: list[tuple[str, bytes]],
                  config: bytes = b'{"model_format":"gguf","model_family":"llama"}') -> bytes:
        """Serve a model at `repo:tag`; returns its manifest."""
        config_digest = self.add_blob(config)
        described = [(media_type, self.add_blob(data), len(data)) for media_type, data in layers]
        manifest = manifest_json((config_digest, len(config)), described)
        self.manifests[repo_tag] = manifest
        return manifest

    def requests_for(self, path_part: str) -> list[Logged]:
        return [r for r in self.log if path_part in r.path]

    # -- the app ----------------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v2/", self._root, methods=["GET"]),
            Route("/token", self._token, methods=["GET"]),
            Route("/v2/{repo:path}/manifests/{tag}", self._manifest, methods=["GET", "HEAD"]),
            Route("/v2/{repo:path}/manifests/{tag}", self._put_manifest, methods=["PUT"]),
            Route("/v2/{repo:path}/blobs/uploads/", self._start_upload, methods=["POST"]),
            Route("/v2/{repo:path}/blobs/{digest}", self._blob, methods=["GET", "HEAD"]),
            Route("/uploads/{n}", self._finish_upload, methods=["PUT"]),
            Route("/cdn/{digest}", self._blob, methods=["GET"]),
        ])

    def _enter(self, request: Request) -> tuple[Logged, Response | None]:
        entry = Logged(request.method, request.url.path + (
            f"?{request.url.query}" if request.url.query else ""), dict(request.headers))
        self.log.append(entry)
        if self.override is not None and (answer := self.override(request)) is not None:
            return entry, answer
        if (self.token and request.url.path.startswith("/v2/")
                and request.headers.get("authorization") != f"Bearer {self.token}"):
            realm = self.realm or f"{self.url}/token"
            return entry, JSONResponse({"errors": [{"code": "UNAUTHORIZED"}]}, 401, headers={
                "WWW-Authenticate": f'Bearer realm="{realm}",service="standin",'
                                    f'scope="repository:{request.path_params.get("repo")}:pull"'})
        return entry, None

    async def _root(self, request: Request) -> Response:
        _, answer = self._enter(request)
        return answer or JSONResponse({})

    async def _token(self, request: Request) -> Response:
        _, answer = self._enter(request)
        return answer or JSONResponse({"token": self.token})

    async def _manifest(self, request: Request) -> Response:
        _, answer = self._enter(request)
        if answer is not None:
            return answer
        key = f"{request.path_params['repo']}:{request.path_params['tag']}"
        if key not in self.manifests:
            return JSONResponse({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, 404)
        return Response(self.manifests[key], media_type=MANIFEST_TYPE)

    async def _put_manifest(self, request: Request) -> Response:
        _, answer = self._enter(request)
        if answer is not None:
            return answer
        body = await request.body()
        if request.headers.get("content-type") != MANIFEST_TYPE:
            return JSONResponse({"errors": [{"code": "MANIFEST_INVALID"}]}, 400)
        self.manifests[f"{request.path_params['repo']}:{request.path_params['tag']}"] = body
        return Response(status_code=201)

    async def _start_upload(self, request: Request) -> Response:
        _, answer = self._enter(request)
        return answer or Response(status_code=202, headers={
            "Location": f"/uploads/{len(self.log)}?_state=opaque"})

    async def _finish_upload(self, request: Request) -> Response:
        _, answer = self._enter(request)
        if answer is not None:
            return answer
        body = await request.body()
        if request.query_params.get("_state") != "opaque" or digest_of(body) != \
                request.query_params.get("digest"):
            return JSONResponse({"errors": [{"code": "DIGEST_INVALID"}]}, 400)
        self.add_blob(body)
        return Response(status_code=201)

    async def _blob(self, request: Request) -> Response:
        entry, answer = self._enter(request)
        if answer is not None:
            return answer
        data = self.blobs.get(request.path_params["digest"])
        if data is None:
            return JSONResponse({"errors": [{"code": "BLOB_UNKNOWN"}]}, 404)
        start, end, status = 0, len(data), 200
        match = _RANGE.fullmatch(request.headers.get("range", ""))
        if match:
            start = int(match.group(1))
            end = min(len(data), int(match.group(2)) + 1) if match.group(2) else len(data)
            status = 206
        headers = {"Content-Length": str(end - start), "Accept-Ranges": "bytes"}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers)
        return StreamingResponse(self._body(data, start, end, entry), status, headers=headers)

    async def _body(self, data: bytes, start: int, end: int, entry: Logged
                    ) -> AsyncIterator[bytes]:
        pos = start
        while pos < end:
            if self.cut_after is not None and self.blob_bytes_sent >= self.cut_after:
                raise Cut  # the registry "goes down" in the middle of the answer
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            chunk = data[pos:min(end, pos + self.chunk)]
            pos += len(chunk)
            entry.sent += len(chunk)
            self.blob_bytes_sent += len(chunk)
            yield chunk


def partial_records(blobs: Path, digest: str) -> list[dict]:
    """The part records (`sha256-<hex>-partial-N`) of a download in progress, by part."""
    stem = "sha256-" + digest.removeprefix("sha256:") + "-partial-"
    return sorted((json.loads(p.read_text()) for p in blobs.iterdir()
                   if p.name.startswith(stem)), key=lambda r: r["N"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(app: Starlette) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a thread on a free loopback port; yields its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off",
                                           log_level="critical", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120  # a hang guard: it starts in milliseconds
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the stand-in registry did not start (or, a hang guard, not "
                               "in 120 s)")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def standin() -> Iterator[StandIn]:
    registry = StandIn()
    with serving(registry.app()) as url:
        registry.url = url
        yield registry
