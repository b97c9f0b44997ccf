"""The server side of `/api/create` (reference §8.4), independent of HTTP.

`create_model` checks the whole request first and raises a `StoreError` (with Ollama's text
and status) before anything streams; it then returns an iterator of Ollama's progress objects:

    {"status": "parsing GGUF"}                                  once per GGUF file
    {"status": "using existing layer sha256:…"}                 or "creating new layer …",
    …                                                           one per layer, in order
    {"status": "writing manifest"}
    {"status": "success"}

Every uploaded GGUF's header is parsed (bounds-checked) during that first check, so a
malformed one is a 400 naming the defect even for a streaming request. Errors met while
iterating (a full disk, a blob deleted underneath) are raised from the iterator; the
manifest is written last and atomically, so a failed or abandoned create leaves no model
behind (only content-addressed blobs, which a later create may reuse).

Base layers come from `from_` (an existing model: every layer reused by reference with `from`
set to its short name, its config inherited; a model that is not in the store is pulled first,
its pull progress streamed ahead of the create's, as Ollama does) or from `files` (blobs
uploaded beforehand with POST /api/blobs): one GGUF becomes the model layer, or a Hugging Face
safetensors folder becomes one tensor/json layer per file, named by its relative path. Then,
as Ollama does: `template` and `system` replace their layers, each `license` adds one,
`parameters` are merged over the inherited ones (the request wins) and `messages` replace the
old ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ollamapy.loading.gguf import GGUFError
from ollamapy.store.digests import digest_of, parse_digest
from ollamapy.store.errors import (
    CreateError,
    InvalidDigestError,
    InvalidNameError,
    ModelNotFoundError,
    StoreError,
)
from ollamapy.store.goformat import json_bytes, json_line, sorted_map
from ollamapy.store.manifest import (
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_JSON,
    MEDIA_TYPE_LICENSE,
    MEDIA_TYPE_MESSAGES,
    MEDIA_TYPE_MODEL,
    MEDIA_TYPE_PARAMS,
    MEDIA_TYPE_PROJECTOR,
    MEDIA_TYPE_PROMPT,
    MEDIA_TYPE_SYSTEM,
    MEDIA_TYPE_TEMPLATE,
    MEDIA_TYPE_TENSOR,
    ImageConfig,
    Layer,
    Manifest,
    is_relative_file_path,
)
from ollamapy.store.modelinfo import (
    WeightsInfo,
    describe_gguf,
    describe_safetensors,
    human_number,
    is_gguf,
    safetensors_header,
)
from ollamapy.store.names import Name, parse_name
from ollamapy.store.registry_pull import pull_model
from ollamapy.store.store import Store

MAX_FILES = 1024  # Ollama's maxCreateFiles
MAX_JSON_FILE_BYTES = 64 * 1024 * 1024  # config.json and friends (Ollama's metadata cap)
ERR_NEITHER = "neither 'from' or 'files' was specified"
ERR_NOT_GGUF = "supplied file was not in GGUF format"
Progress = dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Request:
    name: Name
    base: Name | None  # the stored name of `from_`
    from_: Name | None  # `from_` as asked for
    pull: Iterator[Progress] | None  # pulls `from_` first when it is not in the store
    files: Mapping[str, str]  # relative path → canonical digest
    kind: str  # "from", "gguf" or "safetensors"
    gguf: Mapping[str, WeightsInfo]  # relative path → its header, read while checking
    template: str | None
    system: str | None
    parameters: Mapping[str, Any]
    messages: tuple[dict[str, Any], ...]
    licenses: tuple[str, ...]
    requires: str | None


def create_model(store: Store, name: str | Name, *, from_: str | None = None,
                 files: Mapping[str, str] | None = None, template: str | None = None,
                 system: str | None = None, parameters: Mapping[str, Any] | None = None,
                 messages: Sequence[Mapping[str, Any]] | None = None,
                 license: str | Sequence[str] | None = None,
                 adapters: Mapping[str, str] | None = None, quantize: str | None = None,
                 requires: str | None = None, insecure: bool = False) -> Iterator[Progress]:
    """Validate the request (raising StoreError subclasses) and return its progress stream.

    `insecure` lets the pull of a missing `from_` use plain http; Ollama's /api/create has no
    such field (its pull is always https), and ollamapy's HTTP layer never sets it."""
    if adapters:
        raise CreateError("ADAPTER is not supported by ollamapy")
    if quantize:
        raise CreateError("quantization is not supported by ollamapy")
    target = parse_name(name)  # InvalidNameError: 400 "invalid model name"
    store.manifest_path(target)  # and so is a name no directory can hold, before streaming
    checked_files = _check_files(store, files or {})
    base: Name | None = None
    wanted: Name | None = None
    pull: Iterator[Progress] | None = None
    gguf: dict[str, WeightsInfo] = {}
    if from_:
        try:
            wanted = Name.parse(from_)
        except InvalidNameError:
            raise CreateError("invalid model name") from None
        base = store.find(wanted)
        if base is None:  # the name and its registry are checked here, before streaming
            pull = pull_model(store, from_, insecure=insecure)
        kind = "from"
    elif checked_files:
        kind = _files_kind(store, checked_files)
        if kind == "gguf":
            gguf = {path: _describe(store, path, digest) for path, digest
                    in sorted(checked_files.items())}
    else:
        raise CreateError(ERR_NEITHER)
    request = _Request(name=target, base=base, from_=wanted, pull=pull, files=checked_files,
                       kind=kind, gguf=gguf, template=template or None, system=system or None,
                       parameters=_check_parameters(parameters),
                       messages=_check_messages(messages), licenses=_check_license(license),
                       requires=requires or None)
    return _create(store, request)


