"""How much a request may send, and how slowly: the request-body guard.

    BodyLimit   JSON bodies are capped at OLLAMAPY_MAX_BODY_BYTES (413) and must arrive in
                full within OLLAMAPY_BODY_TIMEOUT seconds (408); `/api/blobs/:digest`
                uploads, which stream to disk, have their own cap (OLLAMAPY_MAX_BLOB_BYTES,
                none by default) and may pause at most OLLAMAPY_BODY_TIMEOUT between chunks.

A declared `Content-Length` over the cap is refused before a byte is read. Otherwise the
bytes are counted as the handler reads them, so a body that lies about its length, or has
none (chunked), is stopped by the first chunk that crosses the cap: at most one chunk past
it is ever held. The errors are raised from inside the handler's read, as `APIError`s, so
the route answers them in its own shape, and they close the connection (the rest of the
body is never read). Slow senders cost a connection and a timer, never a thread: other
requests go on while they trickle.
"""

from __future__ import annotations

import math

import anyio
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ollamapy.server.errors import APIError
from ollamapy.server.security import reject

UPLOADS = "/api/blobs/"
CLOSE = {"Connection": "close"}


def too_large(cap: int) -> str:
    return f"request body too large: the limit is {cap} bytes"


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_body: int, max_blob: int,
                 timeout: float) -> None:
        self.app, self.max_body, self.max_blob, self.timeout = app, max_body, max_blob, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["path"].startswith(UPLOADS)
        cap = self.max_blob if upload else self.max_body
        declared = Headers(scope=scope).get("content-length", "")
        # isascii: "²" is a digit to str.isdigit() but not to int() (h11 refuses it anyway)
        if cap and declared.isascii() and declared.isdigit() and int(declared) > cap:
            await reject(scope, 413, too_large(cap), CLOSE)(scope, receive, send)
            return
        body = _Body(receive, cap, self.timeout, per_chunk=upload)
        await self.app(scope, body.receive, send)


class _Body:
    """`receive`, counting and timing the body until its last chunk; after that (when
    Starlette only listens for the client going away) it passes messages through."""

    def __init__(self, receive: Receive, cap: int, timeout: float, *, per_chunk: bool) -> None:
        self._receive, self.cap, self.timeout, self.per_chunk = receive, cap, timeout, per_chunk
        self.received = 0
        self.deadline: float | None = None  # JSON bodies: whole-body deadline, from 1st read
        self.done = False

    def _wait_s(self) -> float:
        if self.per_chunk:
            return self.timeout
        now = anyio.current_time()
        if self.deadline is None:
            self.deadline = now + self.timeout
        return max(self.deadline - now, 0.0)

    async def receive(self) -> Message:
        if self.done:
            return await self._receive()
        message: Message | None = None
        with anyio.move_on_after(self._wait_s() if math.isfinite(self.timeout) else None):
            message = await self._receive()
        if message is None:
            what = ("no bytes of the upload arrived for" if self.per_chunk
                    else "the request body did not arrive within")
            raise APIError(408, f"request timeout: {what} {self.timeout:g} s", CLOSE)
        if message["type"] != "http.request":  # http.disconnect
            self.done = True
            return message
        self.received += len(message.get("body", b""))
        if self.cap and self.received > self.cap:
            raise APIError(413, too_large(self.cap), CLOSE)
        self.done = not message.get("more_body", False)
        return message
