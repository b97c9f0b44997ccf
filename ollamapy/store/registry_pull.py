"""/api/pull as a stream of Ollama's progress objects (reference §3.11, §8.6):

    {"status": "pulling manifest"}
    {"status": "pulling a80c4f17acd5", "digest": "sha256:…", "total": N, "completed": M}
    …                                                 every layer, then the config blob
    {"status": "verifying sha256 digest"}
    {"status": "writing manifest"}
    {"status": "removing unused layers"}              only when an older version had some
    {"status": "success"}

`completed` is left out while it is 0, and a blob already in the store reports
`completed == total` at once (blobs are shared by every model that names them). The name and
its registry are checked before the stream starts (`invalid model name`, `insecure protocol
http`, 400 where Ollama answers 500); later failures are raised from the iterator, as `pull
model manifest: file does not exist` for an unknown model (404, where Ollama answers 500) or
`digest mismatch, file must be downloaded again: …`.

The order is what makes a pull safe to interrupt: blobs land as `-partial` files (kept for
the next pull), each becomes a blob only once its sha256 matches, and the manifest is written
last, atomically, and only if every blob it names is there, so `/api/tags` never lists a model
that is half pulled. Setting `cancel` (or closing the iterator) stops the downloads.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Generator
from typing import Any

import httpx

from ollamapy.store.errors import ManifestError, StoreError
from ollamapy.store.manifest import MAX_MANIFEST_BYTES, MEDIA_TYPE_MANIFEST, Layer, Manifest
from ollamapy.store.names import Name
from ollamapy.store.registry import MAX_LAYERS, Endpoint, RegistryError, resolve
from ollamapy.store.registry_body import read_capped
from ollamapy.store.registry_download import Transfer, shared_transfer
from ollamapy.store.registry_http import Session
from ollamapy.store.registry_partial import PartialBlob
from ollamapy.store.store import Store

TICK_S = 0.1  # how often a download reports progress (Ollama: every 60 ms)
Progress = dict[str, Any]


def pull_model(store: Store, name: str, *, insecure: bool = False,
               cancel: threading.Event | None = None, prune: bool = True
               ) -> Generator[Progress, None, None]:
    """Check the name (raising StoreError subclasses) and return the pull's progress stream.
    prune: remove the layers an older version of this tag leaves unreferenced (Ollama's
    default; OLLAMA_NOPRUNE keeps them)."""
    parsed, endpoint = resolve(name, insecure)
    store.manifest_path(parsed)  # a name no directory can hold: 400 before anything streams
    return _pull(store, parsed, endpoint, insecure, cancel or threading.Event(), prune)


def _pull(store: Store, name: Name, endpoint: Endpoint, insecure: bool,
          cancel: threading.Event, prune: bool) -> Generator[Progress, None, None]:
    yield {"status": "pulling manifest"}
    manifest = _fetch_manifest(endpoint, insecure)
    blobs = _blobs_of(manifest)
    _check_space(store, blobs)
    fresh = []
    for layer in blobs:
        cached = yield from _download(store, endpoint, insecure, layer, cancel)
        if not cached:
            fresh.append(layer)

    yield {"status": "verifying sha256 digest"}
    for layer in fresh:
        blob = PartialBlob(store.blobs, layer.digest, layer.size)
        with blob.lock:
            if not store.blobs.exists(layer.digest):  # or a concurrent pull published it
                blob.verify(cancel.is_set)

    yield {"status": "writing manifest"}
    with store.lock:
        old = _digests_of(store, name)
        store.write_manifest(name, manifest)  # refuses a manifest naming a missing blob
    unused = old - manifest.digests
    if unused and prune:
        yield {"status": "removing unused layers"}
        store.remove_unreferenced(unused)
    yield {"status": "success"}


def _fetch_manifest(endpoint: Endpoint, insecure: bool) -> Manifest:
    try:
        with Session(endpoint, insecure=insecure) as session, session.open(
                "GET", endpoint.manifest_url(), headers={"Accept": MEDIA_TYPE_MANIFEST}) as r:
            data = read_capped(r, MAX_MANIFEST_BYTES)
        manifest = Manifest.parse(data)  # every digest through parse_digest, sizes checked
    except (RegistryError, ManifestError) as e:
        # a registry without the model is a 404, as a missing local model is, where Ollama
        # answers 500; a refusal by the address policy keeps its 403
        http_status = getattr(e, "http_status", None)
        raise RegistryError(f"pull model manifest: {e}", 404 if http_status == 404 else e.status,
                            http_status=http_status) from None
    except httpx.HTTPError as e:
        raise RegistryError(f"pull model manifest: {e or type(e).__name__}") from None
    if len(manifest.layers) > MAX_LAYERS:
        raise RegistryError(f"pull model manifest: too many layers ({len(manifest.layers)}, "
                            f"at most {MAX_LAYERS})")
    return manifest


def _blobs_of(manifest: Manifest) -> list[Layer]:
    """The layers, then the config, as Ollama fetches them; a digest named twice is fetched
    once, and must not be declared with two sizes."""
    seen: dict[str, Layer] = {}
    for layer in (*manifest.layers, manifest.config):
        first = seen.setdefault(layer.digest, layer)
        if first.size != layer.size:
            raise RegistryError(f"pull model manifest: {layer.digest} is declared with two "
                                f"sizes ({first.size} and {layer.size})")
    return list(seen.values())


def _check_space(store: Store, blobs: list[Layer]) -> None:
    """Refuse a pull that cannot fit before writing any of it (the partial files are sparse,
    so what they already hold is not counted twice)."""
    need = sum(layer.size - PartialBlob(store.blobs, layer.digest, layer.size).completed()
               for layer in blobs if not store.blobs.exists(layer.digest))
    free = shutil.disk_usage(store.blobs.root).free
    if need > free:
        raise RegistryError(f"not enough disk space to pull: {need} more bytes needed, "
                            f"{free} available", status=507)  # as DiskFullError


def _download(store: Store, endpoint: Endpoint, insecure: bool, layer: Layer,
              cancel: threading.Event) -> Generator[Progress, None, bool]:
    """Progress of one blob until its bytes are all in its partial file; → True if the blob
    was in the store already (nothing to verify)."""
    status, digest = f"pulling {layer.digest[7:19]}", layer.digest

    def progress(completed: int, total: int = layer.size) -> Progress:
        out: Progress = {"status": status, "digest": digest, "total": total}
        if completed:
            out["completed"] = completed
        return out

    if store.blobs.exists(digest):
        size = store.blobs.size(digest)
        yield progress(size, size)
        return True
    blob = PartialBlob(store.blobs, digest, layer.size)
    yield progress(blob.completed())

    def start() -> Transfer:
        return Transfer(Session(endpoint, insecure=insecure), endpoint.blob_url(digest), blob)

    transfer = shared_transfer(digest, start, cancel)
    if transfer is None:
        raise RegistryError("pull canceled", status=499)
    try:
        last = -1
        while not transfer.done.wait(TICK_S):
            if cancel.is_set():
                raise RegistryError("pull canceled", status=499)
            if transfer.completed != last:
                last = transfer.completed
                yield progress(last)
    finally:
        transfer.leave(cancel)  # the last pull to leave early stops the transfer
    if transfer.error is not None:
        raise _pull_error(transfer.error) from transfer.error
    if store.blobs.exists(digest):  # a concurrent pull verified it first
        yield progress(layer.size)
        return True
    yield progress(layer.size)
    return False


def _pull_error(e: BaseException) -> StoreError:
    """A fresh exception for each pull that shared the failed transfer."""
    if isinstance(e, RegistryError):
        return RegistryError(str(e), e.status, e.http_status)
    if isinstance(e, StoreError):
        return StoreError(str(e), e.status)
    return RegistryError(str(e) or type(e).__name__)


def _digests_of(store: Store, name: Name) -> frozenset[str]:
    """The blobs the version about to be replaced references (none if absent or unreadable)."""
    try:
        return store.manifest(name).digests
    except StoreError:
        return frozenset()
