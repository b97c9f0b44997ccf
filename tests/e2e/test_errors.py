"""Bad requests get Ollama's status and text, and the server keeps serving."""

from __future__ import annotations

import httpx
import ollama
import pytest


def post(server, path: str, body: bytes | dict, method: str = "POST") -> httpx.Response:
    if isinstance(body, dict):
        return httpx.request(method, f"{server.url}{path}", json=body, timeout=120)
    return httpx.request(method, f"{server.url}{path}", content=body, timeout=120)


def test_unknown_model_is_404_with_ollamas_text(client, server) -> None:
    """generate/chat/embed/show/delete/copy of a model that is not there: 404 in Ollama's
    words, and no state is left behind (no model listed, none loaded, no copy made)."""
    tags_before = httpx.get(f"{server.url}/api/tags").json()
    with pytest.raises(ollama.ResponseError) as e:
        client.generate(model="nope", prompt="hi")
    assert e.value.status_code == 404 and e.value.error == "model 'nope' not found"
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="nope:7b", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 404 and e.value.error == "model 'nope:7b' not found"
    with pytest.raises(ollama.ResponseError) as e:
        client.embed(model="nope", input="hi")
    assert e.value.error == 'model "nope" not found, try pulling it first'
    with pytest.raises(ollama.ResponseError) as e:
        client.show("nope")
    assert e.value.status_code == 404 and e.value.error == "model 'nope' not found"
    with pytest.raises(ollama.ResponseError) as e:
        client.delete("nope")
    assert e.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as e:
        client.copy("nope", "other")
    assert e.value.status_code == 404 and e.value.error == 'model "nope" not found'
    r = post(server, "/api/generate", {"prompt": "hi"})
    assert r.status_code == 404 and r.json() == {"error": "model '' not found"}
    assert httpx.get(f"{server.url}/api/tags").json() == tags_before
    running = {m["name"] for m in httpx.get(f"{server.url}/api/ps").json()["models"]}
    assert not running & {"nope:latest", "nope:7b", "other:latest"}


def test_malformed_json_is_400(server) -> None:
    for path in ("/api/generate", "/api/chat", "/api/embed", "/api/show", "/api/create"):
        r = post(server, path, b'{"model": "smollm2:135m",')
        assert r.status_code == 400 and r.json()["error"] == "unexpected EOF", path
        r = post(server, path, b"xyz")
        assert r.status_code == 400
        assert r.json()["error"] == "invalid character 'x' looking for beginning of value"
        r = post(server, path, b"")
        assert r.status_code == 400 and r.json()["error"] == "missing request body"


def test_wrong_field_types_are_400(server) -> None:
    r = post(server, "/api/generate", {"model": "smollm2:135m", "prompt": 5})
    assert r.status_code == 400
    assert r.json()["error"] == ("json: cannot unmarshal number into Go struct field "
                                 "GenerateRequest.prompt of type string")
    r = post(server, "/api/chat", {"model": "smollm2:135m", "messages": "hi"})
    assert r.status_code == 400 and "ChatRequest.messages" in r.json()["error"]
    r = post(server, "/api/generate", {"model": "smollm2:135m", "prompt": "hi",
                                       "options": {"temperature": "hot"}})
    assert r.status_code == 400
    assert r.json()["error"] == 'option "temperature" must be of type float32'
    r = post(server, "/api/generate", {"model": "smollm2:135m", "prompt": "hi",
                                       "keep_alive": "10"})
    assert r.status_code == 400
    assert r.json()["error"] == 'time: missing unit in duration "10"'
    r = post(server, "/api/embed", {"model": "all-minilm", "input": [1, 2]})
    assert r.status_code == 400 and r.json()["error"] == "invalid input type"


def test_request_rules(server) -> None:
    r = post(server, "/api/chat", {"messages": []})
    assert r.status_code == 400 and r.json()["error"] == "model is required"
    r = post(server, "/api/generate", {"model": "smollm2:135m", "prompt": "hi", "raw": True,
                                       "system": "x"})
    assert r.status_code == 400
    assert r.json()["error"] == "raw mode does not support template, system, or context"
    r = post(server, "/api/generate", {"model": "smollm2:135m", "prompt": "hi",
                                       "top_logprobs": 21})
    assert r.json()["error"] == "top_logprobs must be between 0 and 20"
    r = post(server, "/api/chat", {"model": "smollm2:135m", "messages": [
        {"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {
            "name": "f", "parameters": {"type": "object", "properties": {}}}}]})
    assert r.status_code == 400
    assert r.json()["error"] == "registry.ollama.ai/library/smollm2:135m does not support tools"
    r = post(server, "/api/generate", {"model": "all-minilm", "prompt": "hi"})
    assert r.status_code == 400 and r.json()["error"] == '"all-minilm" does not support generate'
    r = post(server, "/api/generate", {"model": "smollm2:135m", "prompt": "x " * 300,
                                       "truncate": False, "options": {"num_ctx": 64}})
    assert r.status_code == 400
    assert r.json()["error"] == "the input length exceeds the context length"


