"""Choosing the next token from one position's logits.

The chain runs in llama.cpp's default order (common/sampling.cpp), which Ollama's runner
uses: penalties → top_k → typical_p → top_p → min_p → temperature → draw. Temperature 0 is
greedy after the penalties. The truncation filters see probabilities at temperature 1, as in
llama.cpp; temperature only reshapes what survives them.

Each step is a named transform (`apply_penalties`, `top_k`, `typical_p`, `top_p`, `min_p`,
`temperature`); `sample` composes them, as `penalized` then `choose`, the two halves a
sequence calls with a grammar's mask between them (seq.py: the server and the notebook API
both sample there). `sample` is a pure function of (logits, history, options, generator): the
same seed gives the same tokens on the same device.
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


# -- the truncation transforms: candidates (values, probs), sorted by value, descending; each
# keeps a subset and renormalises (if it would keep nothing, the most probable stays) --------

def typical_p(values: torch.Tensor, probs: torch.Tensor, mass: float
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Locally typical sampling: the tokens whose surprise is nearest the entropy, most
    typical first, until their mass reaches `mass`."""
    logp = torch.log(probs.clamp_min(1e-30))
    entropy = -(probs * logp).sum()
    order = torch.argsort((-logp - entropy).abs(), stable=True)  # most typical first
    cum = torch.cumsum(probs[order], 0)
    # keep up to and including the first token where the mass reaches `mass`
    n_keep = int(torch.searchsorted(cum, torch.tensor(mass, device=cum.device))) + 1
    keep = torch.zeros_like(probs, dtype=torch.bool)
    keep[order[:n_keep]] = True
    return _restrict(values, probs, keep)


def top_p(values: torch.Tensor, probs: torch.Tensor, p: float
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Nucleus: the smallest prefix whose mass reaches p."""
    return _restrict(values, probs, torch.cumsum(probs, 0) - probs < p)


def min_p(values: torch.Tensor, probs: torch.Tensor, p: float
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens at least p times as probable as the most probable one."""
    return _restrict(values, probs, probs >= p * probs.max())


def _restrict(values: torch.Tensor, probs: torch.Tensor, keep: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    keep &= values > -torch.inf
    if not bool(keep.any()):
        keep[torch.argmax(probs)] = True
    values = values.masked_fill(~keep, -torch.inf)
    return values, torch.softmax(values, 0)


def top_k(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best candidates (all for k <= 0), sorted: values (k,) and their ids (k,)."""
    k = k if 0 < k < logits.shape[0] else logits.shape[0]
    values, ids = torch.topk(logits, k)
    return values, ids


def temperature(values: torch.Tensor, t: float) -> torch.Tensor:
    """Probabilities of the candidates at temperature t > 0. Beyond float32's range the
    division overflows (-inf / inf is NaN); 1e-30 is as greedy, and 1e30 as uniform, as any
    temperature further out."""
    return torch.softmax(values / min(max(t, 1e-30), 1e30), 0)


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
    values, ids = top_k(logits, opts.top_k)  # (k,), (k,): selected and sorted in one step
    # the truncations see probabilities at temperature 1, as llama.cpp's do
    for keep, param, active in ((typical_p, opts.typical_p, opts.typical_p < 1.0),
                                (top_p, opts.top_p, opts.top_p < 1.0),
                                (min_p, opts.min_p, opts.min_p > 0.0)):
        if active:
            values, _ = keep(values, torch.softmax(values, 0), param)
    probs = temperature(values, opts.temperature)
    if not bool(torch.isfinite(probs).all()):
        # nothing to draw from (no finite score, or scores the division still overflows):
        # the best candidate, as at temperature 0
        return int(ids[torch.argmax(torch.nan_to_num(values, nan=-torch.inf))])
    choice = torch.multinomial(probs, 1, generator=rng)
    return int(ids[choice])
