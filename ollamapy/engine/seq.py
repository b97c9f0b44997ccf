"""One request's generation state (a `seq`), independent of how its forwards are batched.

A `Seq` owns everything that is per request: the truncated prompt, the token history, its
options, random generator, stop strings and detokenizer, its counters and timings. Whoever
drives it (the single-sequence loop in `generate.py`, or the batch in `batch.py`) asks what
to feed next (`feed`), runs the model on it, and hands back the last position's logits
(`advance`), which samples one token and says what text it completes:

    seq = Seq(prompt_ids, opts, ...)
    while not seq.done:
        tokens, start = seq.feed()   # the prompt first (start 0), then one token at a time
        seq.advance(model(tokens at start))   # → Deltas
    seq.result()                     # → Done, Ollama's counters
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from ollamapy.engine.options import Options
from ollamapy.engine.sampling import choose, make_generator, penalized
from ollamapy.engine.stops import StopMatcher
from ollamapy.engine.truncate import context_shift, keep_count, truncate_prompt

# In its last CLOSING_WINDOW tokens of budget, a constrained sequence checks at each step that
# the document can still be finished after the sampled token (one grammar walk,
# grammar.Closer); when it cannot, the finish is taken instead. Longer than the finishes of
# random partial documents of the test schemas (tests/engine/test_grammar.py).
CLOSING_WINDOW = 64


class Detokenizer(Protocol):
    def push(self, token_id: int) -> str: ...
    def flush(self) -> str: ...


class Constraint(Protocol):
    """A grammar matcher (`ollamapy.engine.grammar`): masks what may not come next."""

    def mask_(self, logits: torch.Tensor) -> None: ...
    def accept(self, token: int) -> None: ...
    @property
    def done(self) -> bool: ...  # the document is complete: only EOS may follow
    # None, or the token to take instead of `token` so the document still ends in `left`
    def close_within(self, token: int, left: int) -> int | None: ...


@dataclass(frozen=True, slots=True)
class TokenLogprobs:
    """log p of the chosen token and of the most likely ones, from the distribution the
    sampler chose from (penalised and grammar-masked logits, before temperature)."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token, logprob), most likely first


@dataclass(frozen=True, slots=True)
class Delta:
    text: str  # may be "" when a token only completed part of a character or a stop string
    token: int  # -1 for the text released at the end
    logprobs: TokenLogprobs | None = None


@dataclass(frozen=True, slots=True)
class Done:
    done_reason: Literal["stop", "length"]
    prompt_eval_count: int
    prompt_eval_duration: int  # ns
    eval_count: int
    eval_duration: int  # ns
    total_duration: int  # ns
    prompt_tokens_dropped: int  # how many prompt tokens truncation removed
    prompt_tokens_cached: int = 0  # prompt tokens whose K/V a slot already held (not run)


def window(opts: Options, context_length: int) -> int:
    """The KV window a request runs in: num_ctx clamped to the trained context, at least 4
    (api.Options, ../shared/reference/ollama-api.md §5.1)."""
    return max(4, min(opts.num_ctx, context_length))


