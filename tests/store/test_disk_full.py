"""A full disk during a blob upload, a create and a pull (hardening.md §7 item 21), through the
store API and through the HTTP app.

What is proved, for each operation: the failure is a `DiskFullError` (HTTP 507, `no space left
on device while …`; Ollama answers 500 with the raw write error), as a JSON error or, once a
stream has started, as its last NDJSON line; no temp file is left and the disk invariant
holds (tests/store/invariant.py: no manifest names a missing blob, every blob hashes to its
name) without a restart; a create that fails leaves an older version of the model as it was;
and once there is room again the very same request succeeds on the same `Store` / the same
running app (Ollama #1731 needed a restart).

How the disk is filled: for real, by the kernel, with RLIMIT_FSIZE. Under a soft limit of N
bytes every write that would take a file of this process past N fails with EFBIG (SIGXFSZ,
which would kill the process, is ignored), exactly where a full disk fails with ENOSPC: in
the store's own `write`/`truncate` calls, wherever they are. "Freeing space" is raising the
soft limit back. The limit covers only the `with` block, which issues the request and
nothing else (pytest's own files are not written inside it). A tmpfs would be the other
real mechanism, but mounting one needs privileges a test run does not have.

One failure a file-size limit cannot produce: a download writes into a partial file created
at its full, sparse size, so its writes never grow the file; on a full disk they fail with
ENOSPC when blocks are allocated. That case injects ENOSPC into `os.pwrite`, the only call
the download writes with, after some bytes went through.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import resource
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from ollamapy.scheduler import Scheduler
from ollamapy.server.app import create_app
from ollamapy.settings import Settings
from ollamapy.store import DiskFullError, Store, StoreError, create_model
from ollamapy.store.registry_pull import pull_model
from tests.store.conftest import upload, write_gguf
from tests.store.invariant import assert_disk_invariant, manifests
from tests.store.standin import StandIn, partial_records

MODEL = "application/vnd.ollama.image.model"
TEMPLATE = "application/vnd.ollama.image.template"
KIB = 1024
LIMIT = 64 * KIB  # the file-size limit: smaller than every blob these tests write
BLOB = 256 * KIB
FULL = "no space left on device while "
App = tuple[TestClient, Path]  # a running app and its models directory


@contextlib.contextmanager
def disk_full(limit: int = LIMIT) -> Iterator[None]:
    """No file of this process may grow past `limit` bytes until the block ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if hard != resource.RLIM_INFINITY and hard < limit:
        pytest.skip("RLIMIT_FSIZE is capped below the test's limit")
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)


def test_the_limit_is_a_real_efbig() -> None:
    """The mechanism itself: a write past the limit fails with EFBIG, and works again after."""
    with tempfile.TemporaryFile() as f:
        with disk_full(KIB), pytest.raises(OSError) as e:
            f.write(b"x" * (2 * KIB))
            f.flush()
        assert e.value.errno == errno.EFBIG
        f.seek(0)
        f.write(b"x" * (2 * KIB))
        f.flush()
        assert os.fstat(f.fileno()).st_size == 2 * KIB


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def temp_files(root: Path) -> list[Path]:
    return list(root.rglob(".tmp-*"))


def assert_clean(root: Path) -> None:
    """No temp file (no restart has cleaned anything) and the disk invariant."""
    assert temp_files(root) == []
    assert_disk_invariant(root, restarted=True)


# -- the store API ---------------------------------------------------------------------------


def test_blob_upload_on_a_full_disk_fails_cleanly_then_succeeds(store: Store) -> None:
    data = os.urandom(BLOB)
    digest = sha256(data)

    def put() -> bool:
        with store.blobs.writer(digest) as writer:
            for i in range(0, len(data), 16 * KIB):
                writer.write(data[i:i + 16 * KIB])
            return writer.commit()

    with disk_full(), pytest.raises(DiskFullError) as e:
        put()
    assert e.value.status == 507
    assert str(e.value) == f"{FULL}writing blob {digest}"
    assert isinstance(e.value.__cause__, OSError) and e.value.__cause__.errno == errno.EFBIG
    assert not store.blobs.exists(digest) and list(store.blobs.root.iterdir()) == []
    assert_clean(store.root)

    assert put() is True  # room again: the same upload, same Store object
    assert store.blobs.path(digest).read_bytes() == data
    assert_clean(store.root)


def gguf_digest(store: Store, tmp_path: Path) -> str:
    return upload(store, write_gguf(tmp_path / "tiny.gguf"))


