"""/api/embed, /api/embeddings and /v1/embeddings on a completion model (smollm2) through the
live server, as Ollama's llama.cpp runner answered them (up to Ollama 0.24): the last prompt
token's final hidden state, L2-normalised by /api/embed and raw from /api/embeddings, checked
against llama.cpp's own vectors; the model stays a completion model by its capabilities."""

from __future__ import annotations

import json

import httpx
import pytest
import torch
import torch.nn.functional as F

import ollamapy
from tests.conftest import DATA, model_path

MODEL = "smollm2:135m"
TEXTS = ["Why is the sky blue?", "hi", "The quick brown fox jumps over the lazy dog."]
GOLDEN = json.loads((DATA / "embeddings_smollm2.json").read_text())["cases"]


@pytest.fixture(scope="module")
def reference():
    """The float reference model: what the server's quantized fast path must agree with."""
    return ollamapy.load(model_path("smollm2-135m.gguf"), device="cpu")


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=300)


def test_embed_on_a_completion_model(server, reference) -> None:
    r = post(server, "/api/embed", {"model": MODEL, "input": TEXTS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == MODEL and len(body["embeddings"]) == len(TEXTS)
    ids = [reference.embedding_ids(t) for t in TEXTS]
    assert body["prompt_eval_count"] == sum(len(i) for i in ids)
    for vector, text in zip(body["embeddings"], TEXTS, strict=True):
        v = torch.tensor(vector)
        assert v.shape == (576,) and abs(v.norm().item() - 1) < 1e-5
        want = torch.tensor(reference.embed([text])[0])
        assert F.cosine_similarity(v, want, dim=0).item() > 0.999, text
    alone = post(server, "/api/embed", {"model": MODEL, "input": TEXTS[0]}).json()
    assert alone["embeddings"][0] == pytest.approx(body["embeddings"][0], abs=1e-5)
    short = post(server, "/api/embed", {"model": MODEL, "input": TEXTS[0], "dimensions": 64})
    v = torch.tensor(short.json()["embeddings"][0])
    assert v.shape == (64,) and abs(v.norm().item() - 1) < 1e-5
    torch.testing.assert_close(v, F.normalize(torch.tensor(alone["embeddings"][0][:64]), dim=0))


@pytest.mark.parametrize("case", GOLDEN, ids=lambda c: c["text"])
def test_legacy_embeddings_match_llama_cpp(server, reference, case) -> None:
    """/api/embeddings is llama.cpp's raw vector (tests/data/embeddings_smollm2.json: what
    Ollama's runner returned), here from the quantized fast path: the same direction and,
    within quantization noise, the same length; /api/embed is that vector normalised."""
    assert reference.embedding_ids(case["text"]) == case["input_ids"]
    r = post(server, "/api/embeddings", {"model": MODEL, "prompt": case["text"]})
    assert r.status_code == 200, r.text
    raw, golden = torch.tensor(r.json()["embedding"]), torch.tensor(case["embedding"])
    assert raw.shape == (576,) and raw.norm().item() > 10  # not normalised, as Ollama's
    assert F.cosine_similarity(raw, golden, dim=0).item() > 0.999
    assert abs(raw.norm().item() / golden.norm().item() - 1) < 0.03
    unit = post(server, "/api/embed", {"model": MODEL, "input": case["text"]}).json()
    torch.testing.assert_close(F.normalize(raw, dim=0), torch.tensor(unit["embeddings"][0]),
                               atol=1e-5, rtol=1e-4)


def test_openai_embeddings_on_a_completion_model(server) -> None:
    r = post(server, "/v1/embeddings", {"model": MODEL, "input": TEXTS[:2]})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["index"] for d in data] == [0, 1]
    assert all(len(d["embedding"]) == 576 for d in data)


def test_too_long_for_the_context(server) -> None:
    long_text = " ".join(f"word{i}" for i in range(200))  # > 64 tokens
    options = {"num_ctx": 64}
    r = post(server, "/api/embed", {"model": MODEL, "input": long_text, "truncate": False,
                                    "options": options})
    assert r.status_code == 400
    assert r.json() == {"error": "the input length exceeds the context length"}
    r = post(server, "/api/embed", {"model": MODEL, "input": long_text, "options": options})
    assert r.status_code == 200
    assert len(r.json()["embeddings"][0]) == 576 and r.json()["prompt_eval_count"] == 64


def test_embed_while_the_model_generates(server) -> None:
    """An embedding request to a model that is generating is served between its decode
    steps: both answer, the generation in full."""
    with httpx.Client(base_url=server.url, timeout=300) as http, \
            http.stream("POST", "/api/generate", json={
                "model": MODEL, "prompt": "Tell me a story.",
                "options": {"temperature": 0, "num_predict": 24}}) as generation:
        lines = generation.iter_lines()
        assert '"done":false' in next(lines)  # generating now
        r = http.post("/api/embed", json={"model": MODEL, "input": TEXTS})
        assert r.status_code == 200 and len(r.json()["embeddings"]) == len(TEXTS)
        last = [line for line in lines if line][-1]
    assert '"done":true' in last and '"eval_count":24' in last


def test_a_completion_model_keeps_its_capabilities(client) -> None:
    assert "completion" in client.show(MODEL).capabilities
    assert "embedding" not in client.show(MODEL).capabilities
    r = client.generate(model=MODEL, prompt="Hi", options={"temperature": 0, "num_predict": 2})
    assert r.done and r.eval_count == 2
