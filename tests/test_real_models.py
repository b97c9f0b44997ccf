"""The real models (../shared/MODELS.md) against reference outputs from llama.cpp and HF
transformers (tests/data/, copied from ../shared/golden/)."""

from __future__ import annotations

import json

import pytest
import torch

from ollamapy.engine.generate import Delta, Done, generate
from ollamapy.engine.options import Options
from tests.conftest import DATA

LOGITS = {name: json.loads((DATA / f"logits_{name}.json").read_text())["cases"]
          for name in ("smollm2", "gemma3")}


def greedy_ids(m, ids: list[int], n: int) -> list[int]:
    """n greedy tokens through the product's generation loop (EOS included when reached)."""

    class Silent:
        def push(self, token_id: int) -> str:
            return ""

        def flush(self) -> str:
            return ""

    out: list[int] = []
    opts = Options(temperature=0.0, num_predict=n, num_ctx=len(ids) + n + 1)
    for event in generate(m.model, ids, opts, eos_ids=m.tokenizer.eos_ids, detokenizer=Silent()):
        if isinstance(event, Delta) and event.token >= 0:
            out.append(event.token)
        elif isinstance(event, Done) and event.done_reason == "stop":
            # the end-of-generation token itself is not yielded: it is the greedy next one
            stop = int(m.logits(ids + out).argmax())
            assert stop in m.tokenizer.eos_ids
            out.append(stop)
    return out


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_logits_and_greedy_ids_match_transformers(name: str, request) -> None:
    m = request.getfixturevalue(name)
    for case in LOGITS[name]:
        ids = m.tokenize(case["prompt"], add_special=True, parse_special=True)
        assert ids == case["input_ids"]
        logits = m.logits(ids)
        assert logits.dtype == torch.float32 and logits.shape == (m.model.config.vocab_size,)
        top = case["last_logits_top20"]
        diff = (logits[top["ids"]] - torch.tensor(top["values"])).abs().max().item()
        assert diff <= 1e-3, f"{case['prompt']!r}: max abs diff {diff}"
        assert torch.topk(logits, 20).indices.tolist() == top["ids"]
        expected = case["greedy_32"]
        got = greedy_ids(m, ids, len(expected))
        assert got == expected, f"{case['prompt']!r}"


def test_minilm_embeddings_match_transformers(minilm) -> None:
    cases = json.loads((DATA / "embeddings_minilm.json").read_text())["cases"]
    texts = [c["text"] for c in cases]
    from ollamapy.engine.bert import truncate

    for c in cases:  # the reference ids are cut to the pipeline's max_seq_length
        ids = minilm.tokenize(c["text"])
        assert truncate(ids, minilm.model.config.max_tokens) == c["input_ids"]
    vectors = minilm.embed(texts)  # all texts in one padded batch
    cosines = []
    for c, v in zip(cases, vectors, strict=True):
        ours, ref = torch.tensor(v), torch.tensor(c["embedding"])
        assert abs(ours.norm().item() - 1.0) < 1e-5
        cosines.append(torch.nn.functional.cosine_similarity(ours, ref, dim=0).item())
    assert min(cosines) >= 0.9999, cosines


def test_decoder_embeds_and_encoder_refuses_generate(smollm2, minilm) -> None:
    """A completion model embeds as Ollama's llama.cpp runner does: its last prompt token's
    final hidden state (here L2-normalised, as /api/embed)."""
    (vector,) = smollm2.embed(["hi"])
    hidden = smollm2.model(torch.tensor([smollm2.embedding_ids("hi")]), hidden=True)[0]
    assert len(vector) == 576
    torch.testing.assert_close(torch.tensor(vector), torch.nn.functional.normalize(hidden, dim=0))
    with pytest.raises(ValueError, match="does not generate"):
        next(minilm.generate("hi"))
