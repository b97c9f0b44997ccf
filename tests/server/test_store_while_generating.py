"""Delete, copy and re-create a model while it is streaming an answer (hardening.md §7 item 23),
through the app with a runner that holds its stream open until the test lets it go.

The behaviour proved (and chosen): store operations never wait for, nor break, a request in
flight. The stream started before a delete finishes in full, since the runner holds the
weights it loaded; the delete answers 200 at once, the model is gone for every new request
(404) and from /api/tags, its runner is unloaded as soon as that stream ends (not at the end
of its keep_alive), and a blob another model still references is kept. The name can be
created again and served at once. A copy made mid-stream is usable, and a create that
replaces the streaming model's name takes effect at the next request, which loads the new
version once the old one is idle.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from ollamapy.contract import Finished, ModelSpec, Text
from ollamapy.engine.options import Options, parse_options
from ollamapy.scheduler import Scheduler
from ollamapy.server.app import create_app
from ollamapy.settings import Settings
from ollamapy.store import Store, create_model
from tests.store.conftest import sha256_file, upload, write_gguf


class GatedRunner:
    """Streams "Hel", then waits for `gate` before "lo" and the end of the answer."""

    instances: list[GatedRunner] = []
    started = threading.Event()  # set once a stream has sent its first chunk
    gate = threading.Event()

    def __init__(self, spec: ModelSpec, num_ctx: int) -> None:
        self.spec, self.num_ctx = spec, min(num_ctx, 2048)
        self.is_encoder, self.context_length, self.size, self.on_gpu = False, 2048, 1000, False
        self.alive = True
        self.closed = False
        GatedRunner.instances.append(self)

    def options(self, request: object) -> Options:
        return parse_options(request, Options(num_ctx=self.num_ctx))

    async def _events(self) -> AsyncIterator[Text | Finished]:
        yield Text("Hel")
        GatedRunner.started.set()
        while not GatedRunner.gate.is_set():
            await asyncio.sleep(0.01)
        yield Text("lo")
        yield Finished("stop", 3, 1000, 2, 2000, [1, 2, 3])

    def generate(self, prompt: str, options: Options, **kw: object) -> AsyncIterator:
        return self._events()

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, Store, Path]]:
    GatedRunner.instances = []
    GatedRunner.started.clear()
    GatedRunner.gate.set()  # open unless a test holds a stream
    settings = Settings.from_env({"OLLAMA_MODELS": str(tmp_path / "models")})
    store = Store(settings.models)
    gguf = write_gguf(tmp_path / "tiny.gguf")
    list(create_model(store, "m", files={"tiny.gguf": upload(store, gguf)}, system="old"))
    app = create_app(settings, Scheduler(settings, make_runner=GatedRunner))
    with TestClient(app) as client:
        yield client, store, gguf
    GatedRunner.gate.set()


def ask(client: TestClient, model: str) -> httpx.Response:
    return client.post("/api/generate", json={"model": model, "prompt": "hi"})


def held_stream(client: TestClient, pool: ThreadPoolExecutor) -> Future[httpx.Response]:
    """A streaming generate of "m", running (one chunk sent) until the gate opens."""
    GatedRunner.gate.clear()
    GatedRunner.started.clear()
    answer = pool.submit(ask, client, "m")
    assert GatedRunner.started.wait(60), "the stream did not start (hang guard: 60 s)"
    return answer


def finished(answer: Future[httpx.Response]) -> list[dict]:
    GatedRunner.gate.set()
    r = answer.result(60)  # a hang guard
    assert r.status_code == 200
    return [json.loads(line) for line in r.text.splitlines()]


def names(client: TestClient, path: str) -> list[str]:
    r = client.get(path)
    assert r.status_code == 200
    return sorted(m["name"] for m in r.json()["models"])


def test_delete_while_streaming(served: tuple[TestClient, Store, Path]) -> None:
    client, store, gguf = served
    assert client.post("/api/copy", json={"source": "m", "destination": "keep"}).status_code \
        == 200
    weights = store.blobs.path(sha256_file(gguf))
    with ThreadPoolExecutor(1) as pool:
        answer = held_stream(client, pool)
        r = client.request("DELETE", "/api/delete", json={"model": "m"})
        assert r.status_code == 200  # at once: the delete does not wait for the stream
        assert names(client, "/api/tags") == ["keep:latest"]
        assert ask(client, "m").status_code == 404
        assert names(client, "/api/ps") == ["m:latest"]  # still serving its request
        chunks = finished(answer)
    assert "".join(c["response"] for c in chunks) == "Hello" and chunks[-1]["done"] is True
    assert "error" not in chunks[-1]
    runner = GatedRunner.instances[0]
    assert runner.closed and names(client, "/api/ps") == []  # unloaded as the stream ended
    assert weights.exists()  # still referenced by the copy
    r = ask(client, "keep")
    assert r.status_code == 200 and json.loads(r.text.splitlines()[-1])["done"] is True

    # the name can be created again, and it is served at once
    assert client.request("DELETE", "/api/delete", json={"model": "keep"}).status_code == 200
    assert not weights.exists()  # the last model using it is gone
    data = gguf.read_bytes()
    digest = sha256_file(gguf)
    assert client.post(f"/api/blobs/{digest}", content=data).status_code == 201
    r = client.post("/api/create", json={"model": "m", "files": {"tiny.gguf": digest},
                                         "stream": False})
    assert r.json() == {"status": "success"}
    r = ask(client, "m")
    assert r.status_code == 200 and json.loads(r.text.splitlines()[-1])["done"] is True


def test_copy_and_create_while_streaming(served: tuple[TestClient, Store, Path]) -> None:
    client, store, gguf = served
    digest = sha256_file(gguf)
    with ThreadPoolExecutor(1) as pool:
        answer = held_stream(client, pool)
        r = client.post("/api/copy", json={"source": "m", "destination": "twin"})
        assert r.status_code == 200
        r = client.post("/api/create", json={"model": "m", "files": {"tiny.gguf": digest},
                                             "system": "new", "stream": False})
        assert r.json() == {"status": "success"}
        assert names(client, "/api/tags") == ["m:latest", "twin:latest"]
        chunks = finished(answer)
    assert "".join(c["response"] for c in chunks) == "Hello" and chunks[-1]["done"] is True
    assert GatedRunner.instances[0].spec.system == "old"  # the stream kept its version

    r = ask(client, "m")  # the next request loads the new version; the old one is unloaded
    assert r.status_code == 200
    old, new = GatedRunner.instances[0], GatedRunner.instances[-1]
    assert old.closed and not new.closed and new.spec.system == "new"
    r = ask(client, "twin")  # the copy is the old version
    assert r.status_code == 200 and GatedRunner.instances[-1].spec.system == "old"
    assert store.model("twin").system == "old" and store.model("m").system == "new"
