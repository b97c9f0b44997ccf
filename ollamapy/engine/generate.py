"""Generation as an iterator: truncate → prefill → decode, one token at a time.

`generate` is the single-sequence loop, the reference that reads top to bottom: it feeds the
prompt through the model in `num_batch` chunks (prefill), then one token at a time (decode),
while a `Seq` samples, detokenizes and checks stop conditions. It yields `Delta`s of text and
finishes with a `Done` carrying Ollama's counters and nanosecond durations. The server runs
the same `Seq` logic for many requests at once in `batch.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from ollamapy.engine.kv_cache import KVCache, SlotCache
from ollamapy.engine.model import Transformer
from ollamapy.engine.options import Options
from ollamapy.engine.seq import Delta, Detokenizer, Done, Seq, window

__all__ = ["Delta", "Detokenizer", "Done", "generate", "prefill"]


def prefill(model: Transformer, ids: Sequence[int], cache: KVCache | SlotCache, start_pos: int,
            num_batch: int) -> torch.Tensor:
    """Run ids through the model in chunks of num_batch; return the last position's logits
    (vocab,). One id is a decode step."""
    device = model.device
    logits = torch.empty(0)
    for begin in range(0, len(ids), num_batch):
        chunk = torch.tensor([list(ids[begin:begin + num_batch])], device=device)  # (1, T)
        logits = model(chunk, start_pos + begin, cache)[0]  # (vocab,)
    return logits


def generate(model: Transformer, prompt_ids: Sequence[int], opts: Options, *,
             eos_ids: frozenset[int], detokenizer: Detokenizer, add_bos: bool = False,
             shift: bool = True, new_cache: Callable[[int], KVCache] | None = None
             ) -> Iterator[Delta | Done]:
    """shift=False ends generation with done_reason "length" when the window is full,
    instead of shifting the context (Ollama's `shift` request field)."""
    device = model.device
    num_ctx = window(opts, model.config.context_length)
    seq = Seq(prompt_ids, opts, num_ctx=num_ctx, eos_ids=eos_ids, detokenizer=detokenizer,
              add_bos=add_bos, shift=shift, device=device)
    cache = new_cache(num_ctx) if new_cache else KVCache(
        model.config, num_ctx, device=device, dtype=model.dtype)
    while not seq.done:
        tokens, start = seq.feed()
        logits = prefill(model, tokens, cache, start, max(1, opts.num_batch))
        yield from seq.advance(logits)
    yield seq.result()
