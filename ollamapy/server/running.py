"""Holding a model's runner for one request, shared by the native and the OpenAI routes.

`run_model` loads (or reuses) the runner through the scheduler, streams what the request's
`start(runner)` yields, and maps what goes wrong to statuses: a request the model cannot
serve is a 400, a full queue or a shutdown is a 503 with Ollama's text.
"""

from __future__ import annotations

import dataclasses
import secrets
import string
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from ollamapy.contract import (
    Finished,
    ModelSpec,
    RankLost,
    ServerBusy,
    ShuttingDown,
    TokenLogprob,
)
from ollamapy.engine.options import Options, OptionsError, parse_options
from ollamapy.runner_process import RunnerStopped
from ollamapy.server.errors import APIError, bad_request
from ollamapy.server.schemas import check_option_ranges
from ollamapy.server.state import State
from ollamapy.settings import parse_keep_alive

if TYPE_CHECKING:
    from ollamapy.scheduler import AnyRunner

# Ollama's text, two spaces included (server/sched.go ErrMaxQueue)
BUSY = "server busy, please try again.  maximum pending requests exceeded"
INT_OPTIONS = frozenset(f.name for f in dataclasses.fields(Options) if f.type == "int")


def keep_alive_of(fields: Mapping[str, Any]) -> float | None:
    if "keep_alive" not in fields:
        return None
    try:
        return parse_keep_alive(fields["keep_alive"])
    except ValueError as e:
        raise bad_request(str(e)) from None


def check_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate option types and ranges up front (a 400 here, where Ollama answers 500 for a
    wrong type and takes a value out of range as it comes)."""
    options = dict(options or {})
    try:
        parse_options(options)
    except OptionsError as e:
        raise bad_request(str(e)) from None
    check_option_ranges(options, INT_OPTIONS)
    return options


def metrics(done: Finished, t_start: int, load_ns: int) -> dict[str, Any]:
    """Ollama's counters; zero ones are omitted (omitempty)."""
    values = {"total_duration": time.perf_counter_ns() - t_start, "load_duration": load_ns,
              "prompt_eval_count": done.prompt_eval_count,
              "prompt_eval_duration": done.prompt_eval_duration,
              "eval_count": done.eval_count, "eval_duration": done.eval_duration}
    return {k: v for k, v in values.items() if v}


async def run_model(state: State, spec: ModelSpec, options: Mapping[str, Any],
               keep_alive: float | None, start: Callable[[AnyRunner], AsyncIterator[Any]]
                    ) -> AsyncIterator[tuple[Any, int]]:
    """Hold the model's runner while `start(runner)` streams; → (event, load_ns) pairs.
    Request problems found by the runner become 400s."""
    t_start = time.perf_counter_ns()
    try:
        async with state.scheduler.use(spec, options, keep_alive) as runner:
            load_ns = time.perf_counter_ns() - t_start
            try:
                async with aclosing(start(runner)) as events:
                    async for event in events:
                        yield event, load_ns
            except ServerBusy:
                raise APIError(503, BUSY) from None
            except ShuttingDown as e:
                raise APIError(503, str(e)) from None
            except ValueError as e:  # RequestError, OptionsError, an empty prompt …
                raise bad_request(str(e)) from None
    except (RunnerStopped, RankLost) as e:  # the engine process died, or a rank under it
        raise APIError(500, str(e)) from None


@dataclasses.dataclass(frozen=True, slots=True)
class WholeAnswer:
    """A non-streamed answer: its pieces joined, and the Finished that ended it (whose
    tool_calls are every call of the answer)."""

    text: str
    thinking: str
    logprobs: tuple[TokenLogprob, ...]
    final: Finished


async def whole_answer(first: tuple[Any, int], events: AsyncIterator[tuple[Any, int]]
                       ) -> WholeAnswer:
    """Every event of `run_model` (the first already taken) joined into one answer."""
    text: list[str] = []
    thinking: list[str] = []
    logprobs: list[TokenLogprob] = []
    final = None
    async with aclosing(events):
        for event, _ in [first] + [e async for e in events]:
            if isinstance(event, Finished):
                final = event
            else:
                text.append(event.text)
                thinking.append(event.thinking)
                logprobs.extend(event.logprobs)
    if final is None:
        raise APIError(500, "the answer ended without finishing")
    return WholeAnswer("".join(text), "".join(thinking), tuple(logprobs), final)


def logprob_entries(logprobs: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    """Ollama's logprob entries: each token's text (invalid UTF-8 replaced) and bytes, with
    its alternatives'."""
    def entry(raw: bytes, logprob: float) -> dict[str, Any]:
        return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob,
                "bytes": list(raw)}

    return [entry(lp.raw, lp.logprob) | {"top_logprobs": [entry(r, p) for r, p in lp.top]}
            for lp in logprobs]


def with_call_ids(calls: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Tool calls with Ollama's ids: "call_" and 8 characters of [a-z0-9]."""
    alphabet = string.ascii_lowercase + string.digits
    return [{"id": "call_" + "".join(secrets.choice(alphabet) for _ in range(8)), **call}
            for call in calls]
