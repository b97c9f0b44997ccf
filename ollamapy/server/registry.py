"""Handlers for /api/pull and /api/push (reference §3.11, §3.12).

They check the request, then relay the store's progress stream (`ollamapy.store.registry_pull`
and `registry_push`) as NDJSON, or its last object when `stream` is false. The transfer runs
in worker threads, so the event loop stays free; when the client goes away the relay's
`finally` sets the transfer's cancel event, which stops the downloads (their partial files
stay, and the next pull of the model resumes them) or the upload.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Generator
from typing import Any

from starlette.concurrency import iterate_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ollamapy.server import schemas
from ollamapy.server.state import State
from ollamapy.server.streaming import respond
from ollamapy.store.registry_pull import pull_model
from ollamapy.store.registry_push import push_model


def _state(request: Request) -> State:
    return request.app.state.ollamapy


async def _relay(progress: Generator[dict[str, Any], None, None], cancel: threading.Event
                 ) -> AsyncIterator[dict[str, Any]]:
    try:
        async for status in iterate_in_threadpool(progress):
            yield status
    finally:
        cancel.set()  # a no-op once the stream has ended; otherwise the client went away
        # run the iterator's own clean-up now rather than whenever it is garbage collected;
        # if a worker thread is still inside it, the cancel event stops it instead
        with contextlib.suppress(ValueError):  # "generator already executing"
            progress.close()


async def pull(request: Request) -> Response:
    fields = schemas.decode(await request.body(), schemas.PULL, "PullRequest")
    name = fields.get("model") or fields.get("name") or ""  # empty: "invalid model name"
    cancel = threading.Event()
    state = _state(request)
    progress = pull_model(state.store, name, insecure=fields.get("insecure", False),
                          cancel=cancel, prune=not state.settings.noprune)
    return await respond(_relay(progress, cancel), stream=fields.get("stream", True))


async def push(request: Request) -> Response:
    fields = schemas.decode(await request.body(), schemas.PUSH, "PushRequest")
    name = schemas.require_model(fields, "name")  # 400 "model is required"
    cancel = threading.Event()
    progress = push_model(_state(request).store, name, insecure=fields.get("insecure", False),
                          cancel=cancel)
    return await respond(_relay(progress, cancel), stream=fields.get("stream", True))
