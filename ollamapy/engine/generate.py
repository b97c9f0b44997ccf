"""Generation as an iterator: truncate → prefill → decode, one token at a time.

`generate` is the single-sequence loop, the reference that reads top to bottom: it feeds the
prompt through the model in `num_batch` chunks (`prefill`), then one token at a time
(`decode_step`, the batch's own step with one row), while a `Seq` samples, detokenizes and
checks stop conditions. It yields `Delta`s of text and
finishes with a `Done` carrying Ollama's counters and nanosecond durations. The server runs
the same `Seq` logic for many requests at once in `batch.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial

import torch

from ollamapy.engine.kv_cache import KVCache
from ollamapy.engine.model import Transformer
from ollamapy.engine.options import Options
from ollamapy.engine.seq import Delta, Detokenizer, Done, Seq, window
from ollamapy.engine.step import decode_step, prefill

__all__ = ["Delta", "Detokenizer", "Done", "generate"]


def generate(model: Transformer, prompt_ids: Sequence[int], opts: Options, *,
             eos_ids: frozenset[int], detokenizer: Detokenizer, add_bos: bool = False,
             shift: bool = True, new_cache: Callable[[int], KVCache] | None = None,
             decode: Callable[..., torch.Tensor] | None = None) -> Iterator[Delta | Done]:
    """shift=False ends generation with done_reason "length" when the window is full,
    instead of shifting the context (Ollama's `shift` request field). decode: the decode
    step, (tokens (1, 1), positions (1,), key_positions (S,), cache) → logits (1, vocab);
    the model's own `decode_step` unless a compiled twin is given (engine/compiled.py)."""
    device = model.device
    num_ctx = window(opts, model.config.context_length)
    seq = Seq(prompt_ids, opts, num_ctx=num_ctx, eos_ids=eos_ids, detokenizer=detokenizer,
              add_bos=add_bos, shift=shift, device=device)
    cache = new_cache(num_ctx) if new_cache else KVCache(
        model.config, num_ctx, device=model.cache_devices, dtype=model.kv_dtype)
    decode = decode or partial(decode_step, model)
    while not seq.done:
        tokens, start = seq.feed()
        if len(tokens) == 1:  # (1, vocab) → (vocab,)
            logits = decode(torch.tensor([tokens], device=device),
                            torch.tensor([start], device=device),
                            torch.arange(start + 1, device=device), cache)[0]
        else:  # the prompt, or the whole history after a context shift
            logits = prefill(model, tokens, cache, start, max(1, opts.num_batch))
        yield from seq.advance(logits)
    yield seq.result()