def test_create_whose_new_layer_hits_a_full_disk_leaves_no_model(store: Store,
                                                                 tmp_path: Path) -> None:
    digest = gguf_digest(store, tmp_path)
    license_text = "x" * BLOB  # a new layer bigger than the limit
    request = {"files": {"tiny.gguf": digest}, "template": "{{ .Prompt }}",
               "license": license_text}
    blobs_before = sorted(store.blobs.root.iterdir())

    with disk_full(), pytest.raises(DiskFullError) as e:
        list(create_model(store, "m", **request))
    assert e.value.status == 507
    assert str(e.value) == f"{FULL}writing blob {sha256(license_text.encode())}"
    assert store.find("m") is None and store.list_models() == []
    # the template layer (written before the license) may stay: blobs are content-addressed
    # and a later create reuses it; nothing else was added
    assert set(blobs_before) <= set(store.blobs.root.iterdir())
    assert_clean(store.root)

    statuses = [p["status"] for p in create_model(store, "m", **request)]
    assert statuses[-1] == "success"
    assert store.model("m").licenses == (license_text,)
    assert_clean(store.root)


def test_create_whose_manifest_hits_a_full_disk_keeps_the_old_version(
        store: Store, tmp_path: Path) -> None:
    """The limit lets every new blob through and stops the manifest: the previous version of
    the model stays, byte for byte, and usable."""
    digest = gguf_digest(store, tmp_path)
    list(create_model(store, "m", files={"tiny.gguf": digest}, system="old"))
    old_manifest = store.manifest_path(store.find("m")).read_bytes()
    request = {"files": {"tiny.gguf": digest}, "template": "{{ .Prompt }}", "system": "new"}

    # the sizes of what this create writes, measured on a scratch store
    probe = Store(tmp_path / "probe")
    upload(probe, tmp_path / "tiny.gguf")
    before = set(probe.blobs.digests())
    list(create_model(probe, "m", **request))
    new_blobs = [probe.blobs.size(d) for d in set(probe.blobs.digests()) - before]
    manifest_size = probe.manifest_path(probe.find("m")).stat().st_size
    limit = (max(new_blobs) + manifest_size) // 2
    assert max(new_blobs) < limit < manifest_size

    with disk_full(limit), pytest.raises(DiskFullError) as e:
        list(create_model(store, "m", **request))
    assert str(e.value) == f"{FULL}writing the manifest of m:latest"
    assert store.manifest_path(store.find("m")).read_bytes() == old_manifest
    assert store.model("m").system == "old"
    assert_clean(store.root)

    assert list(create_model(store, "m", **request))[-1] == {"status": "success"}
    assert store.model("m").system == "new"
    assert_clean(store.root)


def pull(store: Store, registry: StandIn, model: str) -> list[dict]:
    name = f"{registry.url.removeprefix('http://')}/library/{model}"
    return list(pull_model(store, name, insecure=True))


def test_pull_on_a_full_disk_fails_cleanly_then_succeeds(store: Store,
                                                        registry: StandIn) -> None:
    """The partial file is created at the blob's full size; past the limit that fails, and no
    partial file, record or manifest stays behind."""
    data = os.urandom(BLOB)
    registry.add_model("library/m:1", [(MODEL, data), (TEMPLATE, b"{{ .Prompt }}")])

    with disk_full(), pytest.raises(StoreError) as e:
        pull(store, registry, "m:1")
    assert e.value.status == 507
    assert str(e.value) == f"{FULL}downloading blob {sha256(data)}"
    assert manifests(store.root) == {} and store.list_models() == []
    assert not any(p.name.startswith(f"sha256-{sha256(data)[7:]}")
                   for p in store.blobs.root.iterdir())
    assert_clean(store.root)

    assert pull(store, registry, "m:1")[-1] == {"status": "success"}
    assert store.blobs.path(sha256(data)).read_bytes() == data
    assert [p.name for p in store.blobs.root.iterdir() if "partial" in p.name] == []
    assert_clean(store.root)


# -- through the HTTP app --------------------------------------------------------------------


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[App]:
    settings = Settings.from_env({"OLLAMA_MODELS": str(tmp_path / "models")})
    with TestClient(create_app(settings, Scheduler(settings))) as client:
        yield client, settings.models


