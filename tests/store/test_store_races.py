"""Create, copy and delete racing each other on one store (hardening.md §7 item 30, the part
the pull and upload tests do not cover): four threads run a seeded random mix of creates (from
uploaded files, or `from` another model), copies and deletes over a few names that share
blobs. What is proved: every operation either succeeds or fails with the store's own "not
found" errors (the model or a blob it wanted went away under it), never with anything else;
and at the end the disk invariant holds (tests/store/invariant.py: every manifest complete
and naming blobs that exist, every blob hashing to its name, no temp file) and every listed
model can be read in full. A delete must never collect a blob that a create or copy running
beside it has just published a manifest for.

Thread interleavings are not scheduled here, so this is a stress test: the two windows a
missing lock would leak through are widened (`slow`), and a store without its lock fails it
in about one run of four. A create whose uploaded blob a delete collected between its checks
used to fail it more often, with a raw FileNotFoundError (a 500 naming a server path).
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from ollamapy.store import (
    BlobNotFoundError,
    CreateError,
    ModelNotFoundError,
    Store,
    create_model,
)
from ollamapy.store import create as create
from tests.store.conftest import upload, write_gguf
from tests.store.invariant import assert_disk_invariant, manifests

THREADS = 4
OPS = 40
NAMES = ["a", "b", "c"]
SYSTEMS = ["one", "two", "three"]  # few, so that system layers are shared and collected


def slow(monkeypatch: pytest.MonkeyPatch, obj: object, method: str) -> None:
    real = getattr(obj, method)

    def slowed(*args: object) -> object:
        result = real(*args)
        time.sleep(0.002)
        return result

    monkeypatch.setattr(obj, method, slowed)


def test_creates_copies_and_deletes_racing_keep_the_store_whole(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_registry(store: Store, name: str, **kw: object) -> None:
        raise ModelNotFoundError(name)  # a `from` deleted meanwhile is not pulled

    monkeypatch.setattr(create, "pull_model", no_registry)
    # widen the two windows a missing lock would leak through, as a big store does: between a
    # delete's scan of every manifest and its removals, and between a writer's check that
    # its blobs exist and its manifest's publication
    slow(monkeypatch, store, "referenced_digests")
    slow(monkeypatch, store.blobs, "exists")
    ggufs = [write_gguf(tmp_path / f"w{i}.gguf", n_embd=32 * (i + 1)) for i in range(2)]
    done: list[str] = []
    failures: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def work(seed: int) -> None:
        rng = random.Random(seed)
        start.wait(10)
        for _ in range(OPS):
            op = rng.choices(["create", "from", "copy", "delete"], [3, 1, 2, 3])[0]
            name, other = rng.sample(NAMES, 2)
            try:
                if op == "create":  # as a client does it: upload, then create
                    digest = upload(store, rng.choice(ggufs))
                    list(create_model(store, name, files={"m.gguf": digest},
                                      system=rng.choice(SYSTEMS)))
                elif op == "from":
                    list(create_model(store, name, from_=other, system=rng.choice(SYSTEMS)))
                elif op == "copy":
                    store.copy(other, name)
                else:
                    store.delete(name)
                done.append(op)
            except (ModelNotFoundError, BlobNotFoundError):
                pass  # the model, or a blob it named, was deleted by another thread
            except CreateError as e:
                # the upload was collected by a delete of the last model using it before
                # this create referenced it (Ollama #15628): a failed create, not a bad store
                if "is not in the store" not in str(e):
                    failures.append(e)
            except BaseException as e:  # anything else is a failure of the store
                failures.append(e)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    assert {"create", "copy", "delete"} <= set(done)  # the races did happen

    assert_disk_invariant(store.root, restarted=True)
    listed = {e.name.model for e in store.list_models()}
    assert len(listed) == len(manifests(store.root))  # every manifest on disk is readable
    for name in listed:
        model = store.model(name)
        assert model.model_path is not None and model.model_path.is_file()
        assert model.system in SYSTEMS
