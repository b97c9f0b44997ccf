"""One stored model, gathered from its manifest: what a runner loads and what /api/show prints.

Layers are read as Ollama's GetModel reads them (ollama:server/images.go): the model layer
gives the GGUF path and the parent model (`from`), a template layer (or the legacy `prompt`)
the template, params the options object, messages the message list, and every license layer
one license. A safetensors model has one tensor or json layer per file of its Hugging Face
folder instead; `link_folder` lays those blobs out again as a folder a loader can open.
Small layers are read whole (capped) and re-hashed, so a corrupt blob is an error, not data;
a weights blob that is missing is an error naming its digest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ollamapy.store.blobs import BlobStore
from ollamapy.store.errors import StoreError
from ollamapy.store.manifest import (
    MEDIA_TYPE_ADAPTER,
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
    Manifest,
    is_relative_file_path,
)
from ollamapy.store.names import Name

MAX_TEXT_LAYER_BYTES = 64 * 1024 * 1024  # templates and licenses are KiBs; messages may hold images


@dataclass(frozen=True, slots=True)
class Model:
    name: Name  # as stored
    manifest: Manifest
    digest: str  # sha256 hex of the manifest file
    modified_ns: int
    config: ImageConfig
    model_path: Path | None  # the GGUF blob; None for a safetensors model
    projector_paths: tuple[Path, ...]
    adapter_paths: tuple[Path, ...]
    files: Mapping[str, Path]  # safetensors folder: relative file path → blob
    template: str | None  # None: the model has no template layer
    system: str | None
    params: Mapping[str, Any]  # the params layer: option name → JSON value
    messages: tuple[Mapping[str, Any], ...]
    licenses: tuple[str, ...]
    parent_model: str  # `from` of the weights layer

    @property
    def format(self) -> str:
        if self.config.model_format:
            return self.config.model_format
        return "gguf" if self.model_path is not None else "safetensors" if self.files else ""

    @property
    def short_name(self) -> str:
        return self.name.display_shortest()

    @property
    def size(self) -> int:
        return self.manifest.size

    @property
    def modified_at(self) -> datetime:
        return datetime.fromtimestamp(self.modified_ns / 1e9).astimezone()

    def link_folder(self, dest: Path) -> Path:
        """Recreate the safetensors folder under dest as symlinks to the blobs."""
        if not self.files:
            raise StoreError(f"{self.short_name} is not a safetensors model")
        dest = Path(dest)
        base = dest.resolve()
        for rel, blob in self.files.items():
            target = dest.joinpath(*rel.split("/"))
            # layer names were checked when the manifest was parsed; check the result again
            # (the folder holding the link, not the link, which points into blobs/)
            if not is_relative_file_path(rel) or \
                    not target.parent.resolve().is_relative_to(base):
                raise StoreError(f"layer name {rel!r} leaves the model folder")
            if target.is_symlink() and target.readlink() == blob:
                continue  # laid out by an earlier request
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.exists():
                target.unlink()
            target.symlink_to(blob)
        return dest

    @classmethod
    def from_manifest(cls, name: Name, manifest: Manifest, digest: str, modified_ns: int,
                      config: ImageConfig, blobs: BlobStore) -> Model:
        def text(digest: str) -> str:
            return blobs.read_bytes(digest, MAX_TEXT_LAYER_BYTES).decode("utf-8", "replace")

        def parsed_json(digest: str, kind: type, what: str) -> Any:
            try:
                value = json.loads(blobs.read_bytes(digest, MAX_TEXT_LAYER_BYTES))
            except (ValueError, RecursionError):
                value = None
            if not isinstance(value, kind):
                raise StoreError(f"{name.display_shortest()}: bad {what} layer {digest}")
            return value

        def weights(digest: str) -> Path:
            # opened only when the model loads: a missing blob is named here, by its digest,
            # not later as an OSError that shows the client a server path
            path = blobs.path(digest)
            if not path.is_file():
                raise StoreError(f"{name.display_shortest()}: blob {digest} is missing from the "
                                 "model store; pull or create the model again")
            return path

        model_path, parent = None, ""
        projectors, adapters, licenses = [], [], []
        files: dict[str, Path] = {}
        template = system = None
        params: dict[str, Any] = {}
        messages: list[Any] = []
        for layer in manifest.layers:
            kind = layer.media_type
            if kind == MEDIA_TYPE_MODEL:
                model_path, parent = weights(layer.digest), layer.from_
            elif kind == MEDIA_TYPE_PROJECTOR:
                projectors.append(weights(layer.digest))
            elif kind == MEDIA_TYPE_ADAPTER:
                adapters.append(weights(layer.digest))
            elif kind in (MEDIA_TYPE_TENSOR, MEDIA_TYPE_JSON):
                if not layer.name:
                    raise StoreError(f"{name.display_shortest()}: {kind} layer without a name")
                files[layer.name] = weights(layer.digest)
                parent = parent or layer.from_
            elif kind in (MEDIA_TYPE_TEMPLATE, MEDIA_TYPE_PROMPT):
                template = text(layer.digest)
            elif kind == MEDIA_TYPE_SYSTEM:
                system = text(layer.digest)
            elif kind == MEDIA_TYPE_PARAMS:
                params = parsed_json(layer.digest, dict, "params")
            elif kind == MEDIA_TYPE_MESSAGES:
                messages = parsed_json(layer.digest, list, "messages")
            elif kind == MEDIA_TYPE_LICENSE:
                licenses.append(text(layer.digest))
            # other media types (draft, the deprecated embed, …) are not ours to use
        return cls(name=name, manifest=manifest, digest=digest, modified_ns=modified_ns,
                   config=config, model_path=model_path, projector_paths=tuple(projectors),
                   adapter_paths=tuple(adapters), files=files, template=template, system=system,
                   params=params, messages=tuple(m for m in messages if isinstance(m, dict)),
                   licenses=tuple(licenses), parent_model=parent)
