"""Handlers that manage models: /api/tags, /api/show, /api/create, /api/blobs/:digest,
/api/copy, /api/delete, /api/ps.

They parse the request, call the store (`ollamapy.store`) or the scheduler, and shape Ollama's
JSON (../shared/reference/ollama-api.md §3.5–§3.13, §9). Store errors carry their own status
and Ollama's text; where an endpoint words an error its own way, it is rewritten here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ollamapy import __version__
from ollamapy.server import schemas
from ollamapy.server.describe import model_facts
from ollamapy.server.errors import APIError, bad_request, model_not_found
from ollamapy.server.state import State
from ollamapy.server.streaming import OllamaJSON, local_time, respond
from ollamapy.store import (
    DiskFullError,
    InvalidNameError,
    ModelNotFoundError,
    Name,
    StoreError,
    create_model,
    format_parameters,
    parse_digest,
    render_modelfile,
)
from ollamapy.text.gotemplate import GoTemplateError, parse_go_template


def _state(request: Request) -> State:
    return request.app.state.ollamapy


# The Ollama release whose API this server implements (../shared/reference/ollama-api.md: Ollama
# at fb30760, right after v0.33.0-rc2, whose /api/version answers 0.33.0). Clients gate features
# on it; ollamapy's own version is the "ollamapy" field.
OLLAMA_VERSION = "0.33.0"


async def version(request: Request) -> Response:
    return OllamaJSON({"version": OLLAMA_VERSION, "ollamapy": __version__})


async def status(request: Request) -> Response:
    """Ollama's feature flags: its cloud models (proxied to ollama.com) are off here, as no
    request ever leaves this machine."""
    return OllamaJSON({"cloud": {"disabled": True, "source": "none"}})


# -- /api/tags and /api/ps ------------------------------------------------------------------


async def tags(request: Request) -> Response:
    state = _state(request)
    entries = await run_in_threadpool(state.store.list_models)
    models = []
    for e in entries:
        c = e.config
        family = c.model_family
        models.append({
            "name": e.name.display_shortest(), "model": e.name.display_shortest(),
            "modified_at": e.modified_at.isoformat(), "size": e.size, "digest": e.digest,
            "details": {"parent_model": "", "format": c.model_format or "gguf",
                        "family": family, "families": list(c.model_families or [family]),
                        "parameter_size": c.model_type, "quantization_level": c.file_type},
            **({"capabilities": list(c.capabilities)} if c.capabilities else {}),
        })
    return OllamaJSON({"models": models})


async def ps(request: Request) -> Response:
    state = _state(request)
    models = []
    for loaded in state.scheduler.running():
        runner, spec = loaded.runner, loaded.spec
        try:
            details = model_facts(state.store.model(spec.name)).details
        except StoreError:  # deleted while loaded: still running, so still listed
            details = {}
        size = runner.size
        models.append({"name": spec.name, "model": spec.name, "size": size,
                       "digest": spec.digest, "details": details,
                       "expires_at": local_time(loaded.expires_at),
                       "size_vram": size if runner.on_gpu else 0,
                       "context_length": runner.num_ctx})
    return OllamaJSON({"models": models})


# -- /api/show ------------------------------------------------------------------------------


async def show(request: Request) -> Response:
    state = _state(request)
    fields = schemas.decode(await request.body(), schemas.SHOW, "ShowRequest")
    raw = schemas.require_model(fields, "name")
    try:
        Name.parse(raw)
    except InvalidNameError:
        raise bad_request("invalid model name") from None
    try:
        model = await run_in_threadpool(state.store.model, raw)
    except ModelNotFoundError:
        raise model_not_found(raw) from None
    verbose = bool(fields.get("verbose"))
    facts = await run_in_threadpool(model_facts, model, verbose)
    body: dict[str, Any] = {
        "modelfile": render_modelfile(model, system=fields.get("system"),
                                      options=fields.get("options")),
        "parameters": format_parameters({**model.params, **(fields.get("options") or {})}),
        "template": facts.template,
        "details": facts.details,
        "model_info": facts.weights.model_info,
        "capabilities": list(facts.capabilities),
        "modified_at": model.modified_at.isoformat(),
    }
    system = fields.get("system") or model.system
    if system:
        body["system"] = system
    if model.licenses:
        body["license"] = "\n".join(model.licenses)
    if model.messages:
        body["messages"] = list(model.messages)
    if facts.weights.tensors:
        body["tensors"] = list(facts.weights.tensors)
    return OllamaJSON(body)


# -- /api/create ----------------------------------------------------------------------------


async def create(request: Request) -> Response:
    state = _state(request)
    fields = schemas.decode(await request.body(), schemas.CREATE, "CreateRequest")
    name = fields.get("model") or fields.get("name") or ""
    if "template" in fields:
        try:
            parse_go_template(fields["template"])
        except GoTemplateError as e:
            raise bad_request(f"template error: {e}") from None
    messages = schemas.messages(fields.get("messages", []), "CreateRequest")
    license_ = fields.get("license")
    if license_ is not None and not (isinstance(license_, str) or (
            isinstance(license_, list) and all(isinstance(x, str) for x in license_))):
        raise bad_request("json: cannot unmarshal license: must be a string or an array of "
                          "strings")
    progress: Iterator[dict[str, Any]] = await run_in_threadpool(
        lambda: create_model(
            state.store, name, from_=fields.get("from"), files=fields.get("files"),
            template=fields.get("template"), system=fields.get("system"),
            parameters=fields.get("parameters"), messages=messages or None, license=license_,
            adapters=fields.get("adapters"),
            quantize=fields.get("quantize") or fields.get("quantization")))

    async def chunks() -> AsyncIterator[dict[str, Any]]:
        async for status in iterate_in_threadpool(progress):
            yield status

    return await respond(chunks(), stream=fields.get("stream", True))


# -- /api/blobs/:digest ---------------------------------------------------------------------


def _digest(request: Request) -> str:
    try:
        return parse_digest(request.path_params["digest"])
    except ValueError:
        raise bad_request("invalid digest format") from None


async def head_blob(request: Request) -> Response:
    digest = _digest(request)
    if _state(request).store.blobs.exists(digest):
        return Response(status_code=200)
    raise APIError(404, f'blob "{digest}" not found')


async def post_blob(request: Request) -> Response:
    """The request body streams to a temporary file; it becomes the blob only if its
    sha256 is the digest in the path. A full disk is a 507 (DiskFullError)."""
    digest = _digest(request)
    body = request.stream()
    try:
        with _state(request).store.blobs.writer(digest) as writer:  # aborted unless committed
            async for chunk in body:
                if chunk:
                    await run_in_threadpool(writer.write, chunk)
            created = await run_in_threadpool(writer.commit)
    except DiskFullError:
        # read (and drop) the rest of the body: a client still sending would otherwise have
        # its connection reset and never see the answer
        async for _ in body:
            pass
        raise
    return Response(status_code=201 if created else 200)


# -- /api/copy and /api/delete --------------------------------------------------------------


async def copy(request: Request) -> Response:
    state = _state(request)
    fields = schemas.decode(await request.body(), schemas.COPY, "CopyRequest")
    source, destination = fields.get("source", ""), fields.get("destination", "")
    for role, value in (("source", source), ("destination", destination)):
        try:
            Name.parse(value)
        except InvalidNameError:
            raise bad_request(f'{role} "{value}" is invalid') from None
    await run_in_threadpool(state.store.copy, source, destination)
    return Response(status_code=200)


async def delete(request: Request) -> Response:
    state = _state(request)
    fields = schemas.decode(await request.body(), schemas.DELETE, "DeleteRequest")
    raw = schemas.require_model(fields, "name")
    try:
        Name.parse(raw)
    except InvalidNameError:
        raise bad_request(f'name "{raw}" is invalid') from None
    try:
        stored = await run_in_threadpool(state.store.delete, raw)
    except ModelNotFoundError:
        raise model_not_found(raw) from None
    # a deleted model can no longer be asked for: free its memory now rather than at the end
    # of its keep_alive (once the requests it is serving have finished; Ollama's `ollama rm`
    # asks for this unload itself, here any client gets it)
    state.scheduler.unload(stored.display_shortest())
    return Response(status_code=200)
