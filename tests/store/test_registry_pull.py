"""Pulling from a registry stand-in (tests/store/standin.py): Ollama's progress stream, parallel
ranged parts, blobs shared between models, resuming an interrupted pull, and `create` pulling
a missing `from`."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path

import pytest
from starlette.responses import Response

from ollamapy.store import InvalidNameError, Store, StoreError, create_model
from ollamapy.store import registry_download as download
from ollamapy.store.registry import RegistryError
from ollamapy.store.registry_partial import MIN_PART, plan
from ollamapy.store.registry_pull import pull_model
from tests.store.standin import StandIn, partial_records

MODEL = "application/vnd.ollama.image.model"
TEMPLATE = "application/vnd.ollama.image.template"
BIG = 2 * MIN_PART + 12345  # two ranged parts


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "BACKOFF_S", 0.01)


def name_at(registry: StandIn, model: str) -> str:
    return f"{registry.url.removeprefix('http://')}/library/{model}"


def pull(store: Store, registry: StandIn, model: str) -> list[dict]:
    return list(pull_model(store, name_at(registry, model), insecure=True))


def records(store: Store, digest: str) -> list[dict]:
    return partial_records(store.blobs.root, digest)


def blob_requests(registry: StandIn, digest: str) -> list:
    return [r for r in registry.requests_for(f"/blobs/{digest}") if r.method == "GET"]


def wait_until_stopped(timeout: float = 120) -> None:
    """No transfer threads left (an abandoned download has wound down); the timeout is a
    hang guard (they stop within a chunk)."""
    deadline = time.monotonic() + timeout
    while download._active and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not download._active, f"hang guard: transfers still running after {timeout:g} s"


def test_pull_streams_ollamas_progress_and_stores_the_model(store: Store,
                                                            registry: StandIn) -> None:
    data = os.urandom(BIG)
    manifest = registry.add_model("library/tiny:v1", [(MODEL, data), (TEMPLATE, b"{{ .Prompt }}")])
    progress = pull(store, registry, "tiny:v1")

    layers = json.loads(manifest)["layers"]
    config = json.loads(manifest)["config"]
    statuses = [p["status"] for p in progress]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    pulling = [s for s in dict.fromkeys(statuses) if s.startswith("pulling ")][1:]
    # every layer, then the config; "pulling " + the digest's first 12 hex characters
    assert pulling == [f"pulling {x['digest'][7:19]}" for x in (*layers, config)]
    for p in progress:
        if "digest" in p:
            assert p["total"] > 0 and p.get("completed") != 0  # omitted while 0
    assert progress[-4]["completed"] == progress[-4]["total"]

    [entry] = store.list_models()
    assert entry.name.display_shortest() == name_at(registry, "tiny:v1")
    assert store.blobs.path(layers[0]["digest"]).read_bytes() == data
    assert sorted(p.name for p in store.blobs.root.iterdir()) == sorted(
        "sha256-" + x["digest"][7:] for x in (*layers, config))  # no partial file left
    # the big blob came in parallel ranged parts that tile it exactly
    ranges = sorted(r.headers["range"] for r in blob_requests(registry, layers[0]["digest"]))
    assert ranges == sorted(f"bytes={p.offset}-{p.offset + p.size - 1}" for p in plan(BIG))
    assert len(ranges) == 2


def test_a_second_pull_downloads_nothing_and_blobs_are_shared(store: Store,
                                                              registry: StandIn) -> None:
    weights = os.urandom(1000)
    registry.add_model("library/a:1", [(MODEL, weights), (TEMPLATE, b"A")])
    registry.add_model("library/b:1", [(MODEL, weights), (TEMPLATE, b"B")])
    pull(store, registry, "a:1")
    registry.log.clear()

    again = pull(store, registry, "a:1")
    for p in again:
        if "digest" in p:  # present blobs report completed == total at once
            assert p["completed"] == p["total"]
    assert [r.path for r in registry.log] == ["/v2/library/a/manifests/1"]

    registry.log.clear()
    pull(store, registry, "b:1")
    shared = registry.add_blob(weights)
    assert blob_requests(registry, shared) == []  # b's weights are a's: not fetched again
    assert len(blob_requests(registry, registry.add_blob(b"B"))) == 1
    assert {e.name.model for e in store.list_models()} == {"a", "b"}
    store.delete(name_at(registry, "a:1"))
    assert store.blobs.path(shared).exists()  # still b's


def test_a_pull_cut_mid_blob_resumes_where_it_stopped(store: Store,
                                                      registry: StandIn) -> None:
    data = os.urandom(BIG)
    registry.add_model("library/big:1", [(MODEL, data)])
    digest = registry.add_blob(data)
    registry.cut_after = BIG // 3  # the registry goes down a third of the way through

    with pytest.raises(RegistryError, match="^max retries exceeded: "):
        pull(store, registry, "big:1")
    assert store.list_models() == []  # nothing half-pulled is listed
    assert not store.blobs.exists(digest)
    kept = records(store, digest)
    have = sum(r["Completed"] for r in kept)
    assert 0 < have < BIG
    assert store.clean_temporary() == 0  # start-up cleaning keeps partial downloads
    assert records(store, digest) == kept

    registry.cut_after = None
    registry.log.clear()
    pull(store, registry, "big:1")
    resumed = blob_requests(registry, digest)
    assert sorted(r.headers["range"] for r in resumed) == sorted(
        f"bytes={r['Offset'] + r['Completed']}-{r['Offset'] + r['Size'] - 1}"
        for r in kept if r["Completed"] < r["Size"])
    assert sum(r.sent for r in resumed) == BIG - have  # the finished part is not sent again
    assert store.blobs.path(digest).read_bytes() == data
    assert records(store, digest) == [] and len(store.list_models()) == 1


def test_a_pull_abandoned_by_its_client_stops_and_resumes(store: Store,
                                                          registry: StandIn) -> None:
    data = os.urandom(BIG)
    registry.add_model("library/big:1", [(MODEL, data)])
    digest = registry.add_blob(data)
    registry.delay_s = 0.01  # ~6 MB/s a part

    stream = pull_model(store, name_at(registry, "big:1"), insecure=True)
    for p in stream:
        if p.get("completed", 0) > BIG // 4:
            break
    stream.close()  # the client went away
    wait_until_stopped()
    sent = -1
    while sent != registry.blob_bytes_sent:  # quiet for 0.3 s: the registry stopped sending
        sent = registry.blob_bytes_sent
        time.sleep(0.3)
    assert sent < BIG  # long before the end (at this pace the rest would take seconds)
    kept = records(store, digest)
    have = sum(r["Completed"] for r in kept)
    assert BIG // 4 < have < BIG

    registry.delay_s = 0
    registry.log.clear()
    pull(store, registry, "big:1")
    assert sum(r.sent for r in blob_requests(registry, digest)) == BIG - have
    assert store.blobs.path(digest).read_bytes() == data


def test_a_registry_that_ignores_range_is_read_from_the_start(store: Store,
                                                              registry: StandIn) -> None:
    data = os.urandom(BIG)
    registry.add_model("library/big:1", [(MODEL, data)])
    digest = registry.add_blob(data)
    registry.cut_after = BIG // 3
    with pytest.raises(RegistryError):
        pull(store, registry, "big:1")  # leaves partial parts behind
    assert sum(r["Completed"] for r in records(store, digest)) > 0

    registry.cut_after = None
    registry.log.clear()

    def whole_blob(request):  # answer every blob request with the whole blob: 200, no range
        if "/blobs/" in request.url.path:
            return Response(registry.blobs[request.path_params["digest"]], 200)
        return None

    registry.override = whole_blob
    pull(store, registry, "big:1")
    assert store.blobs.path(digest).read_bytes() == data
    assert any("range" not in r.headers for r in blob_requests(registry, digest))


def test_concurrent_pulls_of_one_model_share_the_download(store: Store,
                                                          registry: StandIn) -> None:
    data = os.urandom(BIG)
    registry.add_model("library/big:1", [(MODEL, data)])
    digest = registry.add_blob(data)
    registry.delay_s = 0.002
    results: list[object] = []

    def run() -> None:
        try:
            results.append(pull(store, registry, "big:1")[-1])
        except Exception as e:  # reported below
            results.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "hang guard: a pull ran past 300 s"
    assert results == [{"status": "success"}] * 3
    assert sum(r.sent for r in blob_requests(registry, digest)) == BIG  # one copy sent
    assert store.blobs.path(digest).read_bytes() == data


def test_create_from_a_missing_model_pulls_it_first(store: Store, registry: StandIn) -> None:
    registry.add_model("library/base:1", [(MODEL, os.urandom(64)), (TEMPLATE, b"{{ .Prompt }}")])
    base = name_at(registry, "base:1")
    progress = list(create_model(store, "child", from_=base, system="Be brief.", insecure=True))
    statuses = [p["status"] for p in progress]
    pulled = statuses.index("success")  # the pull's stream first, then the create's
    assert statuses[0] == "pulling manifest" and "verifying sha256 digest" in statuses[:pulled]
    assert statuses[pulled + 1].startswith("using existing layer sha256:")
    assert statuses[-2:] == ["writing manifest", "success"]
    assert {e.name.display_shortest() for e in store.list_models()} == {base, "child:latest"}
    assert store.model("child").system == "Be brief."
    assert store.manifest("child").layers[0].from_ == base


def test_create_from_a_model_no_registry_has(store: Store, registry: StandIn) -> None:
    stream = create_model(store, "child", from_=name_at(registry, "nope:1"), insecure=True)
    assert next(stream) == {"status": "pulling manifest"}
    with pytest.raises(RegistryError, match="^pull model manifest: file does not exist$"):
        next(stream)
    assert store.list_models() == []


def test_names_and_schemes_are_checked_before_anything_is_sent(store: Store,
                                                               registry: StandIn) -> None:
    host = registry.url.removeprefix("http://")
    with pytest.raises(RegistryError, match="^insecure protocol http$"):
        pull_model(store, f"http://{host}/library/x:1")
    for bad in ("", "../../etc/x", f"ftp://{host}/library/x:1", "a/b/c/d:e"):
        with pytest.raises(InvalidNameError) as info:
            pull_model(store, bad, insecure=True)
        assert info.value.status == 400
    assert registry.log == []


def test_not_enough_disk_space_is_refused_before_downloading(
        store: Store, registry: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    registry.add_model("library/big:1", [(MODEL, os.urandom(BIG))])
    import shutil as real_shutil

    usage = real_shutil.disk_usage(store.root)
    monkeypatch.setattr("ollamapy.store.registry_pull.shutil.disk_usage",
                        lambda path: usage._replace(free=1000))
    with pytest.raises(RegistryError, match="^not enough disk space to pull"):
        pull(store, registry, "big:1")
    assert [r for r in registry.log if "/blobs/" in r.path] == []
    assert list(Path(store.blobs.root).iterdir()) == []


def test_a_newer_version_of_a_tag_removes_unused_layers(store: Store,
                                                        registry: StandIn) -> None:
    weights = os.urandom(1000)
    registry.add_model("library/m:1", [(MODEL, weights), (TEMPLATE, b"old")])
    pull(store, registry, "m:1")
    old_template = registry.add_blob(b"old")
    registry.add_model("library/m:1", [(MODEL, weights), (TEMPLATE, b"new")])
    statuses = [p["status"] for p in pull(store, registry, "m:1")]
    assert statuses[-3:] == ["writing manifest", "removing unused layers", "success"]
    assert not store.blobs.exists(old_template)
    assert store.blobs.exists(registry.add_blob(weights))
    assert store.model(name_at(registry, "m:1")).template == "new"


def test_with_noprune_a_newer_version_leaves_the_old_layers(store: Store,
                                                            registry: StandIn) -> None:
    """OLLAMA_NOPRUNE (the server passes prune=False): nothing is removed after the pull."""
    registry.add_model("library/m:1", [(MODEL, os.urandom(1000)), (TEMPLATE, b"old")])
    pull(store, registry, "m:1")
    old_template = registry.add_blob(b"old")
    registry.add_model("library/m:1", [(MODEL, os.urandom(1000)), (TEMPLATE, b"new")])
    statuses = [p["status"] for p in pull_model(store, name_at(registry, "m:1"), insecure=True,
                                                prune=False)]
    assert statuses[-2:] == ["writing manifest", "success"]
    assert store.blobs.exists(old_template)
    assert store.model(name_at(registry, "m:1")).template == "new"


def test_a_full_disk_fails_the_pull_and_the_next_one_resumes(
        store: Store, registry: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC is not retried (Ollama #911); the partial files stay, and once there is room
    the same pull goes on without a restart (Ollama #1731)."""
    data = os.urandom(BIG)
    registry.add_model("library/big:1", [(MODEL, data)])
    digest = registry.add_blob(data)
    real_pwrite, written = os.pwrite, [0]

    def filling(fd: int, chunk: bytes, offset: int) -> int:
        if written[0] > BIG // 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_pwrite(fd, chunk, offset)
        written[0] += n
        return n

    monkeypatch.setattr(os, "pwrite", filling)
    with pytest.raises(StoreError, match="^no space left on device while downloading") as e:
        pull(store, registry, "big:1")
    assert e.value.status == 507
    have = sum(r["Completed"] for r in records(store, digest))
    assert 0 < have < BIG and store.list_models() == []

    monkeypatch.setattr(os, "pwrite", real_pwrite)  # room again
    registry.log.clear()
    pull(store, registry, "big:1")
    assert sum(r.sent for r in blob_requests(registry, digest)) == BIG - have
    assert store.blobs.path(digest).read_bytes() == data
