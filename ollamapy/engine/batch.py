"""Continuous batching: many `Seq`s decoded together, one forward per step for all of them.

The batch owns a KV cache with one slot per sequence. `add` prefills a new sequence into the
next free slot while the others wait for the step to come; `step` feeds every active
sequence its last sampled token in one batched forward (row i at its own position), and each
row's logits go to that sequence's own sampler, options, seed and stop strings. Sequences
that finish or are cancelled leave at once; the last active slot moves into the hole, so the
active sequences always fill slots [0, n) and a step reads the cache without copying it.

Prefix reuse: what a sequence leaves in its slot stays there, idle, with the tokens it holds
(`kept`). A new sequence takes the idle slot holding the longest prefix of its prompt (the
next turn of a chat holds the whole previous turn; requests with one system prompt share it)
and prefills only the rest; its tokens are the same as from a cold prefill, since the cached
K/V are what that prefill would write.

    batch = Batch(model, slots=4, num_ctx=4096)
    batch.add(seq)                      # → the first Deltas of seq
    for seq, deltas in batch.step():    # one token for every active seq
        ...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch

from ollamapy.engine.kv_cache import KVCache
from ollamapy.engine.model import Transformer
from ollamapy.engine.seq import Delta, Seq
from ollamapy.engine.step import decode_step, prefill


class Batch:
    def __init__(self, model: Transformer, slots: int, num_ctx: int, num_batch: int = 512,
                 reuse: bool = True) -> None:
        self.model, self.num_ctx, self.num_batch = model, num_ctx, max(1, num_batch)
        self.cache = KVCache(model.config, num_ctx, batch=slots, device=model.device,
                             dtype=model.dtype)
        self.active: list[Seq] = []  # active[i] lives in cache slot i
        # idle slot i (i >= len(active)) holds the K/V of kept[i] at positions [0, len)
        self.kept: list[list[int]] = [[] for _ in range(slots)]
        self.reuse = reuse
        self.steps = 0  # batched forwards run so far
        # the batched decode step: the model itself, or a compiled twin (engine/compiled.py)
        self.decode: Callable[..., torch.Tensor] = partial(decode_step, model)

    @property
    def free(self) -> int:
        return self.cache.slots - len(self.active)

    def add(self, seq: Seq) -> list[Delta]:
        """Prefill seq into the next free slot and sample its first token."""
        if not self.free:
            raise RuntimeError("no free slot in the batch")
        if seq.num_ctx > self.num_ctx:
            raise ValueError(f"seq window {seq.num_ctx} exceeds the batch's {self.num_ctx}")
        if self.reuse:
            self._take_prefix(seq, len(self.active))
        self.active.append(seq)
        deltas = self._prefill(seq)
        if seq.done:
            self.remove(seq)
        return deltas

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
        tokens, start = seq.feed()
        slot = self.cache.slot(self.active.index(seq))
        return seq.advance(prefill(self.model, tokens, slot, start, self.num_batch))

    def step(self) -> list[tuple[Seq, list[Delta]]]:
        """One token for every active seq. A seq whose window just shifted is fed its whole
        history again (alone) first; the rest go through one forward together."""
        events: list[tuple[Seq, list[Delta]]] = []
        for seq in [s for s in self.active if len(s.feed()[0]) > 1]:
            events.append((seq, self._prefill(seq)))
        rows = [s for s in self.active if not s.done]
        if rows:
            # rows are active[0:len(rows)] unless a shifted seq just finished: re-compact
            self._compact()
            rows = list(self.active)
            feeds = [s.feed() for s in rows]
            device = self.cache.k[0].device
            tokens = torch.tensor([f[0] for f in feeds], device=device)  # (B, 1)
            positions = [f[1] for f in feeds]
            span = max(positions) + 1
            if span > self.num_ctx:
                raise ValueError(f"KV cache overflow: position {span} > num_ctx {self.num_ctx}")
            logits = self.decode(tokens, torch.tensor(positions, device=device),  # (B, vocab)
                                 torch.arange(span, device=device), self.cache)
            self.steps += 1
            events.extend((seq, seq.advance(logits[i])) for i, seq in enumerate(rows))
        self._compact()
        return events

    def remove(self, seq: Seq) -> None:
        """Free seq's slot now (finished or cancelled); what it wrote stays for a later
        prompt, in the slot just past the active ones."""
        i = self.active.index(seq)
        last = len(self.active) - 1
        if i != last:
            moved = self.active[last]
            # what moved has written into the hole (it may be finishing too), seq's out
            self.cache.swap(i, last, seq.written if self.reuse else 0, moved.written)
            self.active[i] = moved
        self.kept[last] = seq.history[:seq.written] if self.reuse else []
        self.active.pop()

    def _compact(self) -> None:
        for seq in [s for s in self.active if s.done]:
            self.remove(seq)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids a and b share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
