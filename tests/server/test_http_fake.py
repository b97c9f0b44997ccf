"""The HTTP layer against a fake runner: Ollama's stream and error shapes, independent of any
model. (tests/e2e drives the same endpoints against the real models.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from ollamapy.contract import Finished, ModelSpec, RequestError, Text
from ollamapy.engine.options import Options, parse_options
from ollamapy.runner_process import STOPPED, RunnerStopped
from ollamapy.scheduler import Scheduler
from ollamapy.server.app import create_app
from ollamapy.settings import Settings
from ollamapy.store import Store, create_model
from tests.store.conftest import upload, write_gguf


class FakeRunner:
    """Streams "Hel", "lo" then a final event; `mode` makes it fail before or mid-stream."""

    mode = "ok"
    instances: list[FakeRunner] = []

    def __init__(self, spec: ModelSpec, num_ctx: int) -> None:
        self.spec, self.num_ctx = spec, min(num_ctx, 2048)
        self.is_encoder, self.context_length, self.size, self.on_gpu = False, 2048, 1000, False
        self.alive = True
        self.closed = False
        self.seen: list[tuple[str, Options]] = []
        FakeRunner.instances.append(self)

    def options(self, request):
        return parse_options(request, Options(num_ctx=self.num_ctx))

    async def _events(self) -> AsyncIterator[Text | Finished]:
        if FakeRunner.mode == "before":
            raise RequestError("the input length exceeds the context length")
        yield Text("Hel")
        if FakeRunner.mode == "during":
            raise RuntimeError("an error was encountered while running the model")
        if FakeRunner.mode == "stopped":  # the engine process died under the request
            raise RunnerStopped(STOPPED)
        yield Text("lo")
        yield Finished("stop", 3, 1000, 2, 2000, [1, 2, 3, 4, 5])

    def generate(self, prompt: str, options: Options, **kw) -> AsyncIterator:
        self.seen.append((prompt, options))
        return self._events()

    def chat(self, messages, options: Options, **kw) -> AsyncIterator:
        self.seen.append((messages[-1]["content"], options))
        return self._events()

    def close(self) -> None:
        self.closed = True


@pytest.fixture()
def client(tmp_path: Path):
    FakeRunner.mode, FakeRunner.instances = "ok", []
    settings = Settings.from_env({"OLLAMA_MODELS": str(tmp_path / "models")})
    store = Store(settings.models)
    digest = upload(store, write_gguf(tmp_path / "tiny.gguf"))
    list(create_model(store, "fake", files={"tiny.gguf": digest}))
    app = create_app(settings, Scheduler(settings, make_runner=FakeRunner))
    with TestClient(app) as c:
        yield c


def lines(response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines()]


def test_generate_streams_ndjson(client) -> None:
    r = client.post("/api/generate", json={"model": "fake", "prompt": "hi"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    chunks = lines(r)
    assert [c["response"] for c in chunks] == ["Hel", "lo", ""]
    assert [c["done"] for c in chunks] == [False, False, True]
    final = chunks[-1]
    assert final["model"] == "fake" and final["done_reason"] == "stop"
    assert final["context"] == [1, 2, 3, 4, 5] and final["eval_count"] == 2
    assert final["prompt_eval_duration"] == 1000 and final["total_duration"] > 0
    assert final["created_at"].endswith("Z")


def test_non_streaming_is_one_json_object(client) -> None:
    r = client.post("/api/chat", json={"model": "fake", "stream": False,
                                       "messages": [{"role": "USER", "content": "hi"}]})
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    body = r.json()
    assert body["message"] == {"role": "assistant", "content": "Hello"} and body["done"]
    assert "context" not in body


def test_options_reach_the_runner(client) -> None:
    client.post("/api/generate", json={"model": "fake", "prompt": "p",
                                       "options": {"temperature": 0.1, "top_k": 3.0}})
    prompt, options = FakeRunner.instances[-1].seen[-1]
    assert prompt == "p" and options.temperature == 0.1 and options.top_k == 3


def test_error_before_streaming_has_its_status(client) -> None:
    FakeRunner.mode = "before"
    r = client.post("/api/generate", json={"model": "fake", "prompt": "hi"})
    assert r.status_code == 400
    assert r.json() == {"error": "the input length exceeds the context length"}


def test_error_mid_stream_is_the_last_line(client) -> None:
    FakeRunner.mode = "during"
    r = client.post("/api/chat", json={"model": "fake",
                                       "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    chunks = lines(r)
    assert chunks[0]["message"]["content"] == "Hel"
    assert chunks[-1] == {"error": "an error was encountered while running the model"}
    assert not any(c.get("done") for c in chunks)
    FakeRunner.mode = "ok"  # and the server still serves
    assert client.post("/api/generate", json={"model": "fake", "prompt": "x",
                                              "stream": False}).json()["response"] == "Hello"


def test_load_unload_and_ps(client) -> None:
    r = client.post("/api/generate", json={"model": "fake"})
    assert r.json()["done_reason"] == "load"
    ps = client.get("/api/ps").json()["models"]
    assert [m["name"] for m in ps] == ["fake:latest"] and ps[0]["context_length"] == 2048
    r = client.post("/api/generate", json={"model": "fake", "keep_alive": 0})
    assert r.json()["done_reason"] == "unload"
    assert client.get("/api/ps").json() == {"models": []}
    assert FakeRunner.instances[-1].closed


def test_empty_store_lists_no_models(tmp_path) -> None:
    settings = Settings.from_env({"OLLAMA_MODELS": str(tmp_path / "empty")})
    with TestClient(create_app(settings)) as c:
        assert c.get("/api/tags").json() == {"models": []}
        assert c.get("/api/ps").json() == {"models": []}


def sse(response) -> list[str]:
    return [line.removeprefix("data: ") for line in response.text.splitlines() if line]


def test_openai_stream_ends_with_done(client) -> None:
    r = client.post("/v1/chat/completions", json={
        "model": "fake", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": "Hel"}, {"content": "lo"}, {}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_openai_error_mid_stream_is_an_error_event_not_a_truncation(client) -> None:
    FakeRunner.mode = "during"
    r = client.post("/v1/chat/completions", json={
        "model": "fake", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    events = sse(r)
    assert "[DONE]" not in events
    assert json.loads(events[-1]) == {"error": {
        "message": "an error was encountered while running the model", "type": "api_error",
        "param": None, "code": None}}


def test_openai_error_before_streaming_keeps_its_status(client) -> None:
    FakeRunner.mode = "before"
    r = client.post("/v1/completions", json={"model": "fake", "prompt": "hi", "stream": True})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert r.json()["error"]["message"] == "the input length exceeds the context length"


def test_openai_models_list_is_never_null(tmp_path) -> None:
    settings = Settings.from_env({"OLLAMA_MODELS": str(tmp_path / "empty")})
    with TestClient(create_app(settings)) as c:
        assert c.get("/v1/models").json() == {"object": "list", "data": []}


def test_a_dead_engine_is_a_500_with_ollamas_text(client) -> None:
    FakeRunner.mode = "stopped"
    r = client.post("/api/generate", json={"model": "fake", "prompt": "hi", "stream": False})
    assert r.status_code == 500 and r.json() == {"error": STOPPED}
    r = client.post("/api/generate", json={"model": "fake", "prompt": "hi"})
    assert r.status_code == 200 and lines(r)[-1] == {"error": STOPPED}
