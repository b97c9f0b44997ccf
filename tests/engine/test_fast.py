"""The fast path: quantized weights (kernels/) and the compiled batched decode step, held to
the float reference path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import ollamapy
from ollamapy.engine.batch import Batch
from ollamapy.engine.compiled import CompiledDecode
from ollamapy.engine.options import Options
from ollamapy.engine.seq import Seq, window
from ollamapy.loaded import LoadedModel
from tests.conftest import DATA, model_path
from tests.engine.hf_tiny import tiny_hf_model
from tests.loading.test_tiny_gguf import write_tiny_gguf

NEAR_TIE = 0.5  # logits this close can swap order under bf16 activations


class Silent:
    def push(self, token_id: int) -> str:
        return ""

    def flush(self) -> str:
        return ""


def greedy(model, ids: list[int], n: int, eos: frozenset[int], compiled: bool = False
           ) -> list[int]:
    """n greedy tokens after ids, through a one-slot Batch (its decode step compiled as the
    server's is, if `compiled`)."""
    batch = Batch(model, slots=1, num_ctx=len(ids) + n + 1)
    if compiled:
        batch.decode = CompiledDecode(model, 1, model.device)
    seq = Seq(ids, Options(temperature=0, num_predict=n, num_ctx=len(ids) + n + 1),
              num_ctx=len(ids) + n + 1, eos_ids=eos, detokenizer=Silent())
    batch.add(seq)
    while batch.active:
        batch.step()
    return seq.history[len(ids):]


@pytest.fixture(scope="module")
def fast_smollm2():
    return ollamapy.load(model_path("smollm2-135m.gguf"), device="cpu", fast=True, compile=False)


def test_fast_model_keeps_weights_quantized(fast_smollm2) -> None:
    from ollamapy_kernels.policy import int4_layer, int8_layer

    int4 = int4_layer("cpu")
    attn, ffn = fast_smollm2.model.layers[0].attn, fast_smollm2.model.layers[0].ffn
    assert isinstance(attn.wqkv, int4) and isinstance(ffn.w_gate_up, int4)
    assert not hasattr(attn, "wq")  # fused: no separate q/k/v
    assert isinstance(fast_smollm2.model.output, int8_layer("cpu"))  # the tied head, quantized
    resident = sum(m.nbytes for m in fast_smollm2.model.modules() if hasattr(m, "nbytes")
                   and not list(m.children()))
    assert resident < model_path("smollm2-135m.gguf").stat().st_size * 1.3


def test_the_fast_path_caches_keys_in_float16_unless_asked_otherwise(fast_smollm2,
                                                                     smollm2) -> None:
    """OLLAMA_KV_CACHE_TYPE's default, f16, on the fast path; the float reference keeps
    its own dtype (it is the oracle)."""
    assert fast_smollm2.model.kv_dtype == torch.float16
    assert fast_smollm2.kv_bytes(100) == 2 * 30 * 3 * 64 * 100 * 2
    assert smollm2.model.kv_dtype == torch.float32
    wide = ollamapy.load(model_path("smollm2-135m.gguf"), device="cpu", fast=True,
                         compile=False, kv_cache_type="f32")
    assert wide.model.kv_dtype == torch.float32


def test_fast_greedy_equals_the_reference_or_names_the_near_tie(fast_smollm2, smollm2) -> None:
    """On the golden prompts: the same greedy tokens, or a first difference at a position
    where the fast path's choice is within NEAR_TIE of the reference's best logit (bf16
    activations can swap near-equal candidates); the test prints which."""
    cases = json.loads((DATA / "logits_smollm2.json").read_text())["cases"]
    eos = smollm2.tokenizer.eos_ids
    for case in cases:
        ids = case["input_ids"]
        expected = case["greedy_32"]
        got = greedy(fast_smollm2.model, ids, len(expected), eos)
        if got == expected[:len(got)] and len(got) >= len(expected) - 1:
            continue
        j = next(i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b)
        reference = smollm2.logits(ids + expected[:j])
        gap = float(reference.max() - reference[got[j]])  # how far the fast choice was behind
        print(f"{case['prompt'][-40:]!r}: first difference at token {j}: fast {got[j]}, "
              f"reference {expected[j]}, {gap:.3f} apart in the reference logits")
        assert gap < NEAR_TIE, f"token {j}: fast {got[j]}, reference {expected[j]} ({gap:.3f})"


def test_parts_of_different_forms_are_read_side_by_side(tmp_path: Path) -> None:
    """A file whose v (and up) are stored in another type than q and k (gate), as Q4_K_M files
    keep v in Q6_K: the fused projection's parts stay in their own forms, one layer each, and
    the model still computes what the reference does on the same file."""
    from ollamapy.loading.fast_model import SideBySide
    from tests.llama_cpp import rewrite_gguf

    path = tmp_path / "tiny.gguf"
    hf = tiny_hf_model("llama", seed=9)
    write_tiny_gguf(hf, "llama", path)
    kinds = {"attn_q": "Q4_0", "attn_k": "Q4_0", "attn_v": "Q8_0", "ffn_gate": "Q4_0",
             "ffn_up": "Q8_0"}
    types = {f"blk.{i}.{part}.weight": kind for i in range(hf.config.num_hidden_layers)
             for part, kind in kinds.items()}
    mixed = rewrite_gguf(path, tmp_path / "mixed.gguf", types=types)
    reference = ollamapy.load(mixed, device="cpu")
    fast = ollamapy.load(mixed, device="cpu", fast=True, compile=False)
    for block in fast.model.layers:
        assert isinstance(block.attn.wqkv, SideBySide) and len(block.attn.wqkv.parts) == 3
        assert isinstance(block.ffn.w_gate_up, SideBySide)
    ids = torch.tensor([[3, 4, 5, 6, 7, 8, 9, 10, 11, 12]])
    want = reference.model(ids, all_logits=True)[0]
    got = fast.model(ids, all_logits=True)[0]
    # bf16 at each kernel's input: ~5e-3 here, against logits up to ~0.7
    torch.testing.assert_close(got, want, atol=2e-2, rtol=0)
    assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_compiled_step_never_recompiles_as_sequences_grow(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OLLAMAPY_COMPILE_CACHE", str(tmp_path / "inductor"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/nonexistent/torch-default")
    hf = tiny_hf_model("llama", seed=9)
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(hf, "llama", path)
    m = ollamapy.load(path, device="cpu", fast=True, compile=False)
    eager = Batch(m.model, slots=2, num_ctx=64)
    compiled = Batch(m.model, slots=2, num_ctx=64)
    compiled.decode = CompiledDecode(m.model, 2, m.device)
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    opts = Options(temperature=0, num_predict=30, num_ctx=64)
    results = []
    for batch in (eager, compiled):
        a = Seq([3, 4, 5, 6], opts, num_ctx=64, eos_ids=frozenset(), detokenizer=Silent())
        b = Seq([7, 8], opts, num_ctx=64, eos_ids=frozenset(), detokenizer=Silent())
        batch.add(a)
        for _ in range(5):  # a alone (bucket 1), growing
            batch.step()
        batch.add(b)  # b joins: bucket 2
        while batch.active:
            batch.step()
        results.append((a.history, b.history))
    assert results[0] == results[1]  # compiled decodes the same tokens
    assert counters["stats"]["unique_graphs"] == 2  # one graph per batch bucket (1, 2)
    assert not counters["recompiles"]
    assert compiled.decode.origin == {1: "aot", 2: "aot"}  # compiled ahead, and saved
    # the compiled code went where OLLAMAPY_COMPILE_CACHE says, whatever torch had set
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    assert any((tmp_path / "inductor").iterdir())


def test_the_next_load_of_a_model_reads_its_saved_steps(tmp_path: Path, monkeypatch) -> None:
    """A second process (here: a second model object from the same file) loads each bucket's
    step from disk instead of tracing it; it decodes what the eager step decodes; a saved
    step that is damaged is compiled again; another model never reads this one's."""
    monkeypatch.setenv("OLLAMAPY_COMPILE_CACHE", str(tmp_path / "inductor"))
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(tiny_hf_model("llama", seed=9), "llama", path)
    first = ollamapy.load(path, device="cpu", fast=True, compile=False)
    eos: frozenset[int] = frozenset()
    want = greedy(first.model, [3, 4, 5, 6], 12, eos)
    assert greedy(first.model, [3, 4, 5, 6], 12, eos, compiled=True) == want
    again = ollamapy.load(path, device="cpu", fast=True, compile=False)
    batch = Batch(again.model, slots=1, num_ctx=17)
    decode = CompiledDecode(again.model, 1, again.device)
    decode.warm_up(batch.cache)
    assert decode.origin == {1: "saved"}
    (saved,) = (tmp_path / "inductor" / "ollamapy-steps").glob("*/decode-1.bin")
    assert greedy(again.model, [3, 4, 5, 6], 12, eos, compiled=True) == want
    saved.write_bytes(b"not a saved step")
    damaged = CompiledDecode(again.model, 1, again.device)
    damaged.warm_up(batch.cache)
    assert damaged.origin == {1: "aot"} and saved.read_bytes() != b"not a saved step"
    write_tiny_gguf(tiny_hf_model("llama", seed=9, num_hidden_layers=2), "llama",
                    tmp_path / "other.gguf")
    other = ollamapy.load(tmp_path / "other.gguf", device="cpu", fast=True, compile=False)
    decode = CompiledDecode(other.model, 1, other.device)
    decode.warm_up(Batch(other.model, slots=1, num_ctx=17).cache)
    assert decode.origin == {1: "aot"}
    assert len(list((tmp_path / "inductor" / "ollamapy-steps").iterdir())) == 2


def test_the_notebook_api_decodes_through_the_compiled_step(tmp_path: Path, monkeypatch,
                                                            caplog) -> None:
    """`ollamapy.load(path, fast=True)` compiles the decode step for its default window as it
    loads (the server does the same); `generate` decodes through it the tokens the uncompiled
    step gives, whatever grad mode the caller is in; another num_ctx gets a step of its own;
    the next load reads the saved one."""
    monkeypatch.setenv("OLLAMAPY_COMPILE_CACHE", str(tmp_path / "inductor"))
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(tiny_hf_model("llama", seed=9), "llama", path)
    m = ollamapy.load(path, device="cpu", fast=True)
    default = window(Options(), m.context_length)
    assert list(m.compiled) == [default] and m.compiled[default].origin == {1: "aot"}
    eager = ollamapy.load(path, device="cpu", fast=True, compile=False)
    assert not eager.compiled and eager.compiled_decode(default) is None

    calls = []
    step = m.compiled[default].steps[1]
    m.compiled[default].steps[1] = lambda *a: (calls.append(1), step(*a))[1]

    def answer(model: LoadedModel, **options) -> tuple[str, int]:
        chunks = list(model.generate("3 4 5 6", raw=True, temperature=0, num_predict=10,
                                     **options))
        return "".join(c["response"] for c in chunks), chunks[-1]["eval_count"]

    want = answer(eager)
    assert want[1] == 10 and answer(m) == want
    assert len(calls) == 9  # every token after the prompt's first came from the compiled step
    for mode in (torch.no_grad, torch.inference_mode):  # as notebooks and benchmarks call it
        with mode():
            assert answer(m) == want
    assert len(calls) == 27
    assert "refused its inputs" not in caplog.text  # no call fell back to the eager step
    assert answer(m, num_ctx=64) == want and 64 in m.compiled
    again = ollamapy.load(path, device="cpu", fast=True)
    assert again.compiled[default].origin == {1: "saved"} and answer(again) == want
