"""The store outlives the server: a restart serves what was written, and a server killed
with SIGKILL in the middle of an upload or a create leaves no half-written model."""

from __future__ import annotations

import contextlib
import hashlib
import signal
import threading
import time
from pathlib import Path

import httpx
import ollama

from tests.conftest import model_path
from tests.e2e.conftest import start_server, stop_server


def test_a_restart_serves_the_same_store(tmp_path) -> None:
    models = tmp_path / "models"
    first = start_server(models)
    try:
        modelfile = tmp_path / "Modelfile"
        modelfile.write_text(f"FROM {model_path('smollm2-135m.gguf')}\nSYSTEM Be brief.\n")
        first.cli("create", "brief", "-f", str(modelfile))
        with ollama.Client(host=first.url) as client:
            before = client.generate(model="brief", prompt="Hello",
                                     options={"temperature": 0, "num_predict": 6})
    finally:
        stop_server(first)
    second = start_server(models)
    try:
        with ollama.Client(host=second.url) as client:
            assert [m.model for m in client.list().models] == ["brief:latest"]
            assert "SYSTEM Be brief." in client.show("brief").modelfile
            after = client.generate(model="brief", prompt="Hello",
                                    options={"temperature": 0, "num_predict": 6})
        assert after.response == before.response
    finally:
        stop_server(second)


HANG_GUARD_S = 120  # each wait below is for a step of milliseconds


def written_temp_files(blobs: Path) -> list[Path]:
    """The store's temporary files in blobs/ that hold some bytes."""
    found = []
    for p in blobs.glob(".tmp-*"):
        with contextlib.suppress(FileNotFoundError):  # renamed or removed meanwhile
            if p.stat().st_size:
                found.append(p)
    return found


def test_kill_during_upload_and_create_leaves_nothing_half_written(tmp_path) -> None:
    models = tmp_path / "models"
    blobs = models / "blobs"
    server = start_server(models)
    data = model_path("gemma3-270m.gguf").read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    sent, killed = threading.Event(), threading.Event()

    def slow_body():
        yield data[: 8 << 20]
        sent.set()
        killed.wait(HANG_GUARD_S)  # the server dies while waiting for the rest
        yield data[8 << 20:]

    def upload() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(f"{server.url}/api/blobs/{digest}", content=slow_body(),
                       timeout=HANG_GUARD_S)

    thread = threading.Thread(target=upload, daemon=True)
    thread.start()
    try:
        assert sent.wait(HANG_GUARD_S), "hang guard: the first 8 MiB were never sent"
        deadline = time.monotonic() + HANG_GUARD_S  # until the server has written some
        while not written_temp_files(blobs):
            assert time.monotonic() < deadline, "hang guard: the upload was never written"
            time.sleep(0.05)
    finally:
        stop_server(server, signal.SIGKILL)
        killed.set()
    blob = blobs / ("sha256-" + digest.removeprefix("sha256:"))
    assert not blob.exists()
    leftovers = [p for p in blobs.iterdir()]
    assert leftovers  # the killed upload's temporary file is still there ...
    restarted = start_server(models)
    try:  # ... until the next start-up cleans it
        assert not [p for p in (models / "blobs").iterdir()]
        with ollama.Client(host=restarted.url) as client:
            assert client.list().models == []
        manifests = [p for p in (models / "manifests").rglob("*") if p.is_file()]
        assert manifests == []
    finally:
        stop_server(restarted)
