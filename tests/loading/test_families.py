"""Every decoder family in the family table, as users get its files: a tiny random model built
with transformers' own class, converted by llama.cpp's own converter (tests/families.py
builds each, with tests/llama_cpp.py), and held to transformers from the GGUF and from the
safetensors folder, on the reference and the fast path.

Each case's config sets the family's own features to values that change the logits (a soft
cap below the logits' range, LongRoPE factors far from 1, granite's multipliers, top-k
routing over few experts), and `test_the_features_are_seen` proves it: the same weights with
each feature switched off land far from transformers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
import transformers

import ollamapy
from ollamapy.engine.model import Transformer
from ollamapy.loaded import LoadedModel
from ollamapy.loading.gguf import read_gguf
from ollamapy.loading.gguf_config import CONFIG_TENSORS, config_from_gguf
from ollamapy.loading.load import decoder_tensors
from ollamapy.loading.weights import build_transformer, fuse_projections
from tests.engine.hf_tiny import tiny_hf_model
from tests.engine.test_fast import NEAR_TIE, greedy
from tests.families import CASES, PROMPT, Built, build, hf_logits
from tests.llama_cpp import convert, rewrite_gguf, write_gpt2_tokenizer
from tests.loading.test_tiny_gguf import write_tiny_gguf

MXFP4 = gguf.GGMLQuantizationType.MXFP4


@pytest.fixture(scope="module", params=sorted(CASES))
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[str, Built]:
    name = request.param
    return name, build(name, tmp_path_factory.mktemp(name))


def with_config(path: Path, **fields: Any) -> Transformer:
    """The file's reference model with some config fields replaced (weights of a feature
    switched off, such as attention sinks, left out)."""
    with read_gguf(path) as gguf:
        values = {n: gguf.tensor(n).tolist() for n in CONFIG_TENSORS if n in gguf.tensors}
        config = dataclasses.replace(
            config_from_gguf(gguf.metadata, gguf.tensors.keys(), values), **fields)
        with torch.device("meta"):
            wanted = Transformer(config).state_dict().keys()
        tensors = fuse_projections(dict(decoder_tensors(gguf, config)), config)
        return build_transformer(config, ((n, t) for n, t in tensors.items() if n in wanted),
                                 "cpu", torch.float32)


@pytest.mark.parametrize("source", ["gguf", "safetensors"])
def test_logits_match_transformers(family: tuple[str, Built], source: str) -> None:
    name, built = family
    m = ollamapy.load(built.gguf if source == "gguf" else built.folder, device="cpu")
    assert m.model.config.arch == CASES[name].arch
    assert m.tokenize(PROMPT) == built.ids  # the vocabulary came through the conversion too
    got = m.model(torch.tensor([built.ids]), all_logits=True)[0]
    expected = hf_logits(built, built.ids)
    print(f"{name} {source}: max |logit diff| {(got - expected).abs().max():.2e}")
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_the_features_are_seen(family: tuple[str, Built]) -> None:
    name, built = family
    expected = hf_logits(built, built.ids)
    for feature, off in CASES[name].ablations.items():
        model = with_config(built.gguf, **off)
        diff = (model(torch.tensor([built.ids]), all_logits=True)[0] - expected).abs().max()
        print(f"{name} without {feature}: max |logit diff| {diff:.3f}")
        assert diff > 1e-2, f"{name}: switching {feature} off changes nothing the test sees"


def test_greedy_matches_transformers(family: tuple[str, Built]) -> None:
    """Eight greedy tokens through the public API from the GGUF equal transformers' argmax."""
    _, built = family
    m = ollamapy.load(built.gguf, device="cpu")
    want = list(built.ids)
    for _ in range(8):
        want.append(int(hf_logits(built, want)[-1].argmax()))
    want = want[len(built.ids):]
    eos = m.tokenizer.eos_ids
    want = want[:next((i for i, t in enumerate(want) if t in eos), len(want))]
    # a window inside phi3's original 64 positions: LongRoPE's short factors, as
    # transformers takes for a sequence this short (a longer window takes the long ones,
    # test_longrope_takes_the_long_factors_beyond_the_original_context)
    chunks = list(m.generate(PROMPT, raw=True, temperature=0, num_predict=8, num_ctx=64))
    assert chunks[-1]["eval_count"] == len(want)
    assert "".join(c["response"] for c in chunks) == m.detokenize(want)


