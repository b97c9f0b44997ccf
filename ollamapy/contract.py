"""What passes between the server and a runner, on a thread or in an engine process.

The server asks for a model (`ModelSpec`) and options (`request_options`); an answer streams
`Text` events and ends with `Finished` (or `Embeddings`); a request can fail with
`RequestError` (400), `ServerBusy` or `ShuttingDown` (503). A `Job` carries one request's
events from the thread that makes them to the caller's event loop. Nothing here imports
torch: the server process imports this side only, and its engines the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ollamapy.engine.options import Options, parse_options


class RequestError(ValueError):
    """A request the model cannot serve (HTTP 400), with Ollama's message."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What a runner needs from the store: files and the prompt-side layers."""

    name: str  # display name, e.g. "smollm2:135m"
    path: Path  # a .gguf file or a Hugging Face folder
    template: str | None = None
    system: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    messages: tuple[Mapping[str, Any], ...] = ()
    digest: str = ""  # the manifest's, to tell a changed model from a loaded one
    capabilities: tuple[str, ...] = ("completion",)  # Ollama's: completion, embedding, tools…


def request_options(base: Options, request: Mapping[str, Any] | None, num_ctx: int
                    ) -> Options:
    """Defaults < Modelfile parameters (base) < the request's options; num_ctx is the
    runner's, whatever the request says (a different one reloads the model first)."""
    return parse_options(request, base).replace(num_ctx=num_ctx)


_END = object()


class ServerBusy(Exception):
    """The queue is full (Ollama's 503)."""


class ShuttingDown(Exception):
    pass


class RankLost(RuntimeError):
    """A tensor-parallel rank of the model stopped (tensor_group.py): its forwards cannot go
    on, so the requests end with this (a 500) and the runner stops (the model is unloaded)."""


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """A generated token's bytes and log probability, and the likeliest alternatives'."""

    raw: bytes
    logprob: float
    top: tuple[tuple[bytes, float], ...] = ()  # (bytes, logprob), most likely first


@dataclass(frozen=True, slots=True)
class Text:
    """A piece of the answer as it streams: content, reasoning apart from it (models that
    think), and tool calls as each is parsed."""

    text: str  # "" when the token's text is held back (part of a character or a stop)
    logprobs: tuple[TokenLogprob, ...] = ()  # when asked for: the token(s) this text ends
    thinking: str = ""
    tool_calls: tuple[dict[str, Any], ...] = ()  # Ollama's {"function": {index, name, arguments}}


@dataclass(frozen=True, slots=True)
class Finished:
    done_reason: str
    prompt_eval_count: int
    prompt_eval_duration: int  # ns
    eval_count: int
    eval_duration: int  # ns
    context: list[int]  # prompt and generated ids (generate's deprecated `context`)
    prompt_tokens_dropped: int = 0
    messages_dropped: int = 0
    prompt_tokens_cached: int = 0  # prompt tokens a slot already held (prefix reuse)
    tool_calls: tuple[dict[str, Any], ...] = ()  # every call of the answer (already streamed)


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: list[list[float]]
    prompt_eval_count: int


class Job:
    """One request inside a worker: the worker puts results, the caller iterates them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[Any, BaseException | None]] = asyncio.Queue()
        self.cancelled = False  # set by the caller's side, read by the worker under its lock
        self.cancel_step = -1  # the worker's step count when the caller went away
        self.finished = False

    def put(self, item: Any, error: BaseException | None = None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (item, error))
        except RuntimeError:  # the caller's loop is closed: nobody is listening
            self.cancelled = True

    def end(self, error: BaseException | None = None) -> None:
        if not self.finished:
            self.finished = True
            self.put(_END, error)

    async def items(self) -> AsyncIterator[Any]:
        """What was put, on the caller's loop, until the end (raising its error if any)."""
        while True:
            item, error = await self.queue.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
