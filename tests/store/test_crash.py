"""kill -9 in the middle of a write: a final path only ever holds a complete file.

A child process runs the real code with `os.replace` made to hang just before a manifest is
published (or stops half-way through a blob upload), signals that it got there, and is killed
with SIGKILL. The store must then hold the old state, list cleanly, and `clean_temporary` must
remove what the dead writer left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ollamapy.store import Name, Store, create_model
from tests.store.conftest import upload, write_gguf

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

HANG_BEFORE_MANIFEST_RENAME = """
import os, sys, time
from pathlib import Path
root, marker, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
real_replace = os.replace
def replace(src, dst, *args, **kwargs):
    if "manifests" in Path(dst).parts:
        marker.write_text(str(src))  # the temp manifest, complete and fsynced
        time.sleep(600)
    return real_replace(src, dst, *args, **kwargs)
os.replace = replace
from ollamapy.store import Name, Store, create_model
for _ in create_model(Store(root), name, from_="base", system="a new system prompt"):
    pass
"""

HANG_HALF_WAY_THROUGH_UPLOAD = """
import sys, time
from pathlib import Path
root, marker, digest = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
from ollamapy.store import Store
writer = Store(root).blobs.writer(digest)
writer.write(b"the first half")
writer._file.flush()
marker.write_text("half")
time.sleep(600)
"""


def run_and_kill(script: str, root: Path, arg: str, marker: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", script, str(root), str(marker), arg],
                             cwd=REPO)
    try:
        deadline = time.monotonic() + 300  # a hang guard: it gets there in a second or two
        while not marker.exists():
            assert child.poll() is None, "the child exited before reaching the write"
            assert time.monotonic() < deadline, "hang guard: the child never reached the write"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL


@pytest.fixture
def base_store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "models")
    digest = upload(store, write_gguf(tmp_path / "tiny.gguf"))
    list(create_model(store, "base", files={"tiny.gguf": digest}, system="old"))
    return store


def temp_files(store: Store) -> list[Path]:
    return list(store.root.rglob(".tmp-*"))


def test_kill_before_a_new_manifest_is_published(base_store: Store, tmp_path: Path) -> None:
    marker = tmp_path / "reached"
    run_and_kill(HANG_BEFORE_MANIFEST_RENAME, base_store.root, "child", marker)
    temp = Path(marker.read_text())
    assert temp.exists() and temp.name.startswith(".tmp-")  # killed mid-publish indeed
    assert not base_store.manifest_path(Name.parse("child")).exists()

    store = Store(base_store.root)  # a restart
    assert [e.name.display_shortest() for e in store.list_models()] == ["base:latest"]
    assert store.clean_temporary() == 1
    assert temp_files(store) == []
    assert store.model("base").system == "old"
    list(create_model(store, "child", from_="base", system="again"))  # and it works now
    assert store.model("child").system == "again"


def test_kill_while_replacing_a_manifest_keeps_the_old_one(base_store: Store,
                                                           tmp_path: Path) -> None:
    path = base_store.manifest_path(base_store.find("base"))
    before = path.read_bytes()
    run_and_kill(HANG_BEFORE_MANIFEST_RENAME, base_store.root, "base", tmp_path / "reached")
    assert path.read_bytes() == before
    store = Store(base_store.root)
    assert store.model("base").system == "old"
    assert store.clean_temporary() == 1 and temp_files(store) == []


def test_kill_half_way_through_an_upload(tmp_path: Path) -> None:
    store = Store(tmp_path / "models")
    digest = "sha256:" + "ab" * 32
    run_and_kill(HANG_HALF_WAY_THROUGH_UPLOAD, store.root, digest, tmp_path / "reached")
    assert not store.blobs.exists(digest)
    [temp] = temp_files(store)
    assert temp.read_bytes() == b"the first half"
    assert store.clean_temporary() == 1
    assert list(store.blobs.root.iterdir()) == []
