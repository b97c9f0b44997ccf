"""Ollama's on-disk model store (`OLLAMA_MODELS`): names, blobs, manifests, Modelfiles, create.

Byte-compatible with a real Ollama's `~/.ollama/models`, and free of torch: the server lists,
shows, copies, deletes and creates models without loading an inference stack.

    names.py      model-name grammar and defaults       digests.py   the digest → path gate
    atomic.py     temp → fsync → rename writes          blobs.py     content-addressed blobs
    goformat.py   Go's JSON/fmt spellings               manifest.py  manifests, config blob
    model.py      one model's layers, read              store.py     list/find/copy/delete/GC
    modelinfo.py  weights headers → config fields       modelfile.py Modelfile read/write
    create.py     /api/create as a progress stream      errors.py    exceptions with HTTP status
    registry*.py  pull and push over the OCI distribution protocol: registry.py (names → a
                  registry, limits), _http (one conversation, redirects checked), _auth (bearer
                  tokens, realm on the registry's host), _body (capped reads), _partial
                  (resumable partial files), _download (parallel ranged parts), _pull, _push
"""

from ollamapy.store.blobs import BlobStore, BlobWriter
from ollamapy.store.create import create_model
from ollamapy.store.digests import parse_digest
from ollamapy.store.errors import (
    BlobNotFoundError,
    CreateError,
    DigestMismatchError,
    DiskFullError,
    InvalidDigestError,
    InvalidNameError,
    ManifestError,
    ModelfileError,
    ModelNotFoundError,
    StoreError,
)
from ollamapy.store.manifest import ImageConfig, Layer, Manifest
from ollamapy.store.model import Model
from ollamapy.store.modelfile import (
    Modelfile,
    format_parameters,
    parse_modelfile,
    render_modelfile,
)
from ollamapy.store.names import Name
from ollamapy.store.store import ModelEntry, Store

__all__ = [
    "BlobNotFoundError", "BlobStore", "BlobWriter", "CreateError", "DigestMismatchError",
    "DiskFullError",
    "ImageConfig", "InvalidDigestError", "InvalidNameError", "Layer", "Manifest",
    "ManifestError", "Model", "ModelEntry", "ModelNotFoundError", "Modelfile", "ModelfileError",
    "Name", "Store", "StoreError", "create_model", "format_parameters", "parse_digest",
    "parse_modelfile", "render_modelfile",
]
