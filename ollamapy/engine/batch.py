"""Continuous batching: many `Seq`s decoded together, one forward per step for all of them.

The batch owns a KV cache with one slot per sequence. `step` feeds every decoding sequence
its last sampled token in one batched forward (row i at its own position), and each row's
logits go to that sequence's own sampler, options, seed and stop strings. Sequences that
finish or are cancelled leave at once and the slots are compacted, so the decoding sequences
always fill slots [0, d) and a step reads the cache without copying it.

Chunked prefill: `add` gives a new sequence the slot after the decoding ones, and each step
first runs one chunk of its prompt before the decode, so a long prompt arriving never stops
the running streams for longer than one chunk. Alone, a prompt runs num_batch tokens a
chunk; beside decoding sequences, a chunk is sized to take about as long as one decode step
(from the prefill rate and step time measured so far), so their time between tokens stays
near twice its steady value. One sequence prefills at a time; others added meanwhile wait
in order (`free` counts them) and take their slot when it is done.

Prefix reuse: what a sequence leaves in its slot stays there, idle, with the tokens it holds
(`kept`). A new sequence takes the idle slot holding the longest prefix of its prompt (the
next turn of a chat holds the whole previous turn; requests with one system prompt share it)
and prefills only the rest; its tokens are the same as from a cold prefill, since the cached
K/V are what that prefill would write.

    batch = Batch(model, slots=4, num_ctx=4096)
    batch.add(seq)                      # seq prefills over the next steps
    for seq, deltas in batch.step():    # a prompt chunk, then one token for every decoder
        ...
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial

import torch

from ollamapy.engine.kv_cache import KVCache
from ollamapy.engine.model import Transformer
from ollamapy.engine.seq import Delta, Seq
from ollamapy.engine.step import decode_step, prefill

MIN_CHUNK = 16  # the smallest prompt chunk, and the first beside decoding seqs (a probe)


class Batch:
    def __init__(self, model: Transformer, slots: int, num_ctx: int, num_batch: int = 512,
                 reuse: bool = True) -> None:
        self.model, self.num_ctx, self.num_batch = model, num_ctx, max(1, num_batch)
        self.cache = KVCache(model.config, num_ctx, batch=slots, device=model.cache_devices,
                             dtype=model.kv_dtype)
        # active[i] lives in cache slot i: the decoding seqs, then at most one prefilling
        self.active: list[Seq] = []
        self.queued: deque[Seq] = deque()  # added while another prefills: slots to come
        # idle slot i (i >= len(active)) holds the K/V of kept[i] at positions [0, len)
        self.kept: list[list[int]] = [[] for _ in range(slots)]
        self.reuse = reuse
        self.steps = 0  # batched forwards run so far
        # measured: prompt tokens a second in chunks, seconds a decode step takes
        self.prefill_rate: float | None = None
        self.step_seconds: float | None = None
        # the batched decode step: the model itself, or a compiled twin (engine/compiled.py)
        self.decode: Callable[..., torch.Tensor] = partial(decode_step, model)

    @property
    def free(self) -> int:
        return self.cache.slots - len(self.active) - len(self.queued)

    def holds(self, seq: Seq) -> bool:
        return seq in self.active or seq in self.queued

    @property
    def prefilling(self) -> Seq | None:
        """The seq whose prompt is being run, a chunk a step (always the last active)."""
        return self.active[-1] if self.active and not self.active[-1].sampled else None

    def add(self, seq: Seq) -> list[Delta]:
        """Take seq into the batch: its prompt runs over the next steps, and its first
        tokens come out of `step` (this returns none)."""
        if not self.free:
            raise RuntimeError("no free slot in the batch")
        if seq.num_ctx > self.num_ctx:
            raise ValueError(f"seq window {seq.num_ctx} exceeds the batch's {self.num_ctx}")
        self.queued.append(seq)
        self._place()
        return []

    def _place(self) -> None:
        """The next queued seq into the slot after the decoding ones, once none prefills."""
        if self.queued and self.prefilling is None:
            seq = self.queued.popleft()
            if self.reuse:
                self._take_prefix(seq, len(self.active))
            self.active.append(seq)

    def _take_prefix(self, seq: Seq, slot: int) -> None:
        """Bring to `slot` (the next one seq will take) an idle slot that starts with the
        longest prefix of seq's prompt, and let seq feed only what follows it.

        seq overwrites the rest of whatever it takes, so what the idle slots keep is given up
        sparingly: the slot with the prefix is taken as it is only when it keeps nothing
        more; otherwise its prefix is copied into the idle slot that keeps least."""
        def shared(i: int) -> int:
            return common_prefix(self.kept[i], seq.prompt)

        def keeps(i: int) -> int:
            return len(self.kept[i])

        idle = range(slot, self.cache.slots)
        best = max(idle, key=shared)  # ties: the first, `slot` itself, needs no copy
        n = min(shared(best), len(seq.prompt) - 1)
        others = [i for i in idle if i != best]
        target = best
        if (n == 0 or keeps(best) > n) and others:
            target = min(others, key=keeps) if n else min(idle, key=keeps)
            if n:
                self.cache.copy(best, target, n)
                self.kept[target] = self.kept[best][:n]
        if target != slot:
            self.cache.swap(slot, target, keeps(slot), keeps(target))
            self.kept[slot], self.kept[target] = self.kept[target], self.kept[slot]
        if n:
            seq.reuse(n)

    def _prefill(self, seq: Seq) -> list[Delta]:
        """All of seq's feed at once (a history fed again after a context shift)."""
        tokens, start = seq.feed()
        slot = self.cache.slot(self.active.index(seq))
        return seq.advance(prefill(self.model, tokens, slot, start, self.num_batch))

    def chunk_size(self) -> int:
        """Prompt tokens for this step's chunk: num_batch alone; beside decoding seqs about
        one decode step's worth (MIN_CHUNK to learn the rate first)."""
        if not any(s.sampled for s in self.active):
            return self.num_batch
        if self.prefill_rate is None or self.step_seconds is None:
            return min(MIN_CHUNK, self.num_batch)
        return max(MIN_CHUNK, min(self.num_batch, int(self.prefill_rate * self.step_seconds)))

    def _prefill_chunk(self, seq: Seq) -> list[Delta]:
        """The next chunk of seq's prompt; its first token once the last ran."""
        tokens, start = seq.feed()
        chunk = tokens[:self.chunk_size()]
        slot = self.cache.slot(self.active.index(seq))
        began = time.perf_counter()
        logits = prefill(self.model, chunk, slot, start, self.num_batch)
        synchronize(self.cache.k[0].device)
        rate = len(chunk) / max(time.perf_counter() - began, 1e-6)
        self.prefill_rate = rate if self.prefill_rate is None else \
            0.5 * (self.prefill_rate + rate)
        if len(chunk) < len(tokens):
            seq.fed(len(chunk))
            return []
        return seq.advance(logits)

    def step(self) -> list[tuple[Seq, list[Delta]]]:
        """One chunk of the prefilling seq's prompt, then one token for every decoding seq.
        A seq whose window just shifted is fed its whole history again (alone) first; the
        rest go through one forward together."""
        events: list[tuple[Seq, list[Delta]]] = []
        for seq in [s for s in self.active if s.sampled and len(s.feed()[0]) > 1]:
            events.append((seq, self._prefill(seq)))
        if (seq := self.prefilling) is not None:
            events.append((seq, self._prefill_chunk(seq)))
        self._compact()
        rows = [s for s in self.active if s.sampled]  # active[0:len(rows)]
        if rows:
            feeds = [s.feed() for s in rows]
            device = self.cache.k[0].device
            tokens = torch.tensor([f[0] for f in feeds], device=device)  # (B, 1)
            positions = [f[1] for f in feeds]
            span = max(positions) + 1
            if span > self.num_ctx:
                raise ValueError(f"KV cache overflow: position {span} > num_ctx {self.num_ctx}")
            began = time.perf_counter()
            logits = self.decode(tokens, torch.tensor(positions, device=device),  # (B, vocab)
                                 torch.arange(span, device=device), self.cache)
            synchronize(device)
            took = time.perf_counter() - began
            self.step_seconds = took if self.step_seconds is None else \
                0.9 * self.step_seconds + 0.1 * took
            self.steps += 1
            events.extend((seq, seq.advance(logits[i])) for i, seq in enumerate(rows))
        self._compact()
        self._place()
        return events

    def remove(self, seq: Seq) -> None:
        """Free seq's place now (finished or cancelled); what it wrote stays for a later
        prompt, in the slot just past the active ones."""
        if seq in self.queued:
            self.queued.remove(seq)
            return
        i = self.active.index(seq)
        last = len(self.active) - 1
        pending = self.prefilling
        # the last decoding slot takes the hole; a prefilling seq moves down behind it
        last_decoder = last - 1 if pending is not None and pending is not seq else last
        if i != last_decoder:
            self._exchange(i, last_decoder)
        if last_decoder != last:
            self._exchange(last_decoder, last)
        self.kept[last] = seq.history[:seq.written] if self.reuse else []
        self.active.pop()
        self._place()

    def _exchange(self, i: int, j: int) -> None:
        """Swap the seqs in slots i and j, with what each has written."""
        a, b = self.active[i], self.active[j]
        self.cache.swap(i, j, a.written, b.written)
        self.active[i], self.active[j] = b, a

    def _compact(self) -> None:
        for seq in [s for s in self.active if s.done]:
            self.remove(seq)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a CPU runs it before returning)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids a and b share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