def test_fast_path_decodes_the_reference_tokens(family: tuple[str, Built]) -> None:
    """The q8_0 file on the fast path (int8 weights, bf16 at each kernel's input) decodes the
    tokens its own reference model does, or differs first at a near tie."""
    name, built = family
    fast = ollamapy.load(built.gguf_q8, device="cpu", fast=True, compile=False)
    assert_decodes_the_reference_tokens(ollamapy.load(built.gguf_q8, device="cpu"), fast,
                                        built.ids, name)


def assert_decodes_the_reference_tokens(reference: LoadedModel, fast: LoadedModel,
                                        ids: list[int], name: str) -> None:
    """12 greedy tokens: the fast path's equal the reference's, or the first that differs was
    within NEAR_TIE of the reference's best logit (bf16 activations swap near-equal ones)."""
    eos = reference.tokenizer.eos_ids
    expected = greedy(reference.model, ids, 12, eos)
    got = greedy(fast.model, ids, 12, eos)
    if got != expected:
        j = next(i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b)
        logits = reference.model(torch.tensor([ids + expected[:j]]))[0]
        gap = float(logits.max() - logits[got[j]])
        print(f"{name}: first difference at token {j}, {gap:.3f} behind in the reference")
        assert gap < NEAR_TIE


@pytest.mark.parametrize("family", [n for n, c in CASES.items() if c.moe], indirect=True)
def test_compiled_moe_step_equals_eager(family: tuple[str, Built]) -> None:
    """An MoE layer inside the server's compiled decode step (one graph, no routing-dependent
    shapes) decodes what the same step does eagerly."""
    _, built = family
    model = ollamapy.load(built.gguf_q8, device="cpu", fast=True, compile=False).model
    no_eos = frozenset[int]()
    torch._dynamo.reset()
    assert greedy(model, built.ids, 6, no_eos, compiled=True) == greedy(model, built.ids, 6,
                                                                         no_eos)


@pytest.mark.parametrize("family", ["phi3"], indirect=True)
def test_longrope_takes_the_long_factors_beyond_the_original_context(
        family: tuple[str, Built]) -> None:
    """phi3 with LongRoPE: a model set up for a context past the original 64 positions uses
    the long factors, as transformers does for a sequence that long."""
    _, built = family
    m = ollamapy.load(built.gguf, device="cpu")
    ids = (built.ids * 4)[:80]  # > original_max_position_embeddings
    m.model.init_rope(context=128)
    got = m.model(torch.tensor([ids]), all_logits=True)[0]
    torch.testing.assert_close(got, hf_logits(built, ids), atol=1e-4, rtol=1e-4)
    long = m.model.inv_freq.clone()
    m.model.init_rope(context=0)  # the short factors: not what transformers does at 80
    assert (m.model(torch.tensor([ids]), all_logits=True)[0] - hf_logits(built, ids)
            ).abs().max() > 1e-2
    # the notebook API picks the factors by num_ctx, as the server's runner does
    list(m.generate(PROMPT, raw=True, num_predict=1, num_ctx=128))
    assert torch.equal(m.model.inv_freq, long)
    list(m.generate(PROMPT, raw=True, num_predict=1, num_ctx=32))
    assert not torch.equal(m.model.inv_freq, long)


@pytest.mark.parametrize(("arch", "layers", "wide"), [
    ("gemma2", 42, False), ("gemma2", 46, True), ("gemma3", 48, False), ("gemma3", 62, True)])
def test_gemma_27b_scales_attention_by_the_model_width(arch: str, layers: int, wide: bool
                                                       ) -> None:
    """Gemma 2 and 3 27B were trained with queries scaled by 1/sqrt(dim / n_heads), not
    1/sqrt(head_dim); GGUF does not say so and llama.cpp tells them by their depth."""
    dim, heads, head_dim = 4608, 32, 128
    meta = {"general.architecture": arch, f"{arch}.embedding_length": dim,
            f"{arch}.block_count": layers, f"{arch}.attention.head_count": heads,
            f"{arch}.attention.head_count_kv": 16, f"{arch}.attention.key_length": head_dim,
            f"{arch}.feed_forward_length": 36864, f"{arch}.vocab_size": 256000}
    config = config_from_gguf(meta, set())
    assert config.scale == pytest.approx((dim / heads) ** -0.5 if wide else head_dim**-0.5)