def ndjson(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def assert_json_error(response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"error": message}


def test_http_blob_upload_on_a_full_disk_is_507_then_201(app_client: App) -> None:
    client, root = app_client
    data = os.urandom(BLOB)
    digest = sha256(data)

    with disk_full():
        r = client.post(f"/api/blobs/{digest}", content=data)
    assert_json_error(r, 507, f"{FULL}writing blob {digest}")
    assert client.head(f"/api/blobs/{digest}").status_code == 404
    assert_clean(root)

    assert client.post(f"/api/blobs/{digest}", content=data).status_code == 201
    assert client.head(f"/api/blobs/{digest}").status_code == 200
    assert_clean(root)


def test_http_create_on_a_full_disk_then_the_same_request_succeeds(app_client: App,
                                                                   tmp_path: Path) -> None:
    client, root = app_client
    gguf = write_gguf(tmp_path / "tiny.gguf").read_bytes()
    digest = sha256(gguf)
    assert client.post(f"/api/blobs/{digest}", content=gguf).status_code == 201
    license_text = "x" * BLOB
    request = {"model": "m", "files": {"tiny.gguf": digest}, "license": license_text}
    message = f"{FULL}writing blob {sha256(license_text.encode())}"

    with disk_full():  # streamed: the error is the last line under the 200 already sent
        streamed = client.post("/api/create", json=request)
        whole = client.post("/api/create", json={**request, "stream": False})
    assert streamed.status_code == 200
    lines = ndjson(streamed.text)
    assert lines[0] == {"status": "parsing GGUF"} and lines[-1] == {"error": message}
    assert_json_error(whole, 507, message)
    assert client.get("/api/tags").json() == {"models": []}
    assert client.post("/api/show", json={"model": "m"}).status_code == 404
    assert_clean(root)

    done = client.post("/api/create", json=request)
    assert ndjson(done.text)[-1] == {"status": "success"}
    assert [m["name"] for m in client.get("/api/tags").json()["models"]] == ["m:latest"]
    assert client.post("/api/show", json={"model": "m"}).json()["license"] == license_text
    assert_clean(root)


def test_http_pull_on_a_full_disk_then_the_same_request_succeeds(
        app_client: App, registry: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    client, root = app_client
    data = os.urandom(BLOB)
    digest = sha256(data)
    registry.add_model("library/m:1", [(MODEL, data)])
    name = f"{registry.url.removeprefix('http://')}/library/m:1"
    request = {"model": name, "insecure": True}

    # 1. the file-size limit: the partial file cannot even be created at its size
    with disk_full():
        r = client.post("/api/pull", json={**request, "stream": False})
    assert_json_error(r, 507, f"{FULL}downloading blob {digest}")
    assert client.get("/api/tags").json() == {"models": []}
    assert not any(p.name.startswith(f"sha256-{digest[7:]}") for p in (root / "blobs").iterdir())
    assert_clean(root)

    # 2. the disk fills in the middle of the download (ENOSPC from pwrite, streamed)
    real_pwrite, written, lock = os.pwrite, [0], threading.Lock()

    def filling(fd: int, chunk: bytes, offset: int) -> int:
        with lock:
            if written[0] >= BLOB // 4:
                raise OSError(errno.ENOSPC, "No space left on device")
            n = real_pwrite(fd, chunk, offset)
            written[0] += n
            return n

    monkeypatch.setattr(os, "pwrite", filling)
    r = client.post("/api/pull", json=request)
    assert r.status_code == 200
    lines = ndjson(r.text)
    assert lines[0] == {"status": "pulling manifest"}
    assert lines[-1] == {"error": f"{FULL}downloading blob {digest}"}
    assert client.get("/api/tags").json() == {"models": []}
    have = sum(p["Completed"] for p in partial_records(root / "blobs", digest))
    assert 0 < have < BLOB  # kept for the next pull to resume (Ollama's partial files)
    assert_clean(root)

    monkeypatch.setattr(os, "pwrite", real_pwrite)  # room again
    registry.log.clear()
    r = client.post("/api/pull", json=request)
    assert ndjson(r.text)[-1] == {"status": "success"}
    sent = sum(x.sent for x in registry.requests_for(f"/blobs/{digest}") if x.method == "GET")
    assert sent == BLOB - have  # resumed where the full disk stopped it
    assert [m["name"] for m in client.get("/api/tags").json()["models"]] == [name]
    assert (root / "blobs" / f"sha256-{digest[7:]}").read_bytes() == data
    assert_clean(root)


def test_http_pull_refused_up_front_when_the_disk_cannot_hold_it(
        app_client: App, registry: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """The free-space check before any byte is fetched: 507, no blob request made."""
    client, root = app_client
    registry.add_model("library/m:1", [(MODEL, os.urandom(BLOB))])
    request = {"model": f"{registry.url.removeprefix('http://')}/library/m:1",
               "insecure": True, "stream": False}
    real = shutil.disk_usage
    monkeypatch.setattr("ollamapy.store.registry_pull.shutil.disk_usage",
                        lambda p: real(p)._replace(free=BLOB // 2))
    r = client.post("/api/pull", json=request)
    assert r.status_code == 507
    error = r.json()["error"]
    assert error.startswith("not enough disk space to pull: ")
    assert error.endswith(f" more bytes needed, {BLOB // 2} available")
    assert not [x for x in registry.log if "/blobs/" in x.path]
    assert_clean(root)

    monkeypatch.setattr("ollamapy.store.registry_pull.shutil.disk_usage", real)
    assert client.post("/api/pull", json=request).json() == {"status": "success"}
    assert_clean(root)
