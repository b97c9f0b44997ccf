"""kill -9 at every point where upload, create, re-create, copy, delete and pull change the disk
(checklist items 19, 20): the disk a crash leaves always holds the disk invariant — every
manifest complete and naming blobs that exist, every blob hashing to its name — and holds the
old state or the new one, never a mix; a restart removes the temp files, lists cleanly, and
the same operation then succeeds.

The crashes come from tests/store/crashpoints.py, which forks one child per point and lets it
SIGKILL itself just before its k-th change to the store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ollamapy.store import ModelNotFoundError, Store, create_model
from ollamapy.store.registry_pull import pull_model
from tests.store.conftest import sha256_file, upload, write_gguf
from tests.store.invariant import assert_disk_invariant, disk_problems
from tests.store.standin import StandIn, standin

REPO = Path(__file__).resolve().parents[2]
MODEL = "application/vnd.ollama.image.model"
TEMPLATE = "application/vnd.ollama.image.template"
pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or not hasattr(signal, "SIGKILL"),
                                reason="needs fork and SIGKILL")


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A store holding `base` (a tiny GGUF, a system and a template layer) and one more
    uploaded GGUF that no model uses yet."""
    store = Store(tmp_path / "base")
    digest = upload(store, write_gguf(tmp_path / "tiny.gguf"))
    list(create_model(store, "base", files={"tiny.gguf": digest}, system="old",
                      template="{{ .Prompt }}"))
    upload(store, write_gguf(tmp_path / "other.gguf", n_embd=32))
    return store.root


def crash_everywhere(op: str, base: Path, out: Path, arg: str = "") -> list[Path]:
    """The stores left by a kill at each point of op (the last one: op completed)."""
    run = subprocess.run([sys.executable, "-m", "tests.store.crashpoints", op, str(base),
                          str(out), arg], cwd=REPO, capture_output=True, text=True, timeout=120)
    errors = "".join(p.read_text() for p in out.glob("*.error"))
    assert run.returncode == 0, run.stdout + run.stderr + errors
    points = json.loads(run.stdout)["points"]
    assert points >= 3, f"{op}: only {points} crash points were found"
    return [out / str(k) for k in range(1, points + 2)]


def restart(root: Path) -> Store:
    """What the server does at start-up; the disk must then hold the invariant, temp files
    gone, and every model must list."""
    assert disk_problems(root, restarted=False) == []  # before any cleaning
    store = Store(root)
    store.clean_temporary()
    assert_disk_invariant(root)
    store.list_models()
    return store


def names(store: Store) -> set[str]:
    return {e.name.display_shortest() for e in store.list_models()}


def test_kill_during_blob_upload(base: Path, tmp_path: Path) -> None:
    data = write_gguf(tmp_path / "new.gguf", n_embd=128)
    digest = sha256_file(data)
    *killed, done = crash_everywhere("upload", base, tmp_path / "out", str(data))
    published = []
    for root in killed:
        store = restart(root)
        published.append(store.blobs.exists(digest))  # complete if there: the invariant
        assert upload(store, data) == digest  # the client retries: it works
        assert_disk_invariant(root)
    # absent while the chunks arrive, there for good once linked into place
    assert published == sorted(published) and published.count(False) > 4
    assert Store(done).blobs.exists(digest)


def test_kill_during_create(base: Path, tmp_path: Path) -> None:
    digest = sha256_file(write_gguf(tmp_path / "other.gguf", n_embd=32))
    *killed, done = crash_everywhere("create", base, tmp_path / "out", f"child={digest}")
    for root in killed:
        store = restart(root)
        assert names(store) <= {"base:latest", "child:latest"}
        if "child:latest" in names(store):  # killed after the manifest's rename
            assert store.model("child").system == "system of child"
        list(create_model(store, "child", files={"model.gguf": digest},
                          system="system of child"))
        assert store.model("child").system == "system of child"
        assert_disk_invariant(root)
    assert Store(done).model("child").params == {"temperature": 0.5}


def test_kill_while_recreating_a_model(base: Path, tmp_path: Path) -> None:
    """The manifest is the old one or the new one; the old version's layers are collected
    only after the new manifest is in place."""
    *killed, done = crash_everywhere("replace", base, tmp_path / "out")
    seen = set()
    for root in killed:
        store = restart(root)
        model = store.model("base")
        seen.add(model.system)
        assert (model.system, model.template) in {("old", "{{ .Prompt }}"),
                                                  ("new system", "{{ .Prompt }} new")}
    assert seen == {"old", "new system"}  # some kills came after the switch
    assert Store(done).model("base").system == "new system"


def test_kill_during_copy(base: Path, tmp_path: Path) -> None:
    original = (base / "manifests/registry.ollama.ai/library/base/latest").read_bytes()
    *killed, done = crash_everywhere("copy", base, tmp_path / "out")
    for root in killed:
        store = restart(root)
        copied = root / "manifests/registry.ollama.ai/library/copied/latest"
        assert not copied.exists() or copied.read_bytes() == original
        store.copy("base", "copied")
        assert copied.read_bytes() == original
    assert names(Store(done)) == {"base:latest", "copied:latest"}


def test_kill_during_delete(base: Path, tmp_path: Path) -> None:
    """The manifest goes first, then the blobs no other manifest names: a kill in between
    leaves unreferenced blobs (collected by the start-up prune), never a manifest naming a
    missing blob."""
    *killed, done = crash_everywhere("delete", base, tmp_path / "out")
    for root in killed:
        store = restart(root)
        if "base:latest" in names(store):
            assert store.model("base").system == "old"
            store.delete("base")
        else:
            with pytest.raises(ModelNotFoundError):
                store.delete("base")
        store.prune_blobs(min_age_s=0)
        assert_disk_invariant(root)
        assert list(store.blobs.digests()) == []
    assert names(Store(done)) == set()


def test_kill_during_pull(base: Path, tmp_path: Path) -> None:
    """Partial downloads may stay (the next pull resumes them); a blob appears only once it
    verified, the manifest only once every blob is there."""
    with standin() as registry:
        weights = write_gguf(tmp_path / "pulled.gguf", n_embd=96).read_bytes()
        registry.add_model("library/m:1", [(MODEL, weights), (TEMPLATE, b"{{ .Prompt }}!")])
        name = f"{registry.url.removeprefix('http://')}/library/m:1"
        *killed, done = crash_everywhere("pull", base, tmp_path / "out", name)
        for root in killed:
            store = restart(root)
            assert names(store) <= {"base:latest", name}
            if name in names(store):
                assert store.model(name).template == "{{ .Prompt }}!"
            list(pull_model(store, name, insecure=True))
            assert store.model(name).template == "{{ .Prompt }}!"
            assert_disk_invariant(root, restarted=True)
        assert name in names(Store(done))
        assert_no_partial_left(done, registry)


def assert_no_partial_left(root: Path, registry: StandIn) -> None:
    assert [p.name for p in (root / "blobs").iterdir() if "partial" in p.name] == []
