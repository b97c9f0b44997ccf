"""all-minilm as a `bert` GGUF (the layout Ollama's library serves) through the live server and
the official client: imported with `ollamapy create`, an embedding model by its capabilities,
and /api/embed, /v1/embeddings answer the golden transformers vectors."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import ollama
import torch
import torch.nn.functional as F

from tests.conftest import DATA, model_path
from tests.e2e.conftest import import_model
from tests.llama_cpp import convert

GOLDEN = json.loads((DATA / "embeddings_minilm.json").read_text())["cases"][:3]  # < 256 tokens


def test_a_bert_gguf_serves_embeddings(server, tmp_path: Path) -> None:
    gguf = convert(model_path("all-minilm"), tmp_path / "all-minilm.gguf", "f16")
    import_model(server, "minilm-gguf", gguf, tmp_path)
    with ollama.Client(host=server.url) as client:
        try:
            show = client.show("minilm-gguf")
            assert list(show.capabilities) == ["embedding"]
            assert show.details.family == "bert"
            texts = [c["text"] for c in GOLDEN]
            vectors = client.embed(model="minilm-gguf", input=texts).embeddings
            for vector, case in zip(vectors, GOLDEN, strict=True):
                cosine = F.cosine_similarity(torch.tensor(vector), torch.tensor(case["embedding"]),
                                             dim=0).item()
                assert cosine >= 0.9999, (case["text"], cosine)
            r = httpx.post(f"{server.url}/v1/embeddings", timeout=300,
                           json={"model": "minilm-gguf", "input": texts[0]})
            assert r.status_code == 200
            alone = torch.tensor(r.json()["data"][0]["embedding"])  # alone, not in a batch of 3
            assert F.cosine_similarity(alone, torch.tensor(vectors[0]), dim=0).item() >= 0.99999
            r = httpx.post(f"{server.url}/api/generate", timeout=300,
                           json={"model": "minilm-gguf", "prompt": "hi"})
            assert r.status_code == 400 and "does not support generate" in r.json()["error"]
        finally:
            client.delete("minilm-gguf")  # the session store as it was