def test_invalid_names_are_400(server) -> None:
    r = post(server, "/api/show", {"model": "bad/name/with/too/many/parts"})
    assert r.status_code == 400 and r.json()["error"] == "invalid model name"
    r = post(server, "/api/create", {"model": "../evil", "from": "smollm2:135m"})
    assert r.status_code == 400 and r.json()["error"] == "invalid model name"
    r = post(server, "/api/copy", {"source": "smollm2:135m", "destination": "a:b:c/.."})
    assert r.status_code == 400 and r.json()["error"] == 'destination "a:b:c/.." is invalid'
    r = post(server, "/api/delete", {"model": "x/../y"}, method="DELETE")
    assert r.status_code == 400 and r.json()["error"] == 'name "x/../y" is invalid'


def test_create_errors(server) -> None:
    r = post(server, "/api/create", {"model": "empty"})
    assert r.status_code == 400
    assert r.json()["error"] == "neither 'from' or 'files' was specified"
    r = post(server, "/api/create", {"model": "x", "files": {"/etc/passwd": "sha256:" + "0" * 64}})
    assert r.status_code == 400 and r.json()["error"] == "file path must be relative"
    r = post(server, "/api/create", {"model": "x", "from": "smollm2:135m",
                                     "template": "{{ .Prompt "})
    assert r.status_code == 400 and r.json()["error"].startswith("template error:")


def test_wrong_method_and_path(server) -> None:
    """Routing (hardening.md §7 item 12): a wrong method is a 405 and an unknown path a 404,
    in Ollama's plain-text words; `GET`/`HEAD /` say the server is running, and `HEAD`
    works where `GET` does (/api/tags, /api/version)."""
    r = httpx.get(f"{server.url}/api/generate")
    assert r.status_code == 405 and r.text == "405 method not allowed"
    for method, path in (("POST", "/api/tags"), ("GET", "/api/show"), ("GET", "/api/delete"),
                         ("POST", "/api/delete"), ("GET", "/api/create"), ("PUT", "/api/chat"),
                         ("DELETE", "/api/pull"), ("POST", "/api/ps")):
        r = httpx.request(method, f"{server.url}{path}")
        assert (r.status_code, r.text) == (405, "405 method not allowed"), (method, path)
    for path in ("/api/nothing", "/api/generate/x", "/v2/", "/api"):
        r = httpx.get(f"{server.url}{path}")
        assert r.status_code == 404 and r.text == "404 page not found", path
    r = httpx.get(server.url)
    assert (r.status_code, r.text) == (200, "Ollama is running")
    for path in ("/", "/api/tags", "/api/version"):
        r = httpx.head(f"{server.url}{path}")
        assert r.status_code == 200 and r.content == b"", path


def test_16_an_embed_input_longer_than_the_context(server) -> None:
    """Context overflow (hardening.md §7 item 16): /api/embed with `truncate: false` is a 400
    `the input length exceeds the context length`; with `truncate: true` (the default) the
    input is cut to the context and embedded (200); an over-long chat is truncated, never a
    500."""
    long_text = " ".join(f"word{i}" for i in range(700))  # > all-minilm's 512 positions
    r = post(server, "/api/embed", {"model": "all-minilm", "input": long_text,
                                    "truncate": False})
    assert r.status_code == 400
    assert r.json() == {"error": "the input length exceeds the context length"}
    r = post(server, "/api/embed", {"model": "all-minilm", "input": ["short", long_text],
                                    "truncate": False})
    assert r.status_code == 400  # one over-long input fails the request
    for truncate in ({"truncate": True}, {}):
        r = post(server, "/api/embed", {"model": "all-minilm", "input": long_text, **truncate})
        assert r.status_code == 200
        (vector,) = r.json()["embeddings"]
        assert len(vector) == 384 and 0 < r.json()["prompt_eval_count"] <= 512
    r = post(server, "/api/chat", {"model": "smollm2:135m", "stream": False, "messages": [
        {"role": "user", "content": long_text}], "options": {"num_ctx": 64, "num_predict": 1}})
    assert r.status_code == 200 and r.json()["done"] is True


def test_create_refuses_a_model_we_cannot_run(client, tmp_path) -> None:
    """A GGUF of an architecture the engine lacks: a 400 naming it at create time, through the
    official client, and the model list unchanged."""
    from tests.store.conftest import write_gguf

    before = client.list().models
    digest = client.create_blob(write_gguf(tmp_path / "mamba.gguf", arch="mamba"))
    with pytest.raises(ollama.ResponseError) as info:
        client.create(model="mamba-test", files={"model.gguf": digest})
    assert info.value.status_code == 400
    assert info.value.error.startswith("model.gguf: unsupported architecture 'mamba'")
    assert client.list().models == before


def test_server_still_serves_after_errors(client) -> None:
    r = client.generate(model="smollm2:135m", prompt="Hi", options={"temperature": 0,
                                                                     "num_predict": 2})
    assert r.done and r.eval_count == 2
