"""OLLAMA_NOPRUNE: a server start prunes blobs no manifest names (an hour old or more, as
Ollama's PruneLayers), unless it is set; the real Store, the app's own lifespan."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from ollamapy.server.app import create_app
from ollamapy.settings import Settings
from ollamapy.store import Store
from tests.store.test_store import ollama_model


@pytest.mark.parametrize("noprune", [False, True])
def test_a_start_prunes_old_unreferenced_blobs_unless_noprune(tmp_path: Path,
                                                              noprune: bool) -> None:
    ollama_model(tmp_path, "registry.ollama.ai/library/a/latest")
    store = Store(tmp_path)
    old = store.blobs.put_bytes(b"left behind by a model deleted long ago")
    young = store.blobs.put_bytes(b"uploaded a minute ago, for a create to come")
    hours_ago = time.time() - 2 * 3600
    os.utime(store.blobs.path(old), (hours_ago, hours_ago))
    referenced = store.referenced_digests()
    assert referenced and old not in referenced and young not in referenced
    environ = {"OLLAMA_MODELS": str(tmp_path), "OLLAMA_NOPRUNE": "1" if noprune else ""}
    with TestClient(create_app(Settings.from_env(environ))) as client:
        assert client.get("/api/tags").json()["models"][0]["model"] == "a:latest"
    assert store.blobs.exists(old) == noprune
    assert store.blobs.exists(young)
    assert all(store.blobs.exists(d) for d in referenced)  # the model's own, always
