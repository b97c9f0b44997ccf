"""/api/push as a stream of Ollama's progress objects (reference §3.12, §8.6):

    {"status": "retrieving manifest"}
    {"status": "pushing a80c4f17acd5", "digest": "sha256:…", "total": N, "completed": M}
    …                                                 every layer, then the config blob
    {"status": "pushing manifest"}
    {"status": "success"}

Each blob follows the distribution spec: `HEAD …/blobs/<digest>` (there already: skipped),
else `POST …/blobs/uploads/` for an upload location, then one monolithic
`PUT <location>?digest=<digest>` with the blob's bytes (Ollama uploads big blobs in parallel
PATCH chunks; one PUT is simpler and every registry takes it). The manifest goes last, with
`Content-Type: application/vnd.docker.distribution.manifest.v2+json`, so the registry never
holds a manifest whose blobs it lacks. The upload location is the registry's to choose, but
it must be http(s), like any redirect; the bearer token goes only to the registry itself.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from typing import Any

import httpx

from ollamapy.store.errors import ModelNotFoundError, StoreError
from ollamapy.store.manifest import MEDIA_TYPE_MANIFEST, Layer, Manifest
from ollamapy.store.names import Name
from ollamapy.store.registry import Endpoint, RegistryError, resolve
from ollamapy.store.registry_http import Session
from ollamapy.store.store import Store

TICK_S = 0.1
CHUNK = 1 << 20
Progress = dict[str, Any]


def push_model(store: Store, name: str, *, insecure: bool = False,
               cancel: threading.Event | None = None) -> Generator[Progress, None, None]:
    """Check the name (raising StoreError subclasses) and return the push's progress stream."""
    parsed, endpoint = resolve(name, insecure)
    return _push(store, parsed, endpoint, insecure, cancel or threading.Event())


def _push(store: Store, name: Name, endpoint: Endpoint, insecure: bool,
          cancel: threading.Event) -> Generator[Progress, None, None]:
    yield {"status": "retrieving manifest"}
    try:
        manifest = store.manifest(name)
    except ModelNotFoundError:
        yield {"status": "couldn't retrieve manifest"}
        raise
    seen = set()
    try:
        with Session(endpoint, insecure=insecure) as session:
            for layer in (*manifest.layers, manifest.config):
                if layer.digest not in seen:
                    seen.add(layer.digest)
                    yield from _push_blob(store, session, layer, cancel)
            yield {"status": "pushing manifest"}
            _put_manifest(session, manifest)
    except httpx.HTTPError as e:
        raise RegistryError(str(e) or type(e).__name__) from None
    yield {"status": "success"}


def _push_blob(store: Store, session: Session, layer: Layer,
               cancel: threading.Event) -> Generator[Progress, None, None]:
    endpoint, digest = session.endpoint, layer.digest
    status = f"pushing {digest[7:19]}"
    size = store.blobs.size(digest)
    if size != layer.size:
        raise StoreError(f"blob {digest} has {size} bytes but the manifest declares "
                         f"{layer.size}: the local model is damaged")

    def progress(completed: int) -> Progress:
        out: Progress = {"status": status, "digest": digest, "total": size}
        if completed:
            out["completed"] = completed
        return out

    with session.open("HEAD", endpoint.blob_url(digest), allow=(404,)) as head:
        if head.status_code == 200:
            yield progress(size)
            return
    yield progress(0)
    with session.open("POST", endpoint.uploads_url(),
                      headers={"Content-Length": "0"}) as started:
        location = started.headers.get("location") or started.headers.get(
            "docker-upload-location", "")
        upload = session.check_redirect(started.url, location)  # http(s) only
    upload = upload.copy_set_param("digest", digest)

    sent = [0]
    failure: list[BaseException] = []

    def body() -> Iterator[bytes]:
        sent[0] = 0  # a resend after a redirect or a token starts from the top
        with store.blobs.path(digest).open("rb") as f:
            while chunk := f.read(CHUNK):
                if cancel.is_set():
                    raise RegistryError("push canceled", status=499)
                sent[0] += len(chunk)
                yield chunk

    def put() -> None:
        try:
            with session.open("PUT", upload, body=body, headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(size)}):
                pass
        except BaseException as e:
            failure.append(e)

    thread = threading.Thread(target=put, name=f"push {digest[7:19]}", daemon=True)
    thread.start()
    try:
        last = -1
        while thread.is_alive():
            thread.join(TICK_S)
            if sent[0] != last and thread.is_alive():
                last = sent[0]
                yield progress(last)
    finally:
        if thread.is_alive():  # the client went away: the upload's body stops at its next read
            cancel.set()
    if failure:
        raise failure[0]
    yield progress(size)


def _put_manifest(session: Session, manifest: Manifest) -> None:
    endpoint = session.endpoint
    data = manifest.to_json()
    with session.open("PUT", endpoint.manifest_url(), body=lambda: data,
                      headers={"Content-Type": MEDIA_TYPE_MANIFEST}):
        pass