# -- validation (before anything streams) -------------------------------------------------


def _check_files(store: Store, files: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(files, Mapping):
        raise CreateError("files must map file names to digests")
    if len(files) > MAX_FILES:
        raise CreateError(f"too many files: {len(files)} exceeds maximum {MAX_FILES}")
    checked = {}
    for path, digest in files.items():
        if not isinstance(path, str) or not is_relative_file_path(path):
            raise CreateError("file path must be relative")  # Ollama's exact text
        if not digest:
            raise CreateError("invalid digest format")
        try:
            checked[path] = parse_digest(digest)
        except InvalidDigestError:
            raise CreateError(f"invalid digest for {path}: invalid digest format") from None
        if not store.blobs.exists(checked[path]):
            raise CreateError(f"blob {checked[path]} for {path} is not in the store: upload it "
                              f"with POST /api/blobs/{checked[path]} first")
    return checked


def _files_kind(store: Store, files: Mapping[str, str]) -> str:
    safetensors = [p for p in files if p.endswith(".safetensors")]
    if safetensors:
        if any(p.endswith(".gguf") for p in files):
            raise CreateError("mixed model file types: found both gguf and safetensors inputs")
        if "config.json" not in files:
            raise CreateError("safetensors files need the folder's config.json")
        return "safetensors"
    for path, digest in files.items():
        try:
            gguf = is_gguf(store.blobs.path(digest))
        except FileNotFoundError:  # collected by a concurrent delete since it was checked
            raise CreateError(f"blob {digest} for {path} is not in the store") from None
        if not gguf:
            raise CreateError(ERR_NOT_GGUF if path.endswith(".gguf") or len(files) == 1
                              else f"{ERR_NOT_GGUF}: {path}")
    return "gguf"


def _describe(store: Store, path: str, digest: str) -> WeightsInfo:
    try:
        info = describe_gguf(store.blobs.path(digest))
    except GGUFError as e:
        raise CreateError(f"{path}: {e}") from None
    except FileNotFoundError:  # deleted since it was checked
        raise CreateError(f"blob {digest} for {path} is not in the store") from None
    if info.unsupported:  # refused before anything is stored, as a malformed file is
        raise CreateError(f"{path}: {info.unsupported}")
    return info


def _check_parameters(parameters: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if parameters is None:
        return {}
    if not isinstance(parameters, Mapping):
        raise CreateError("parameters must be an object")
    try:
        json_bytes(dict(parameters))
    except (TypeError, ValueError) as e:
        raise CreateError(f"invalid parameters: {e}") from None
    return dict(parameters)


def _check_messages(messages: Sequence[Mapping[str, Any]] | None) -> tuple[dict[str, Any], ...]:
    checked = []
    for message in messages or ():
        if (not isinstance(message, Mapping) or not isinstance(message.get("role"), str)
                or not isinstance(message.get("content", ""), str)):
            raise CreateError("invalid message: each needs a string role and content")
        # api.Message's field order; empty optional fields are omitted like Go's omitempty
        out = {"role": message["role"], "content": message.get("content", "")}
        out.update({k: v for k, v in message.items() if k not in out and v})
        try:
            json_bytes(out)
        except (TypeError, ValueError) as e:
            raise CreateError(f"invalid message: {e}") from None
        checked.append(out)
    return tuple(checked)


def _check_license(license: str | Sequence[str] | None) -> tuple[str, ...]:
    if license is None:
        return ()
    if isinstance(license, str):
        return (license,) if license else ()
    if isinstance(license, Sequence) and all(isinstance(x, str) for x in license):
        return tuple(license)
    raise CreateError("license must be a string or a list of strings")


# -- the stream ------------------------------------------------------------------------------


def _create(store: Store, request: _Request) -> Iterator[Progress]:
    statuses: list[str] = []  # per layer, reported together once all layers exist (as Ollama)
    if request.kind == "from":
        base = request.base
        if request.pull is not None:
            yield from request.pull
            assert request.from_ is not None
            base = store.find(request.from_)
            if base is None:  # deleted between the pull and now
                raise ModelNotFoundError(request.from_.display_shortest())
        assert base is not None
        layers, config = _from_model(store, base, statuses)
    elif request.kind == "gguf":
        layers, config = [], ImageConfig()
        for path in sorted(request.files):
            yield {"status": "parsing GGUF"}
            layer, config = _gguf_layer(store, request.files[path], request.gguf[path],
                                        layers, config)
            layers.append(layer)
            statuses.append(f"using existing layer {layer.digest}")
        if not any(layer.media_type == MEDIA_TYPE_MODEL for layer in layers):
            raise CreateError(f"{ERR_NOT_GGUF}: no model among the GGUF files")
    else:
        # read before the first status, so that a malformed folder is a 400 (as a malformed
        # GGUF is), not a 200 whose stream ends in an error
        layers, config, skipped = _safetensors_layers(store, request.files)
        yield {"status": "parsing safetensors"}
        for path in skipped:
            yield {"status": f"skipping {path}: not a safetensors or json file"}
        statuses += [f"using existing layer {layer.digest}" for layer in layers]

    layers = _overlay(store, request, layers, statuses)
    if request.requires:
        config = replace(config, requires=request.requires)
    config_layer, _ = _put(store, config.to_json(), MEDIA_TYPE_CONFIG)
    for status in statuses:
        yield {"status": status}

    yield {"status": "writing manifest"}
    manifest = Manifest(config=config_layer, layers=tuple(layers))
    with store.lock:
        old_digests = _digests_of(store, request.name)
        store.write_manifest(request.name, manifest)
        # the replaced version's layers that nothing uses any more (Ollama's
        # pruneOldManifestLayers)
        store.remove_unreferenced(old_digests - manifest.digests)
    yield {"status": "success"}


def _digests_of(store: Store, name: Name) -> frozenset[str]:
    """The blobs the version about to be replaced references (none if absent or unreadable)."""
    try:
        return store.manifest(name).digests
    except StoreError:
        return frozenset()


def _put(store: Store, data: bytes, media_type: str) -> tuple[Layer, str]:
    digest = digest_of(data)
    with store.blobs.writer(digest) as writer:
        writer.write(data)
        created = writer.commit()
    verb = "creating new layer" if created else "using existing layer"
    return Layer(media_type, digest, len(data)), f"{verb} {digest}"


def _from_model(store: Store, base: Name, statuses: list[str]) -> tuple[list[Layer], ImageConfig]:
    manifest = store.manifest(base)
    layers = []
    for layer in manifest.layers:
        # sizes are taken from the blobs, as Ollama's NewLayerFromLayer does; a missing blob
        # fails here instead of producing a model that cannot load
        layers.append(Layer(layer.media_type, layer.digest, store.blobs.size(layer.digest),
                            from_=base.display_shortest(), name=layer.name))
        statuses.append(f"using existing layer {layer.digest}")
    return layers, store.config(manifest)


def _gguf_layer(store: Store, digest: str, info: WeightsInfo, layers: list[Layer],
                config: ImageConfig) -> tuple[Layer, ImageConfig]:
    size = store.blobs.size(digest)
    if info.kind == "adapter":
        raise CreateError("ADAPTER is not supported by ollamapy")
    if info.kind == "projector":
        return Layer(MEDIA_TYPE_PROJECTOR, digest, size), config
    if any(layer.media_type == MEDIA_TYPE_MODEL for layer in layers):
        raise CreateError("only one GGUF model file is supported by ollamapy (split GGUFs are "
                          "not)")
    config = ImageConfig(model_format="gguf", model_family=info.family,
                         model_families=(info.family,), model_type=info.parameter_size,
                         file_type=info.file_type, capabilities=info.capabilities,
                         context_length=info.context_length,
                         embedding_length=info.embedding_length)
    return Layer(MEDIA_TYPE_MODEL, digest, size), config


def _safetensors_layers(store: Store, files: Mapping[str, str]
                        ) -> tuple[list[Layer], ImageConfig, list[str]]:
    try:
        config_json = json.loads(store.blobs.read_bytes(files["config.json"],
                                                        MAX_JSON_FILE_BYTES))
    except (ValueError, RecursionError):
        config_json = None
    if not isinstance(config_json, dict):
        raise CreateError("config.json is not a JSON object")
    headers = []
    for path in sorted(p for p in files if p.endswith(".safetensors")):
        try:
            headers.append(safetensors_header(store.blobs.path(files[path]), path))
        except FileNotFoundError:  # collected by a concurrent delete since it was checked
            raise CreateError(f"blob {files[path]} for {path} is not in the store") from None
    info = describe_safetensors(config_json, headers)
    if info.unsupported:
        raise CreateError(f"config.json: {info.unsupported}")
    layers, skipped = [], []
    for path in sorted(files):
        if path.endswith(".safetensors"):
            media_type = MEDIA_TYPE_TENSOR
        elif path.endswith(".json"):
            media_type = MEDIA_TYPE_JSON
        else:
            skipped.append(path)
            continue
        digest = files[path]
        layers.append(Layer(media_type, digest, store.blobs.size(digest), name=path))
    config = ImageConfig(model_format="safetensors", model_family=info.family,
                         model_families=(info.family,) if info.family else (),
                         model_type=human_number(info.parameter_count),
                         file_type=info.file_type, capabilities=info.capabilities,
                         context_length=info.context_length,
                         embedding_length=info.embedding_length)
    return layers, config, skipped


def _overlay(store: Store, request: _Request, layers: list[Layer],
             statuses: list[str]) -> list[Layer]:
    """Ollama's ApplyModelfileLayers: replace, append and merge the Modelfile-level layers."""

    def add(data: bytes, media_type: str) -> None:
        layer, status = _put(store, data, media_type)
        layers.append(layer)
        statuses.append(status)

    def drop(*media_types: str) -> None:
        kept = [(la, st) for la, st in zip(layers, statuses, strict=True)
                if la.media_type not in media_types]
        layers[:] = [la for la, _ in kept]
        statuses[:] = [st for _, st in kept]

    if request.template:
        drop(MEDIA_TYPE_TEMPLATE, MEDIA_TYPE_PROMPT)
        add(request.template.encode("utf-8"), MEDIA_TYPE_TEMPLATE)
    if request.system:
        drop(MEDIA_TYPE_SYSTEM)
        add(request.system.encode("utf-8"), MEDIA_TYPE_SYSTEM)
    for text in request.licenses:
        add(text.encode("utf-8"), MEDIA_TYPE_LICENSE)
    if request.parameters:
        merged: dict[str, Any] = {}
        for layer in layers:
            if layer.media_type == MEDIA_TYPE_PARAMS:
                inherited = _read_json_object(store, layer.digest)
                for key, value in inherited.items():
                    merged.setdefault(key, value)
        merged.update(request.parameters)
        drop(MEDIA_TYPE_PARAMS)
        add(json_line(sorted_map(merged)), MEDIA_TYPE_PARAMS)
    if request.messages:
        drop(MEDIA_TYPE_MESSAGES)
        add(json_line(list(request.messages)), MEDIA_TYPE_MESSAGES)
    return layers


def _read_json_object(store: Store, digest: str) -> dict[str, Any]:
    try:
        value = json.loads(store.blobs.read_bytes(digest, MAX_JSON_FILE_BYTES))
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise StoreError(f"failed to decode inherited parameters: {digest} is not a JSON object")
    return value
