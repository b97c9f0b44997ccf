"""Continuous batching yields, for every sequence, exactly the tokens it yields alone."""

from __future__ import annotations

import pytest
import torch

from ollamapy.engine.batch import MIN_CHUNK, Batch
from ollamapy.engine.generate import Delta, generate
from ollamapy.engine.options import Options
from ollamapy.engine.seq import Seq
from tests.engine.hf_tiny import VOCAB, tiny_hf_model
from tests.engine.test_model_vs_hf import ours_from_hf


class Silent:
    def push(self, token_id: int) -> str:
        return ""

    def flush(self) -> str:
        return ""


def alone(model, ids: list[int], opts: Options, eos: frozenset[int]) -> list[int]:
    return [e.token for e in generate(model, ids, opts, eos_ids=eos, detokenizer=Silent())
            if isinstance(e, Delta) and e.token >= 0]


def batched(model, prompts: list[list[int]], opts: list[Options], slots: int, num_ctx: int,
            eos: frozenset[int], join_every: int = 3) -> list[list[int]]:
    """Sequences join a running batch every `join_every` steps, as requests arrive."""
    batch = Batch(model, slots, num_ctx)
    seqs = [Seq(p, o, num_ctx=num_ctx, eos_ids=eos, detokenizer=Silent())
            for p, o in zip(prompts, opts, strict=True)]
    out: dict[int, list[int]] = {id(s): [] for s in seqs}
    waiting, step = list(seqs), 0
    while waiting or batch.active:
        if waiting and batch.free and step % join_every == 0:
            seq = waiting.pop(0)
            out[id(seq)] += [d.token for d in batch.add(seq) if d.token >= 0]
        for seq, deltas in batch.step():
            out[id(seq)] += [d.token for d in deltas if d.token >= 0]
        step += 1
    return [out[id(s)] for s in seqs]


def test_seeded_sampling_is_per_sequence(smollm2) -> None:
    ids = [smollm2.tokenize(p) for p in ("Once upon a time", "The weather today")]
    opts = [Options(temperature=1.0, seed=s, num_predict=12, num_ctx=128) for s in (1, 2)]
    eos = smollm2.tokenizer.eos_ids
    expected = [alone(smollm2.model, i, o, eos) for i, o in zip(ids, opts, strict=True)]
    assert batched(smollm2.model, ids, opts, slots=2, num_ctx=128, eos=eos,
                   join_every=1) == expected


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_context_shift_and_compaction_inside_a_batch(arch: str) -> None:
    """Tiny windows force context shifts mid-batch; sequences of different lengths leave and
    slots are compacted; gemma3's sliding window runs with per-row positions."""
    model = ours_from_hf(tiny_hf_model(arch, seed=7))
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(2, VOCAB, (n,), generator=g).tolist() for n in (5, 9, 3, 12)]
    opts = [Options(temperature=0, num_predict=n, num_ctx=24, num_keep=2)
            for n in (30, 8, 40, 15)]
    expected = [alone(model, p, o, frozenset()) for p, o in zip(prompts, opts, strict=True)]
    assert [len(e) for e in expected] == [30, 8, 40, 15]
    assert batched(model, prompts, opts, slots=2, num_ctx=24, eos=frozenset(),
                   join_every=2) == expected


def test_a_removed_sequence_frees_its_slot_for_the_next() -> None:
    model = ours_from_hf(tiny_hf_model("llama", seed=1))
    batch = Batch(model, slots=2, num_ctx=32)
    opts = Options(temperature=0, num_predict=50, num_ctx=32)
    a, b, c = (Seq([3, 4, 5], opts, num_ctx=32, eos_ids=frozenset(), detokenizer=Silent())
               for _ in range(3))
    batch.add(a)
    batch.add(b)
    assert batch.free == 0
    with pytest.raises(RuntimeError, match="no free slot"):
        batch.add(c)
    batch.step()  # a prefills and samples; b takes the slot after it
    assert batch.active == [a, b] and a.sampled and not b.sampled
    batch.remove(a)  # a cancelled request
    assert batch.active == [b] and batch.free == 1
    batch.add(c)  # b is still prefilling: c waits for its slot
    assert batch.active == [b] and list(batch.queued) == [c] and batch.free == 0
    batch.step()
    assert batch.active == [b, c] and b.sampled


def run_to_end(batch: Batch, seqs: list[Seq]) -> dict[int, list[int]]:
    """Add seqs (one per step) and step until every one has finished → tokens by id(seq)."""
    out: dict[int, list[int]] = {id(s): [] for s in seqs}
    waiting = list(seqs)
    while waiting or batch.active:
        if waiting and batch.free:
            seq = waiting.pop(0)
            out[id(seq)] += [d.token for d in batch.add(seq) if d.token >= 0]
        for seq, deltas in batch.step():
            out[id(seq)] += [d.token for d in deltas if d.token >= 0]
    return out