class Seq:
    def __init__(self, prompt_ids: Sequence[int], opts: Options, *, num_ctx: int,
                 eos_ids: frozenset[int], detokenizer: Detokenizer, add_bos: bool = False,
                 shift: bool = True, device: torch.device | str = "cpu",
                 constraint: Constraint | None = None, top_logprobs: int | None = None
                 ) -> None:
        """constraint: a grammar every sampled token must satisfy; top_logprobs: None for
        no logprobs, else how many alternatives to report with each token (0–20)."""
        if not prompt_ids:
            raise ValueError("empty prompt: nothing to generate from")
        self.t_start = time.perf_counter_ns()
        self.opts, self.num_ctx, self.eos_ids, self.shift = opts, num_ctx, eos_ids, shift
        self.keep = keep_count(opts.num_keep, num_ctx, len(prompt_ids), add_bos)
        self.prompt = truncate_prompt(prompt_ids, num_ctx, self.keep)
        self.dropped = len(prompt_ids) - len(self.prompt)
        self.history = list(self.prompt)  # every token so far, for penalties and shifts
        self.rng = make_generator(opts.seed, device)
        self.detokenizer = detokenizer
        self.constraint, self.top_logprobs = constraint, top_logprobs
        self.stops = StopMatcher(opts.stop)
        # num_predict < 0 means "until a stop", capped at 10 x num_ctx as Ollama does
        self.limit = opts.num_predict if opts.num_predict >= 0 else 10 * num_ctx
        self.eval_count = 0
        self.reason: Literal["stop", "length"] = "length"
        self.closed_by_budget = False  # a constraint's document was finished for num_predict
        self.done = self.limit == 0
        self.t_prompt: int | None = None  # when the prompt's logits were ready
        self.t_end: int | None = None
        self._next: list[int] = list(self.prompt)  # tokens the model has not seen yet
        self._start = 0  # the position of _next[0]
        self.cached = 0  # prompt tokens taken from a slot's cache (`reuse`)
        # positions of its KV cache that hold history[:written]: what has run (or was reused)
        self.written = 0

    def feed(self) -> tuple[list[int], int]:
        """The tokens to run next and the position of the first: the whole prompt (or the
        shifted history) from 0, else the one token just sampled."""
        return self._next, self._start

    @property
    def sampled(self) -> bool:
        """Its prompt has run and its first token is sampled: it decodes one token a step."""
        return self.t_prompt is not None

    def fed(self, n: int) -> None:
        """The first n tokens of feed() have run (a chunk of the prompt); the rest come next."""
        self._next, self._start = self._next[n:], self._start + n
        self.written = self._start

    def reuse(self, n: int) -> None:
        """The KV cache already holds the prompt's first n tokens: feed only the rest (at
        least the last, whose logits sample the first token)."""
        if self.eval_count or self._start or not 0 <= n < len(self.prompt):
            raise ValueError(f"cannot reuse {n} of {len(self.prompt)} prompt tokens here")
        self.cached = self.written = n
        self._next, self._start = list(self.prompt[n:]), n

    def advance(self, logits: torch.Tensor) -> list[Delta]:
        """logits (vocab,) of the last fed position → the text the sampled token completes
        (and, when the seq ends here, whatever was held back)."""
        if self.t_prompt is None:
            self.t_prompt = time.perf_counter_ns()
        self.written = self._start + len(self._next)  # feed() has run
        scores = penalized(logits, self.history, self.opts, self.num_ctx)  # (vocab,) float32
        if self.constraint is not None:
            self.constraint.mask_(scores)
        token = choose(scores, self.opts, self.rng)
        left = self.limit - self.eval_count - 1  # tokens the budget allows after this one
        if self.constraint is not None and left < CLOSING_WINDOW:
            closing = self.constraint.close_within(token, left)
            if closing is not None:  # the budget ends it: finish the document in time
                token, self.closed_by_budget = closing, True
        if token in self.eos_ids:
            return self._finish("stop")
        if self.constraint is not None:
            self.constraint.accept(token)
        logprobs = self._logprobs(scores, token) if self.top_logprobs is not None else None
        self.eval_count += 1
        self.history.append(token)
        text, stopped = self.stops.push(self.detokenizer.push(token))
        out = [Delta(text, token, logprobs)]
        if stopped:  # the stop string and what follows it are never streamed
            self.reason, self.done, self.t_end = "stop", True, time.perf_counter_ns()
            return out
        if self.constraint is not None and self.constraint.done:  # EOS is all that may follow
            return out + self._finish("length" if self.closed_by_budget else "stop")
        if self.eval_count >= self.limit:
            return out + self._finish("length")
        pos = len(self.history) - 1  # the position the sampled token goes to
        if pos < self.num_ctx:
            self._next, self._start = [token], pos
        elif not self.shift:  # the window is full and shifting is off
            return out + self._finish("length")
        else:  # drop the middle and feed it all again, as Ollama's context shift does
            self.history = context_shift(self.history, self.num_ctx, self.keep)
            self._next, self._start = list(self.history), 0
            self.written = 0  # the cache holds positions of the history before the shift
        return out

    def _logprobs(self, scores: torch.Tensor, token: int) -> TokenLogprobs:
        logp = torch.log_softmax(scores, dim=0)  # (vocab,)
        top: tuple[tuple[int, float], ...] = ()
        if self.top_logprobs:
            values, ids = torch.topk(logp, min(self.top_logprobs, logp.shape[0]))
            top = tuple(zip(ids.tolist(), values.tolist(), strict=True))
        return TokenLogprobs(token, float(logp[token]), top)

    def _finish(self, reason: Literal["stop", "length"]) -> list[Delta]:
        """EOS or length: release what the detokenizer and the stop matcher held back."""
        self.reason, self.done, self.t_end = reason, True, time.perf_counter_ns()
        tail, _ = self.stops.push(self.detokenizer.flush())
        tail += self.stops.flush()
        return [Delta(tail, -1)] if tail else []

    def result(self) -> Done:
        t_end = self.t_end or time.perf_counter_ns()
        t_prompt = self.t_prompt or t_end
        return Done(self.reason, len(self.prompt), t_prompt - self.t_start, self.eval_count,
                    t_end - t_prompt, t_end - self.t_start, self.dropped, self.cached)
