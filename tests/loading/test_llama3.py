"""Llama 3.x RoPE scaling: `rope_type: llama3` in config.json, and the `rope_freqs.weight`
tensor llama.cpp's converter writes into every Llama 3.1/3.2/3.3 GGUF (Ollama's `llama3.2`).

A tiny random Llama with that scaling (base 500000 as Llama 3's; original context 512, so its
eight frequencies fall in all three bands: kept, divided by the factor, and blended) is
converted by llama.cpp's own converter and held to transformers, from the GGUF and from the
safetensors folder, on the reference and the fast path.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import transformers
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

import ollamapy
from ollamapy.engine.rope import llama3_factors, rope_frequencies
from ollamapy.loading.gguf import read_gguf
from tests.engine.hf_tiny import tiny_hf_model
from tests.llama_cpp import convert, save_with_tokenizer, tiny_tokenizer

SCALING = {"rope_type": "llama3", "rope_theta": 500_000.0, "factor": 8.0,
           "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 512}
HEAD_DIM = 16
PROMPT = "Hello world! How are you today?"


def scaling_args(s: dict) -> tuple:
    return (s["rope_theta"], s["factor"], s["low_freq_factor"], s["high_freq_factor"],
            s["original_max_position_embeddings"])


@pytest.mark.parametrize("dim,scaling", [
    (HEAD_DIM, SCALING),
    (64, {**SCALING, "original_max_position_embeddings": 8192}),  # Llama 3.2 1B/3B
    (128, {**SCALING, "factor": 32.0, "original_max_position_embeddings": 8192}),
])
def test_llama3_factors_give_transformers_frequencies(dim: int, scaling: dict) -> None:
    config = transformers.LlamaConfig(hidden_size=dim * 4, num_attention_heads=4, head_dim=dim,
                                      rope_parameters=scaling)
    expected, attention_factor = ROPE_INIT_FUNCTIONS["llama3"](config)
    factors = llama3_factors(dim, *scaling_args(scaling))
    assert attention_factor == 1.0
    assert {f == 1.0 for f in factors} == {True, False}  # both bands present
    torch.testing.assert_close(rope_frequencies(dim, scaling["rope_theta"], factors=factors),
                               expected.float(), rtol=1e-6, atol=0)


@pytest.fixture(scope="module")
def llama3(tmp_path_factory: pytest.TempPathFactory):
    """(transformers model, its folder, the converter's GGUF of it)."""
    tokenizer = tiny_tokenizer()
    hf = tiny_hf_model("llama", seed=11, vocab_size=tokenizer.get_vocab_size(),
                       rope_parameters=SCALING, tie_word_embeddings=True,
                       max_position_embeddings=2048, initializer_range=0.2)
    root = tmp_path_factory.mktemp("llama3")
    folder = save_with_tokenizer(hf, root / "hf", tokenizer)
    return hf, folder, convert(folder, root / "llama3.gguf")


def ids_of(hf_folder: Path) -> list[int]:
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_folder)
    return tokenizer(PROMPT).input_ids


def test_the_converter_writes_the_factors_we_compute(llama3) -> None:
    _, _, path = llama3
    with read_gguf(path) as gguf:
        assert "llama.rope.scaling.type" not in gguf.metadata  # only the tensor says it
        written = gguf.tensor("rope_freqs.weight")
    ours = torch.tensor(llama3_factors(HEAD_DIM, *scaling_args(SCALING)))
    torch.testing.assert_close(written, ours, rtol=1e-6, atol=0)
    assert set(ours.tolist()) > {1.0, SCALING["factor"]}  # kept, divided and blended


@pytest.mark.parametrize("source", ["gguf", "safetensors"])
def test_logits_and_greedy_match_transformers(llama3, source: str) -> None:
    hf, folder, path = llama3
    m = ollamapy.load(path if source == "gguf" else folder, device="cpu")
    assert m.model.config.rope_freq_factors == pytest.approx(
        llama3_factors(HEAD_DIM, *scaling_args(SCALING)), rel=1e-6)
    ids = ids_of(folder)
    assert m.tokenize(PROMPT) == ids  # the vocabulary came through the conversion too
    with torch.no_grad():
        expected = hf(torch.tensor([ids])).logits[0].float()  # (T, vocab)
    got = m.model(torch.tensor([ids]), all_logits=True)[0]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)

    # without the factors the same weights give other logits: the test can see the scaling
    plain = dataclasses.replace(m.model.config, rope_freq_factors=())
    m.model.config = plain
    m.model.init_rope()
    assert (m.model(torch.tensor([ids]), all_logits=True)[0] - expected).abs().max() > 1e-2

    # greedy: 8 tokens of transformers' argmax, then ours through the public API
    m = ollamapy.load(path if source == "gguf" else folder, device="cpu")
    greedy = list(ids)
    with torch.no_grad():
        for _ in range(8):
            greedy.append(int(hf(torch.tensor([greedy])).logits[0, -1].argmax()))
    chunks = list(m.generate(PROMPT, raw=True, temperature=0, num_predict=8))
    eos = m.tokenizer.eos_ids
    want = greedy[len(ids):]
    want = want[:next((i for i, t in enumerate(want) if t in eos), len(want))]
    assert chunks[-1]["eval_count"] == len(want)
    assert "".join(c["response"] for c in chunks) == m.detokenize(want)


def test_fast_path_applies_the_same_scaling(llama3) -> None:
    _, folder, path = llama3
    reference = ollamapy.load(path, device="cpu")
    fast = ollamapy.load(path, device="cpu", fast=True, compile=False)
    assert torch.equal(fast.model.inv_freq, reference.model.inv_freq)
    ids = torch.tensor([ids_of(folder)])
    want = reference.model(ids, all_logits=True)
    reference.model.config = dataclasses.replace(reference.model.config, rope_freq_factors=())
    reference.model.init_rope()
    unscaled = reference.model(ids, all_logits=True)
    got = fast.model(ids, all_logits=True)
    # bf16 at each kernel's input and an int8 head move every logit a little; the fast
    # logits must still be nearer the scaled reference than the same model without scaling
    near, far = (got - want).square().mean(), (got - unscaled).square().mean()
    print(f"fast vs scaled reference: mse {near:.2e}; vs unscaled {far:.2e}")
    assert near < far / 2
