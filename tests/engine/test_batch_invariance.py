"""Batch invariance on the fast path: a sequence's logits, tokens and logprobs are the same
bits whether it runs alone or beside others, in any slot, joining at any step, its prompt cut
into any chunks or partly taken from another sequence's cache.

Driven through `Batch` on the real smollm2 and gemma3 files, with the decode step eager: the
compiled step (one graph per batch bucket) is held to the same through the live server in
tests/e2e/test_batch_invariance.py."""

from __future__ import annotations

import random

import pytest
import torch

import ollamapy
from ollamapy.engine.batch import Batch
from ollamapy.engine.compiled import CompiledDecode
from ollamapy.engine.kv_cache import KVCache
from ollamapy.engine.options import Options
from ollamapy.engine.seq import Seq, TokenLogprobs
from ollamapy.engine.step import decode_step, prefill
from ollamapy_kernels import native
from tests.conftest import model_path
from tests.engine.test_batch import Silent

# shared with tests/e2e/test_batch_invariance.py
NEEDS_KERNEL = pytest.mark.skipif(
    not native.load(), reason="batch invariance needs the attention kernel: an x86-64 CPU "
    "with AVX-512 VNNI (on other devices prompt chunks take torch's fused attention)")
pytestmark = NEEDS_KERNEL

SYSTEM = ("<|im_start|>system\nYou are a helpful assistant. Answer in one short paragraph."
          "<|im_end|>\n")
QUESTIONS = ["Why is the sky blue?", "Name three rivers.", "What is 12 times 7?",
             "Tell me about the moon, its phases, its tides and how it was formed, and "
             "then about the sun, the planets and the stars beyond them. " * 3,
             "Write a haiku about rain.", "Who wrote Hamlet?"]


@pytest.fixture(scope="module", params=["smollm2-135m.gguf", "gemma3-270m.gguf"])
def model(request):
    m = ollamapy.load(model_path(request.param), device="cpu", fast=True, compile=False)
    assert m.decoder.batch_invariant
    return m


def _prompts(m) -> list[list[int]]:
    return [m.prompt_ids(f"{SYSTEM}<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n")
            for q in QUESTIONS]


def _options(i: int) -> Options:
    if i % 2 == 0:
        return Options(temperature=0, num_predict=10, num_ctx=1024)
    return Options(temperature=0.8, seed=42 + i, top_k=30 + i, top_p=0.9, num_predict=10,
                   num_ctx=1024, repeat_penalty=1.1)


def _seq(m, ids: list[int], i: int) -> Seq:
    return Seq(ids, _options(i), num_ctx=1024, eos_ids=frozenset(), detokenizer=Silent(),
               top_logprobs=3)


Answer = list[TokenLogprobs]


def _run(m, prompts: dict[int, list[int]], joins: list[int], hang_up: int | None = None,
         num_batch: int = 512) -> tuple[dict[int, Answer], int]:
    """Seq i (prompts[i], with `_options(i)`) arrives at step joins[i] and joins the 4-slot
    batch when a slot is free; seq `hang_up` is removed after its third token → each other
    seq's tokens with logprobs, and how many prompt tokens were taken from another seq's
    cache."""
    batch = Batch(m.decoder, slots=4, num_ctx=1024, num_batch=num_batch)
    seqs = {i: _seq(m, ids, i) for i, ids in prompts.items()}
    answers: dict[int, Answer] = {i: [] for i in seqs}
    waiting: list[int] = []  # arrived, waiting for a slot (as the engine's worker queues them)
    step = 0
    while step <= max(joins) or waiting or batch.active or batch.queued:
        waiting += [i for i, j in zip(seqs, joins, strict=True) if j == step]
        while waiting and batch.free:
            batch.add(seqs[waiting.pop(0)])
        for seq, deltas in batch.step():
            i = next(i for i, s in seqs.items() if s is seq)
            answers[i] += [d.logprobs for d in deltas if d.logprobs is not None]
            if i == hang_up and len(answers[i]) >= 3 and batch.holds(seq):
                batch.remove(seq)
        step += 1
    return ({i: a for i, a in answers.items() if i != hang_up},
            sum(s.cached for s in seqs.values()))


