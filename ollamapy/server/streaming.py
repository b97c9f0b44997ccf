"""Responses in Ollama's two shapes: an NDJSON stream, or one JSON object.

Both start from an async iterator of chunks. The first chunk is awaited before any byte is
sent, so an error raised while loading or validating still gets its own status and
`{"error": ...}` body; an error after streaming began becomes a final `{"error": ...}` line
under the 200 already sent (../shared/reference/ollama-api.md §4.1). When the client goes
away, Starlette cancels the stream and the iterator is closed, which lets the producer stop.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from ollamapy.server.errors import APIError, error_headers
from ollamapy.store.errors import StoreError

log = logging.getLogger(__name__)

Chunk = dict[str, Any]


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class OllamaJSON(JSONResponse):
    media_type = "application/json; charset=utf-8"

    def render(self, content: Any) -> bytes:
        return dumps(content).encode()


def error_response(status: int, message: str,
                   headers: Mapping[str, str] | None = None) -> Response:
    return OllamaJSON({"error": message}, status_code=status,
                      headers=error_headers(status, headers))


def created_at() -> str:
    """Go's time.Now().UTC() in RFC 3339 with fractional seconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def local_time(timestamp: float) -> str:
    """A local time with its offset, as Ollama writes modified_at and expires_at."""
    return datetime.fromtimestamp(timestamp).astimezone().isoformat()


def _error_message(e: BaseException) -> str:
    return e.message if isinstance(e, APIError) else str(e) or type(e).__name__


async def respond(chunks: AsyncIterator[Chunk], *, stream: bool,
                  merge: Callable[[list[Chunk]], Chunk] | None = None) -> Response:
    """stream: NDJSON, one chunk a line; else one object, `merge(all chunks)` (default: the
    last chunk)."""
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        raise APIError(500, "no response") from None
    if not stream:
        collected = [first]
        try:
            async for chunk in chunks:
                collected.append(chunk)
        finally:
            await chunks.aclose()
        return OllamaJSON(merge(collected) if merge else collected[-1])

    async def lines() -> AsyncIterator[str]:
        try:
            yield dumps(first) + "\n"
            async for chunk in chunks:
                yield dumps(chunk) + "\n"
        except Exception as e:  # after the 200: the error is the stream's last line
            if isinstance(e, APIError | StoreError):  # expected: the client's error
                log.info("stream ended with an error: %s", e)
            else:
                log.exception("error while streaming")
            yield dumps({"error": _error_message(e)}) + "\n"
        finally:
            await chunks.aclose()

    return StreamingResponse(lines(), media_type="application/x-ndjson")
