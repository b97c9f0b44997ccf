"""Generation as an iterator: truncate → prefill → decode, one token at a time.

`generate` owns the loop that every front end shares (notebook API, runner, server): it
feeds the prompt through the model in `num_batch` chunks (prefill), then samples, detokenizes
and checks stop conditions one token at a time (decode). It yields `Delta`s of text and
finishes with a `Done` carrying Ollama's counters and nanosecond durations.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from ollamapy.engine.kv_cache import KVCache
from ollamapy.engine.model import Transformer
from ollamapy.engine.options import Options
from ollamapy.engine.sampling import make_generator, sample
from ollamapy.engine.stops import StopMatcher
from ollamapy.engine.truncate import context_shift, keep_count, truncate_prompt


class Detokenizer(Protocol):
    def push(self, token_id: int) -> str: ...
    def flush(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Delta:
    text: str  # may be "" when a token only completed part of a character or a stop string
    token: int


@dataclass(frozen=True, slots=True)
class Done:
    done_reason: Literal["stop", "length"]
    prompt_eval_count: int
    prompt_eval_duration: int  # ns
    eval_count: int
    eval_duration: int  # ns
    total_duration: int  # ns
    prompt_tokens_dropped: int  # how many prompt tokens truncation removed


def prefill(model: Transformer, ids: Sequence[int], cache: KVCache, start_pos: int,
            num_batch: int) -> torch.Tensor:
    """Run ids through the model in chunks of num_batch; return the last position's logits."""
    device = model.tok_embeddings.weight.device
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
    t_start = time.perf_counter_ns()
    config = model.config
    device = model.tok_embeddings.weight.device
    # Ollama clamps num_ctx to the trained context; at least 4 (api.Options, §5.1)
    num_ctx = max(4, min(opts.num_ctx, config.context_length))
    if not prompt_ids:
        raise ValueError("empty prompt: nothing to generate from")
    keep = keep_count(opts.num_keep, num_ctx, len(prompt_ids), add_bos)
    ids = truncate_prompt(prompt_ids, num_ctx, keep)
    dropped = len(prompt_ids) - len(ids)
    cache = new_cache(num_ctx) if new_cache else KVCache(config, num_ctx, device=device,
                                                         dtype=model.tok_embeddings.weight.dtype)
    rng = make_generator(opts.seed, device)
    stops = StopMatcher(opts.stop)
    # num_predict < 0 means "until a stop", capped at 10 x num_ctx as Ollama does
    limit = opts.num_predict if opts.num_predict >= 0 else 10 * num_ctx

    logits = prefill(model, ids, cache, 0, max(1, opts.num_batch))
    t_prompt = time.perf_counter_ns()
    history = list(ids)
    eval_count, reason, stopped = 0, "length", False
    while eval_count < limit:
        token = sample(logits, history, opts, rng, num_ctx)
        if token in eos_ids:
            reason = "stop"
            break
        eval_count += 1
        history.append(token)
        text, stopped = stops.push(detokenizer.push(token))
        yield Delta(text, token)
        if stopped:
            reason = "stop"
            break
        if eval_count >= limit:
            break
        pos = len(history) - 1  # position of the token just sampled
        if pos >= num_ctx:  # the cache is full: drop the middle and rebuild, as Ollama shifts
            if not shift:
                break
            history = context_shift(history, num_ctx, keep)
            cache.truncate(0)
            logits = prefill(model, history, cache, 0, max(1, opts.num_batch))
        else:
            logits = model(torch.tensor([[token]], device=device), pos, cache)[0]
    if not stopped:  # EOS or length: release what the detokenizer and stop matcher held
        tail, _ = stops.push(detokenizer.flush())
        tail += stops.flush()
        if tail:
            yield Delta(tail, -1)
    t_end = time.perf_counter_ns()
    yield Done(reason, len(ids), t_prompt - t_start, eval_count, t_end - t_prompt,
               t_end - t_start, dropped)