def test_gemma3_file_with_a_vision_tower_loads_its_text_model(tmp_path: Path) -> None:
    """Ollama's gemma3 files hold the vision tower (v.*) and projector (mm.*) beside the text
    model: the text model loads, on both paths, and answers as transformers does."""
    hf = tiny_hf_model("gemma3", seed=5, query_pre_attn_scalar=32)  # = head_dim, as GGUF's
    vision = {"v.blk.0.attn_q.weight": np.ones((8, 8), np.float32),
              "v.patch_embd.weight": np.ones((8, 3, 2, 2), np.float32),
              "mm.input_projection.weight": np.ones((8, 64), np.float32)}
    path = tmp_path / "gemma3-vision.gguf"
    write_tiny_gguf(hf, "gemma3", path, extra=vision)
    ids = torch.tensor([[2, 10, 20, 30, 40, 50, 60, 70]])
    with torch.no_grad():
        expected = hf(ids).logits[0].float()
    reference = ollamapy.load(path, device="cpu")
    torch.testing.assert_close(reference.model(ids, all_logits=True)[0], expected,
                               atol=1e-4, rtol=1e-4)
    fast = ollamapy.load(path, device="cpu", fast=True, compile=False)
    assert fast.model(ids, all_logits=True)[0][-1].argmax() == expected[-1].argmax()


def mxfp4_round(w: torch.Tensor) -> torch.Tensor:
    """w (..., K) → the nearest MXFP4 values (blocks of 32 along K), checked to be what MXFP4
    stores exactly: quantizing them again gives them back."""
    rounded = gguf.quants.dequantize(gguf.quants.quantize(w.numpy(), MXFP4), MXFP4)
    again = gguf.quants.dequantize(gguf.quants.quantize(rounded, MXFP4), MXFP4)
    assert np.array_equal(rounded, again)
    return torch.from_numpy(rounded)


def test_gpt_oss_with_mxfp4_experts(tmp_path: Path) -> None:
    """gpt-oss as Ollama ships it: experts in MXFP4. transformers' experts are first rounded
    to MXFP4 values, so the file holds the oracle's weights exactly; our reference matches
    transformers, and the fast path (the experts int8 from the MXFP4 blocks) decodes the
    reference's tokens or differs at a near tie."""
    folder = tmp_path / "hf"
    folder.mkdir()
    case = CASES["gpt-oss"]
    config = case.config(write_gpt2_tokenizer(folder))
    config._attn_implementation = "eager"
    torch.manual_seed(8)
    hf = case.model(config).eval()
    with torch.no_grad():
        for layer in hf.model.layers:
            experts = layer.mlp.experts
            # gate_up (E, dim, 2 ffn) and down (E, ffn, dim): MXFP4 blocks run along the input
            experts.gate_up_proj.copy_(mxfp4_round(experts.gate_up_proj.transpose(1, 2))
                                       .transpose(1, 2))
            experts.down_proj.copy_(mxfp4_round(experts.down_proj.transpose(1, 2))
                                    .transpose(1, 2))
    hf.save_pretrained(folder)
    f32 = convert(folder, tmp_path / "f32.gguf")
    with read_gguf(f32) as file:
        experts = {n: "MXFP4" for n in file.tensors if "_exps.weight" in n}
    path = rewrite_gguf(f32, tmp_path / "mxfp4.gguf", types=experts)
    with read_gguf(path) as file:
        assert {file.tensors[n].type_name for n in experts} == {"MXFP4"}

    ids = transformers.AutoTokenizer.from_pretrained(folder)(PROMPT).input_ids
    with torch.no_grad():
        expected = hf(torch.tensor([ids])).logits[0].float()
    reference = ollamapy.load(path, device="cpu")
    got = reference.model(torch.tensor([ids]), all_logits=True)[0]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)

    fast = ollamapy.load(path, device="cpu", fast=True, compile=False)
    assert type(fast.model.layers[0].ffn.w_gate).__name__ == "Int8Experts"
    assert_decodes_the_reference_tokens(reference, fast, ids, "gpt-oss MXFP4")
