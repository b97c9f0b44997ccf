"""Manifests (a model's table of layers) and the config blob, as Ollama writes them.

A manifest is untrusted input: it comes from disk (possibly written by another program) or
from a registry. `Manifest.parse` caps its size, validates every digest with `parse_digest`
(so `sha256:../../etc/passwd` is refused here, before anything can become a path), requires
sizes to be non-negative integers and layer names to be safe relative paths, and ignores keys
it does not know. Encoding follows Go's (see goformat), so a manifest we write hashes like one
Ollama would write for the same layers. Media types: reference §8.3.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ollamapy.store.digests import parse_digest
from ollamapy.store.errors import InvalidDigestError, ManifestError
from ollamapy.store.goformat import json_line

MEDIA_TYPE_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_CONFIG = "application/vnd.docker.container.image.v1+json"

MEDIA_TYPE_MODEL = "application/vnd.ollama.image.model"  # GGUF weights
MEDIA_TYPE_ADAPTER = "application/vnd.ollama.image.adapter"
MEDIA_TYPE_PROJECTOR = "application/vnd.ollama.image.projector"
MEDIA_TYPE_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_TYPE_PROMPT = "application/vnd.ollama.image.prompt"  # legacy name of template
MEDIA_TYPE_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_TYPE_PARAMS = "application/vnd.ollama.image.params"
MEDIA_TYPE_MESSAGES = "application/vnd.ollama.image.messages"
MEDIA_TYPE_LICENSE = "application/vnd.ollama.image.license"
# one file of a Hugging Face safetensors folder per layer, `name` = its relative path
MEDIA_TYPE_TENSOR = "application/vnd.ollama.image.tensor"
MEDIA_TYPE_JSON = "application/vnd.ollama.image.json"

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # real manifests are a few KiB; a bigger one is hostile
MAX_CONFIG_BYTES = 1024 * 1024
_MAX_INT64 = 2**63 - 1


def is_relative_file_path(path: str) -> bool:
    """Go's fs.ValidPath (no empty, '.' or '..' element, no leading or trailing '/') plus
    Ollama's create rule (no '\\' or ':'), and no control characters: a path that stays
    inside whatever directory it is joined to, on any platform."""
    if not path or path == "." or any(c in path for c in "\\:") or not path.isprintable():
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def _int(value: Any, what: str) -> int:
    # JSON true is not a size, and Python's bool is an int
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT64:
        raise ManifestError(f"invalid manifest: {what} must be a non-negative integer")
    return value


def _str(obj: Mapping[str, Any], key: str, what: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise ManifestError(f"invalid manifest: {what}.{key} must be a string")
    return value


@dataclass(frozen=True, slots=True)
class Layer:
    media_type: str
    digest: str  # canonical "sha256:<hex>"
    size: int
    from_: str = ""  # json "from": the model this layer was inherited from (parent_model)
    name: str = ""  # file path inside a safetensors folder

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", parse_digest(self.digest))
        _int(self.size, "layer size")
        if self.name and not is_relative_file_path(self.name):
            raise ManifestError(f"invalid manifest: layer name {self.name!r} is not a "
                                "relative path")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                               "size": self.size}
        if self.from_:
            out["from"] = self.from_
        if self.name:
            out["name"] = self.name
        return out

    @classmethod
    def from_dict(cls, obj: Any, what: str = "layer") -> Layer:
        if not isinstance(obj, Mapping):
            raise ManifestError(f"invalid manifest: {what} must be an object")
        try:
            return cls(media_type=_str(obj, "mediaType", what, ""),
                       digest=obj.get("digest"),  # validated (and canonicalized) in __post_init__
                       size=_int(obj.get("size"), f"{what} size"),
                       from_=_str(obj, "from", what, ""), name=_str(obj, "name", what, ""))
        except InvalidDigestError as e:
            raise ManifestError(f"invalid manifest: {what} digest: invalid digest format") from e


@dataclass(frozen=True, slots=True)
class Manifest:
    config: Layer
    layers: tuple[Layer, ...]
    schema_version: int = 2
    media_type: str = MEDIA_TYPE_MANIFEST

    @property
    def size(self) -> int:
        """What /api/tags reports: every layer plus the config."""
        return self.config.size + sum(layer.size for layer in self.layers)

    @property
    def digests(self) -> frozenset[str]:
        """Every blob this manifest keeps alive."""
        return frozenset([self.config.digest, *(layer.digest for layer in self.layers)])

    def layers_of(self, *media_types: str) -> tuple[Layer, ...]:
        return tuple(layer for layer in self.layers if layer.media_type in media_types)

    def to_json(self) -> bytes:
        return json_line({"schemaVersion": self.schema_version, "mediaType": self.media_type,
                          "config": self.config.to_dict(),
                          "layers": [layer.to_dict() for layer in self.layers]})

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"invalid manifest: larger than {MAX_MANIFEST_BYTES} bytes")
        obj = _load_object(data, "manifest")
        schema = obj.get("schemaVersion", 2)
        if isinstance(schema, bool) or not isinstance(schema, int):
            raise ManifestError("invalid manifest: schemaVersion must be an integer")
        layers = obj.get("layers") or []
        if not isinstance(layers, list):
            raise ManifestError("invalid manifest: layers must be a list")
        return cls(config=Layer.from_dict(obj.get("config"), "config"),
                   layers=tuple(Layer.from_dict(x, f"layer {i}") for i, x in enumerate(layers)),
                   schema_version=schema,
                   media_type=_str(obj, "mediaType", "manifest", MEDIA_TYPE_MANIFEST))


def _load_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as e:  # RecursionError: hostile nesting depth
        raise ManifestError(f"invalid {what}: not JSON ({e.__class__.__name__})") from None
    if not isinstance(obj, dict):
        raise ManifestError(f"invalid {what}: not a JSON object")
    return obj


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """The config blob (Ollama's `model.ConfigV2`); `/api/tags` and `/api/show` details."""

    model_format: str = ""  # "gguf" or "safetensors"
    model_family: str = ""
    model_families: tuple[str, ...] = ()
    model_type: str = ""  # parameter size, e.g. "134.52M"
    file_type: str = ""  # quantization level, e.g. "Q4_K_M"
    renderer: str = ""
    parser: str = ""
    requires: str = ""
    remote_host: str = ""
    remote_model: str = ""
    capabilities: tuple[str, ...] = ()
    context_length: int = 0
    embedding_length: int = 0
    base_name: str = ""
    architecture: str = "amd64"
    os: str = "linux"
    extra: Mapping[str, Any] = field(default_factory=dict)  # unknown keys, kept as read

    # Go writes these only when set (`omitempty`)
    _OMIT_EMPTY = frozenset({"renderer", "parser", "requires", "remote_host", "remote_model",
                             "capabilities", "context_length", "embedding_length", "base_name"})

    def to_json(self) -> bytes:
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name in ImageConfig._OMIT_EMPTY and not value:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return json_line(out)

    @classmethod
    def parse(cls, data: bytes) -> ImageConfig:
        if len(data) > MAX_CONFIG_BYTES:
            raise ManifestError(f"invalid config: larger than {MAX_CONFIG_BYTES} bytes")
        obj = _load_object(data, "config")
        known: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        defaults = {f.name: f.default for f in fields(cls) if f.name != "extra"}
        for key, value in obj.items():
            if key not in defaults:
                extra[key] = value
            elif isinstance(defaults[key], tuple):
                # `null` (Go's nil slice) reads as empty; anything but a list of strings is noise
                if isinstance(value, list) and all(isinstance(v, str) for v in value):
                    known[key] = tuple(value)
            elif isinstance(value, type(defaults[key])) and not isinstance(value, bool):
                known[key] = value
        return cls(**known, extra=extra)
