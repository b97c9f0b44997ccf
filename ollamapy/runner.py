"""A runner owns one loaded model and turns requests into its streamed answers.

It holds the weights (`ollamapy.loaded.LoadedModel`), the model's prompt side (template,
system, MESSAGE history) and its Modelfile parameters; it builds prompts, tokenizes, runs the
engine's generation loop and embeds. Work runs on a worker thread (torch releases the GIL in
its kernels) and reaches asyncio callers as an async iterator; when the caller stops
iterating (the client went away), the thread stops at the next token. Requests to one runner
are served one at a time here; continuous batching replaces that in the concurrency work.
"""

from __future__ import annotations

import asyncio
import gc
import math
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ollamapy.engine.device import release_cached_memory
from ollamapy.engine.generate import Delta, Done, generate
from ollamapy.engine.options import Options, parse_options
from ollamapy.loaded import LoadedModel, load
from ollamapy.prompt import ModelPrompt, chat_messages, fit_messages, generate_messages, render
from ollamapy.text.detokenize import IncrementalDetokenizer

T = TypeVar("T")


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


@dataclass(frozen=True, slots=True)
class Text:
    text: str


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


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: list[list[float]]
    prompt_eval_count: int


_END = object()


class Runner:
    def __init__(self, spec: ModelSpec, num_ctx: int, device: str | None = None) -> None:
        self.spec = spec
        self.model: LoadedModel = load(spec.path, device=device)
        self.is_encoder = self.model.checkpoint.kind == "encoder"
        self.context_length = self.model.context_length
        # the KV window this runner was loaded for: Ollama clamps num_ctx to the trained one
        self.num_ctx = max(4, min(num_ctx, self.context_length))
        self.base_options = parse_options(spec.params, Options(num_ctx=self.num_ctx))
        tok = self.model.tokenizer
        self.prompt = ModelPrompt(
            go_template=spec.template, jinja_template=self.model.checkpoint.chat_template,
            system=spec.system, messages=tuple(spec.messages),
            bos_token=tok.token_text(tok.bos_id) if tok.bos_id is not None else "",
            eos_token=tok.token_text(tok.eos_id) if tok.eos_id is not None else "")
        self._lock = threading.Lock()  # one request at a time (batching comes later)

    def close(self) -> None:
        """Release the weights now (the scheduler only unloads runners nobody is using)."""
        del self.model
        gc.collect()
        release_cached_memory()

    # -- facts for /api/ps ------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Bytes held: weights (tied ones once) plus, for decoders, a KV cache of num_ctx."""
        tensors = {t.data_ptr(): t.numel() * t.element_size()
                   for t in self.model.model.state_dict().values()}
        return sum(tensors.values()) + (0 if self.is_encoder else self.model.kv_bytes(self.num_ctx))

    @property
    def on_gpu(self) -> bool:
        return self.model.device.type != "cpu"

    def options(self, request: Mapping[str, Any] | None) -> Options:
        """Defaults < Modelfile parameters < the request's options; num_ctx is the runner's."""
        return parse_options(request, self.base_options).replace(num_ctx=self.num_ctx)

    # -- text generation --------------------------------------------------------------------
    def chat(self, messages: Sequence[Mapping[str, Any]], options: Options, *,
             tools: Sequence[Mapping[str, Any]] | None = None, truncate: bool = True,
             shift: bool = True) -> AsyncIterator[Text | Finished]:
        self._need_decoder("chat")

        def prompt() -> tuple[list[int], int]:
            msgs = chat_messages(self.prompt, messages)
            if not truncate:
                return self.model.prompt_ids(render(self.prompt, msgs, tools=tools)), 0
            text, dropped = fit_messages(self.prompt, msgs, options.num_ctx,
                                         self.model.count_prompt_tokens, tools=tools)
            return self.model.prompt_ids(text), dropped

        return self._generate(prompt, options, truncate=truncate, shift=shift)

    def generate(self, prompt: str, options: Options, *, system: str | None = None,
                 raw: bool = False, template: str | None = None, suffix: str | None = None,
                 context: Sequence[int] | None = None, truncate: bool = True,
                 shift: bool = True) -> AsyncIterator[Text | Finished]:
        self._need_decoder("generate")

        def prompt_ids() -> tuple[list[int], int]:
            if raw:
                return self.model.prompt_ids(prompt), 0
            msgs = generate_messages(self.prompt, prompt, system, with_history=context is None)
            text = render(self.prompt, msgs, go_template=template, suffix=suffix)
            if context:
                text = self.model.detokenize(list(context)) + text
            return self.model.prompt_ids(text), 0

        return self._generate(prompt_ids, options, truncate=truncate, shift=shift, raw=raw)

    def _need_decoder(self, what: str) -> None:
        if self.is_encoder:
            raise RequestError(f'"{self.spec.name}" does not support {what}')

    def _generate(self, make_prompt: Callable[[], tuple[list[int], int]], options: Options, *,
                  truncate: bool, shift: bool, raw: bool = False
                  ) -> AsyncIterator[Text | Finished]:
        """make_prompt → (ids, messages dropped) runs on the worker thread too: rendering
        and tokenizing a long history is real work."""
        tok = self.model.tokenizer

        def work(cancelled: threading.Event) -> Iterator[Text | Finished]:
            ids, messages_dropped = make_prompt()
            if not truncate and len(ids) > options.num_ctx:
                raise RequestError("the input length exceeds the context length")
            out: list[int] = []
            for event in generate(self.model.decoder, ids, options, eos_ids=tok.eos_ids,
                                  detokenizer=IncrementalDetokenizer(tok), add_bos=tok.add_bos,
                                  shift=shift):
                if cancelled.is_set():
                    return
                if isinstance(event, Delta):
                    if event.token >= 0:
                        out.append(event.token)
                    if event.text:
                        yield Text(event.text)
                else:
                    yield _finished(event, [] if raw else ids + out, messages_dropped)

        return self._in_thread(work)

    # -- embeddings ---------------------------------------------------------------------------
    def embed(self, inputs: Sequence[str], *, truncate: bool = True,
              dimensions: int | None = None, num_ctx: int | None = None,
              normalize: bool = True) -> AsyncIterator[Embeddings]:
        """One padded forward for all inputs. The token limit is min(num_ctx, trained
        context); longer inputs are cut (truncate) or refused."""
        limit = min(num_ctx or self.num_ctx, self.context_length)

        def work(cancelled: threading.Event) -> Iterator[Embeddings]:
            batch = [self.model.tokenize(text) for text in inputs]
            if not truncate and any(len(ids) > limit for ids in batch):
                raise RequestError("the input length exceeds the context length")
            vectors = self.model.embed_ids(batch, limit, normalize=normalize)
            if dimensions and 0 < dimensions < len(vectors[0]):
                vectors = [_renormalize(v[:dimensions]) for v in vectors]
            if any(not math.isfinite(x) for v in vectors for x in v):
                raise RequestError("embedding contains NaN or Inf values")
            yield Embeddings(vectors, sum(min(len(ids), limit) for ids in batch))

        return self._in_thread(work)

    # -- the worker thread ------------------------------------------------------------------
    async def _in_thread(self, work: Callable[[threading.Event], Iterator[T]]
                         ) -> AsyncIterator[T]:
        """Run work on a thread under the runner's lock, handing its items to this event
        loop; closing the iterator (client gone) makes the thread stop at its next item."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[Any, BaseException | None]] = asyncio.Queue()
        cancelled = threading.Event()

        def put(item: Any, error: BaseException | None = None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (item, error))
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancelled.set()

        def run() -> None:
            try:
                with self._lock:
                    if cancelled.is_set():
                        return
                    for item in work(cancelled):
                        if cancelled.is_set():
                            return
                        put(item)
            except BaseException as e:  # handed to the awaiting side, raised there
                put(None, e)
            finally:
                put(_END)

        threading.Thread(target=run, name=f"runner:{self.spec.name}", daemon=True).start()
        try:
            while True:
                item, error = await queue.get()
                if error is not None:
                    raise error
                if item is _END:
                    return
                yield item
        finally:
            cancelled.set()


def _finished(done: Done, context: list[int], messages_dropped: int) -> Finished:
    return Finished(done.done_reason, done.prompt_eval_count, done.prompt_eval_duration,
                    done.eval_count, done.eval_duration, context, done.prompt_tokens_dropped,
                    messages_dropped)


def _renormalize(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v] if norm > 0 else v
