"""The Starlette application: Ollama's routes, and errors turned into Ollama's responses.

    app = create_app(settings)          # served by uvicorn (`ollamapy serve`)

Unknown paths answer `404 page not found` and wrong methods `405 method not allowed` in plain
text, as Ollama's router does; an `APIError` or a store error becomes `{"error": ...}` with
its status; anything unexpected is logged and answered 500 with its message.

Before any route, in this order: the Host check against DNS rebinding, the Origin gate and
CORS, the optional API key (`security.py`), then the request-body cap and deadline
(`limits.py`). `GET /openapi.json` describes every route (`openapi.py`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ollamapy.scheduler import Scheduler
from ollamapy.server import anthropic, inference, models, openai, openapi, registry, responses
from ollamapy.server.errors import APIError
from ollamapy.server.limits import BodyLimit
from ollamapy.server.security import (
    BUILTIN_ORIGINS,
    ApiKeyGuard,
    HostGuard,
    OriginGuard,
    Origins,
    binds_loopback,
)
from ollamapy.server.state import State
from ollamapy.server.streaming import error_response
from ollamapy.settings import Settings
from ollamapy.store import Store, StoreError

log = logging.getLogger(__name__)


async def root(request: Request) -> Response:
    return PlainTextResponse("Ollama is running")


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi.build())


ROUTES = [
    Route("/", root, methods=["GET", "HEAD"]),
    Route("/api/version", models.version, methods=["GET", "HEAD"]),
    Route("/api/status", models.status, methods=["GET"]),
    Route("/api/generate", inference.generate, methods=["POST"]),
    Route("/api/chat", inference.chat, methods=["POST"]),
    Route("/api/embed", inference.embed, methods=["POST"]),
    Route("/api/embeddings", inference.embeddings, methods=["POST"]),
    Route("/api/tokenize", inference.tokenize, methods=["POST"]),
    Route("/api/detokenize", inference.detokenize, methods=["POST"]),
    Route("/api/tags", models.tags, methods=["GET", "HEAD"]),
    Route("/api/show", models.show, methods=["POST"]),
    Route("/api/create", models.create, methods=["POST"]),
    Route("/api/blobs/{digest}", models.head_blob, methods=["HEAD"]),
    Route("/api/blobs/{digest}", models.post_blob, methods=["POST"]),
    Route("/api/copy", models.copy, methods=["POST"]),
    Route("/api/delete", models.delete, methods=["DELETE"]),
    Route("/api/pull", registry.pull, methods=["POST"]),
    Route("/api/push", registry.push, methods=["POST"]),
    Route("/api/ps", models.ps, methods=["GET"]),
    Route("/v1/chat/completions", openai.chat_completions, methods=["POST"]),
    Route("/v1/completions", openai.completions, methods=["POST"]),
    Route("/v1/responses", responses.responses, methods=["POST"]),
    Route("/v1/embeddings", openai.embeddings, methods=["POST"]),
    Route("/v1/models", openai.list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", openai.retrieve_model, methods=["GET"]),
    Route("/v1/messages", anthropic.messages, methods=["POST"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
]


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return error_response(exc.status, exc.message, exc.headers)


async def _store_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StoreError)
    return error_response(exc.status, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        if request.method in ("HEAD", "POST") and request.url.path.startswith("/api/blobs/"):
            # a "digest" holding a slash (sha256:../../etc/passwd, or %2F decoded) matches no
            # route; it is refused like every other malformed digest (hardening.md §7 item 1)
            return error_response(400, "invalid digest format")
        return PlainTextResponse("404 page not found", status_code=404)
    if exc.status_code == 405:
        return PlainTextResponse("405 method not allowed", status_code=405)
    return error_response(exc.status_code, str(exc.detail))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path)
    return error_response(500, str(exc) or type(exc).__name__)


def create_app(settings: Settings, scheduler: Scheduler | None = None) -> Starlette:
    store = Store(settings.models)
    state = State(settings, store, scheduler or Scheduler(settings))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        removed = store.clean_temporary()  # leftovers of a writer killed mid-write
        if removed:
            log.info("removed %d stale temporary files from %s", removed, settings.models)
        if not settings.noprune:  # as Ollama's start: blobs no manifest names, an hour old
            pruned = store.prune_blobs()
            if pruned:
                log.info("pruned %d unreferenced blobs from %s", pruned, settings.models)
        state.scheduler.start()
        try:
            yield
        finally:
            state.close()

    guards = [  # outermost first
        Middleware(HostGuard, loopback=binds_loopback(settings.host.host)),
        Middleware(OriginGuard, origins=Origins((*settings.origins, *BUILTIN_ORIGINS))),
        Middleware(ApiKeyGuard, key=settings.api_key),
        Middleware(BodyLimit, max_body=settings.max_body_bytes,
                   max_blob=settings.max_blob_bytes, timeout=settings.body_timeout),
    ]
    app = Starlette(routes=ROUTES, middleware=guards, lifespan=lifespan, exception_handlers={
        APIError: _api_error, StoreError: _store_error, HTTPException: _http_error,
        Exception: _unexpected,
    })
    app.state.ollamapy = state
    return app
