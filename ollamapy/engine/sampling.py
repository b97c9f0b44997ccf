"""Choosing the next token from one position's logits.

The chain runs in llama.cpp's default order (common/sampling.cpp), which Ollama's runner
uses: penalties → top_k → typical_p → top_p → min_p → temperature → draw. Temperature 0 is
greedy after the penalties. The truncation filters see probabilities at temperature 1, as in
llama.cpp; temperature only reshapes what survives them.

`sample` is a pure function of (logits, history, options, generator): the same seed gives
the same tokens on the same device.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import torch

from ollamapy.engine.options import Options


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded with seed, or with a random seed when seed < 0 (Ollama's -1)."""
    rng = torch.Generator(device=device)
    rng.manual_seed(seed if seed >= 0 else secrets.randbits(63))
    return rng


def apply_penalties(logits: torch.Tensor, history: Sequence[int], opts: Options,
                    num_ctx: int) -> torch.Tensor:
    """Repeat, presence and frequency penalties over the last repeat_last_n tokens.

    logits: (vocab,) float32, modified in place and returned. repeat_last_n -1 means num_ctx.
    As llama.cpp: a positive logit is divided by repeat_penalty, a negative one multiplied;
    then count * frequency_penalty + presence_penalty is subtracted. Penalties at the edge of
    the float range (a repeat_penalty of 0, a frequency_penalty of 1e300: Ollama takes any
    float) stay usable scores: +inf becomes the largest float32, NaN (inf - inf) -inf.
    """
    last_n = num_ctx if opts.repeat_last_n < 0 else opts.repeat_last_n
    no_penalty = (opts.repeat_penalty == 1.0 and opts.presence_penalty == 0.0
                  and opts.frequency_penalty == 0.0)
    if last_n == 0 or no_penalty or not history:
        return logits
    window = torch.tensor(list(history[-last_n:]), device=logits.device)
    window = window[(window >= 0) & (window < logits.shape[0])]
    ids, counts = torch.unique(window, return_counts=True)  # (n,), (n,)
    picked = logits[ids]
    picked = torch.where(picked > 0, picked / opts.repeat_penalty, picked * opts.repeat_penalty)
    picked = picked - counts.to(picked.dtype) * opts.frequency_penalty - opts.presence_penalty
    logits[ids] = torch.nan_to_num(picked, nan=-torch.inf, posinf=torch.finfo(picked.dtype).max,
                                   neginf=-torch.inf)
    return logits


def _typical(probs: torch.Tensor, mass: float) -> torch.Tensor:
    """Keep-mask for locally typical sampling; probs: (n,) sorted descending."""
    logp = torch.log(probs.clamp_min(1e-30))
    entropy = -(probs * logp).sum()
    order = torch.argsort((-logp - entropy).abs(), stable=True)  # most typical first
    cum = torch.cumsum(probs[order], 0)
    # keep up to and including the first token where the mass reaches `mass`
    n_keep = int(torch.searchsorted(cum, torch.tensor(mass, device=cum.device))) + 1
    keep = torch.zeros_like(probs, dtype=torch.bool)
    keep[order[:n_keep]] = True
    return keep


def _restrict(values: torch.Tensor, probs: torch.Tensor, keep: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop candidates outside keep, renormalise; if none is left, keep the most probable."""
    keep &= values > -torch.inf
    if not bool(keep.any()):
        keep[torch.argmax(probs)] = True
    values = values.masked_fill(~keep, -torch.inf)
    return values, torch.softmax(values, 0)


def sample(logits: torch.Tensor, history: Sequence[int], opts: Options,
           rng: torch.Generator, num_ctx: int | None = None) -> int:
    """Next token id from logits (vocab,); history is every token so far, prompt included."""
    return choose(penalized(logits, history, opts, num_ctx), opts, rng)


def penalized(logits: torch.Tensor, history: Sequence[int], opts: Options,
              num_ctx: int | None = None) -> torch.Tensor:
    """A float32 copy of logits (vocab,) with the penalties applied: the scores the rest of
    the chain (and a grammar's mask, and logprobs) work from."""
    return apply_penalties(logits.float().clone(), history, opts, num_ctx or opts.num_ctx)


def choose(logits: torch.Tensor, opts: Options, rng: torch.Generator) -> int:
    """The chain after the penalties: top_k → typical_p → top_p → min_p → temperature → draw
    (argmax at temperature 0). logits: (vocab,) float32, already penalised."""
    if opts.temperature <= 0:
        return int(torch.argmax(logits))

    # candidates sorted by logit, descending: top_k selects and sorts in one step
    k = opts.top_k if 0 < opts.top_k < logits.shape[0] else logits.shape[0]
    values, ids = torch.topk(logits, k)  # (k,), (k,)

    if opts.typical_p < 1.0 or opts.top_p < 1.0 or opts.min_p > 0.0:
        probs = torch.softmax(values, 0)  # (k,) at temperature 1
        if opts.typical_p < 1.0:
            values, probs = _restrict(values, probs, _typical(probs, opts.typical_p))
        if opts.top_p < 1.0:  # the smallest prefix whose mass reaches top_p
            values, probs = _restrict(values, probs, torch.cumsum(probs, 0) - probs < opts.top_p)
        if opts.min_p > 0.0:
            values, probs = _restrict(values, probs, probs >= opts.min_p * probs.max())

    # beyond float32's range the division overflows (-inf / inf is NaN); 1e-30 is as greedy,
    # and 1e30 as uniform, as any temperature further out
    probs = torch.softmax(values / min(max(opts.temperature, 1e-30), 1e30), 0)
    if not bool(torch.isfinite(probs).all()):
        # nothing to draw from (no finite score, or scores the division still overflows):
        # the best candidate, as at temperature 0
        return int(ids[torch.argmax(torch.nan_to_num(values, nan=-torch.inf))])
    choice = torch.multinomial(probs, 1, generator=rng)
    return int(ids[choice])