def test_next_turns_reuse_what_their_slots_kept(smollm2) -> None:
    """Three conversations run and finish together (finishing out of order moves slots
    around); each one's next turn (its history and a new message) then finds the slot
    holding its history, prefills only the new tokens, and decodes exactly what a cold
    prefill of the whole prompt decodes. A prompt sharing only a system prefix reuses that."""
    eos, num_ctx = smollm2.tokenizer.eos_ids, 256
    system = smollm2.tokenize("You are a helpful assistant who answers in one line.\n")
    firsts = [system + smollm2.tokenize(q) for q in
              ("What is the capital of France?", "Name a prime number.", "Say hello.")]
    opts = [Options(temperature=0, num_predict=n, num_ctx=num_ctx) for n in (9, 4, 6)]
    batch = Batch(smollm2.model, slots=3, num_ctx=num_ctx)
    turn1 = [Seq(p, o, num_ctx=num_ctx, eos_ids=eos, detokenizer=Silent())
             for p, o in zip(firsts, opts, strict=True)]
    run_to_end(batch, turn1)
    assert not batch.active and sorted(map(len, batch.kept)) == sorted(
        s.written for s in turn1)

    more = smollm2.tokenize("\nAnd why?")
    seconds = [s.history[:s.written] + more for s in reversed(turn1)]
    turn2 = [Seq(p, Options(temperature=0, num_predict=8, num_ctx=num_ctx), num_ctx=num_ctx,
                 eos_ids=eos, detokenizer=Silent()) for p in seconds]
    got = run_to_end(batch, turn2)
    for seq, first in zip(turn2, reversed(turn1), strict=True):
        assert seq.cached == first.written  # everything but the new message came from cache
        assert got[id(seq)] == alone(smollm2.model, seq.prompt, seq.opts, eos)

    other = Seq(system + smollm2.tokenize("Count to three."),
                Options(temperature=0, num_predict=6, num_ctx=num_ctx), num_ctx=num_ctx,
                eos_ids=eos, detokenizer=Silent())
    got = run_to_end(batch, [other])
    assert len(system) <= other.cached < len(other.prompt)
    assert got[id(other)] == alone(smollm2.model, other.prompt, other.opts, eos)


def test_without_reuse_nothing_is_kept(smollm2) -> None:
    eos = smollm2.tokenizer.eos_ids
    batch = Batch(smollm2.model, slots=2, num_ctx=128, reuse=False)
    first = Seq(smollm2.tokenize("Paris is"), Options(temperature=0, num_predict=4),
                num_ctx=128, eos_ids=eos, detokenizer=Silent())
    run_to_end(batch, [first])
    again = Seq(first.history[:first.written], Options(temperature=0, num_predict=4),
                num_ctx=128, eos_ids=eos, detokenizer=Silent())
    run_to_end(batch, [again])
    assert batch.kept == [[], []] and again.cached == 0


def test_a_long_prompt_is_prefilled_in_chunks_between_decode_steps(smollm2) -> None:
    """A 100-token prompt joining a running stream runs a chunk a step, at most num_batch
    (32) tokens and at least MIN_CHUNK (sized to a decode step's time): the stream gets its
    token in every one of those steps, and both decode exactly what they decode alone
    (one-shot prefill)."""
    eos = smollm2.tokenizer.eos_ids
    running = smollm2.tokenize("Once upon a time")
    long = smollm2.tokenize("The history of the city goes back a long way. " * 10)
    assert 96 < len(long) < 112
    opts = Options(temperature=0, num_predict=12, num_ctx=256)
    batch = Batch(smollm2.model, slots=2, num_ctx=256, num_batch=32)
    r = Seq(running, opts, num_ctx=256, eos_ids=eos, detokenizer=Silent())
    lng = Seq(long, opts, num_ctx=256, eos_ids=eos, detokenizer=Silent())
    out: dict[int, list[int]] = {id(r): [], id(lng): []}

    def step() -> set[int]:
        advanced = set()
        for seq, deltas in batch.step():
            out[id(seq)] += [d.token for d in deltas if d.token >= 0]
            advanced |= {id(seq)} if any(d.token >= 0 for d in deltas) else set()
        return advanced

    batch.add(r)
    step()
    batch.add(lng)
    sizes = []
    while not lng.sampled:
        before = lng.written
        assert id(r) in step()  # the stream advanced while the prompt was still running
        sizes.append((lng.written if not lng.sampled else len(long)) - before)
    assert sizes[0] == MIN_CHUNK and all(MIN_CHUNK <= n <= 32 for n in sizes[:-1])
    assert sum(sizes) == len(long) and batch.prefill_rate and batch.step_seconds
    while batch.active:
        step()
    assert out[id(lng)] == alone(smollm2.model, long, opts, eos)
    assert out[id(r)] == alone(smollm2.model, running, opts, eos)


def test_alone_a_prompt_runs_num_batch_tokens_a_chunk() -> None:
    model = ours_from_hf(tiny_hf_model("llama", seed=4))
    batch = Batch(model, slots=2, num_ctx=64, num_batch=8)
    seq = Seq(list(range(2, 30)), Options(temperature=0, num_predict=2, num_ctx=64),
              num_ctx=64, eos_ids=frozenset(), detokenizer=Silent())
    batch.add(seq)
    batch.step()
    assert batch.chunk_size() == 8 and seq.written == 8


def test_a_prompt_cancelled_mid_prefill_leaves_only_what_ran() -> None:
    """Cancelled after two of its chunks, a prompt's slot keeps those 16 positions; the same
    prompt sent again reuses exactly them and decodes what it decodes alone."""
    model = ours_from_hf(tiny_hf_model("llama", seed=4))
    opts = Options(temperature=0, num_predict=6, num_ctx=64)
    prompt = [(7 * i) % (VOCAB - 2) + 2 for i in range(30)]
    batch = Batch(model, slots=2, num_ctx=64, num_batch=8)
    first = Seq(prompt, opts, num_ctx=64, eos_ids=frozenset(), detokenizer=Silent())
    batch.add(first)
    batch.step()
    batch.step()
    assert not first.sampled and first.written == 16
    batch.remove(first)  # cancelled
    assert batch.kept[0] == prompt[:16]
    again = Seq(prompt, opts, num_ctx=64, eos_ids=frozenset(), detokenizer=Silent())
    got = run_to_end(batch, [again])
    assert again.cached == 16
    assert got[id(again)] == alone(model, prompt, opts, frozenset())