def test_each_linear_layer_gives_a_row_the_same_bits_beside_any_other_rows(model) -> None:
    """The kernels' 4-row and 1-row tiles sum a row in the same order: every kind of layer
    the model holds (smollm2: int4; gemma3: int8, Q4_K and Q6_K blocks; the heads)."""
    kinds: dict[str, tuple[type, str]] = {}  # a layer of each (class, block type)
    for name, module in model.decoder.named_modules():
        kind = (type(module), getattr(module, "kind", ""))
        if hasattr(module, "in_features") and kind not in kinds.values():
            kinds[name] = kind
    assert len(kinds) >= 2, kinds
    g = torch.Generator().manual_seed(3)
    for name in kinds:
        layer = model.decoder.get_submodule(name)
        x = torch.randn(9, layer.in_features, generator=g)
        rows = layer(x)
        for m in (1, 2, 3, 4, 5, 7):
            assert torch.equal(layer(x[:m]), rows[:m]), (name, m)
        assert torch.equal(layer(x[6:7]), rows[6:7]), name


def test_prompt_logits_are_the_same_bits_however_the_prompt_is_cut(model) -> None:
    ids = _prompts(model)[3]  # the long question
    n = len(ids)

    def last_logits(cuts: list[int]) -> torch.Tensor:
        cache = KVCache(model.decoder.config, 1024, dtype=model.decoder.kv_dtype)
        out, at = torch.empty(0), 0
        for size in cuts:
            out = prefill(model.decoder, ids[at:at + size], cache, at, 512)
            at += size
        return out

    whole = last_logits([n])
    for cuts in ([n - 1, 1], [16, n - 16], [7, 9, 33, n - 49], [1] * 5 + [n - 5]):
        assert torch.equal(last_logits(cuts), whole), cuts


def test_each_answer_is_the_same_alone_or_in_any_mix(model) -> None:
    prompts = _prompts(model)
    # alone: each in a batch of its own (the long prompt's chunks are then 512 tokens)
    solo = {i: _run(model, {i: ids}, [0])[0][i] for i, ids in enumerate(prompts)}
    assert all(len(a) == 10 for a in solo.values())
    rng = random.Random(17)
    for trial in range(2):
        joins = [rng.randrange(0, 8) for _ in prompts]
        hang_up = rng.randrange(len(prompts))
        # beside decoders, prompts run in chunks of 16+ tokens; after the first sequence a
        # slot holds the shared system prompt, which the next prompts take (prefix reuse)
        mixed, cached = _run(model, dict(enumerate(prompts)), joins, hang_up,
                             num_batch=rng.choice([32, 512]))
        assert cached > 0  # some prompts did start from the shared system prompt
        for i, answer in mixed.items():
            assert answer == solo[i], (trial, i, joins)


def test_a_padded_step_leaves_the_slots_past_the_batch_as_they_were(model) -> None:
    """Three rows padded to the bucket of four: the fourth slot (a prompt half prefilled, or
    a prefix kept for reuse) keeps every position but the window's last, which neither
    reaches."""
    decoder = model.decoder
    cache = KVCache(decoder.config, 64, batch=4, dtype=decoder.kv_dtype)
    g = torch.Generator().manual_seed(4)
    for t in cache.k + cache.v:
        t.copy_(torch.randn(t.shape, generator=g))
    held = [t[3, :, :63].clone() for t in cache.k + cache.v]
    step = CompiledDecode(decoder, 4, decoder.device)
    step.steps[4] = decode_step  # the bucket's step, eager: the padding is the wrapper's
    logits = step(torch.tensor([[5], [6], [7]]), torch.tensor([9, 3, 20]), torch.arange(21),
                  cache)
    assert logits.shape == (3, decoder.config.vocab_size)
    assert all(torch.equal(t[3, :, :63], h) for t, h in zip(cache.k + cache.v, held,
                                                             strict=True))


@pytest.mark.parametrize("on", [True, False])
def test_the_server_setting_reaches_the_model(on: bool) -> None:
    """OLLAMAPY_BATCH_INVARIANT=0 (Runner's batch_invariant) sends prompt chunks to torch's
    fused attention; decode steps keep the kernel either way."""
    from ollamapy.contract import ModelSpec
    from ollamapy.runner import Runner

    runner = Runner(ModelSpec(name="smollm2", path=model_path("smollm2-135m.gguf")),
                    num_ctx=256, num_parallel=2, device="cpu", fast=True, batch_invariant=on)
    try:
        model = runner.model.decoder
        assert model.batch_invariant is on
        kernel = model.layers[0].attn.kernel  # one module, which every layer calls
        queries: set[int] = set()  # queries per row of the calls it took
        kernel.register_forward_hook(lambda _m, args, _out: queries.add(args[0].shape[2]))
        model(torch.tensor([[1, 2, 3, 4]]), 0)  # a prompt chunk of four
        cache = KVCache(model.config, 8, dtype=model.kv_dtype)
        prefill(model, [1, 2, 3], cache, 0, 512)
        model(torch.tensor([[4]]), 3, cache)  # a decode step
        assert queries == ({4, 3, 1} if on else {1})
    finally:
        runner.close()
