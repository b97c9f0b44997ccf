"""A runner owns one loaded model and turns requests into its streamed answers.

It holds the weights (`ollamapy.loaded.LoadedModel`), the model's prompt side (template,
system, MESSAGE history) and its Modelfile parameters. It builds and tokenizes prompts (on a
thread of asyncio's pool), then hands the request to the model's engine thread
(`ollamapy.worker`): continuous batching of up to `num_parallel` sequences for a decoder,
shared padded forwards for an encoder. Answers reach asyncio callers as async iterators;
when a caller stops iterating (the client went away), its sequence leaves the batch before
the next step.
"""

from __future__ import annotations

import asyncio
import gc
import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from functools import cached_property
from typing import Any

from ollamapy.answer import TaggedAnswer, parsed_answer, without_earlier_thinking
from ollamapy.contract import (
    Embeddings,
    Finished,
    ModelSpec,
    RequestError,
    Text,
    TokenLogprob,
    request_options,
)
from ollamapy.engine.batch import Batch
from ollamapy.engine.compiled import CompiledDecode
from ollamapy.engine.device import pick_device, release_cached_memory, release_openmp_threads
from ollamapy.engine.grammar import Grammars, Matcher, constrains
from ollamapy.engine.options import Options, parse_options
from ollamapy.engine.reasoning_first import ReasoningFirst
from ollamapy.engine.seq import Constraint, Seq, TokenLogprobs
from ollamapy.loaded import LoadedModel, load
from ollamapy.prompt import (
    ModelPrompt,
    Think,
    chat_messages,
    fit_messages,
    generate_messages,
    render,
)
from ollamapy.tensor_group import Group
from ollamapy.text.detokenize import IncrementalDetokenizer
from ollamapy.text.gotemplate import GoTemplateError
from ollamapy.text.harmony import HarmonyParser, harmony_template
from ollamapy.text.thinking import CLOSE, OPEN, ThinkingParser, jinja_thinks, thinking_tags
from ollamapy.text.toolcalls import ToolCallFormat, ToolCallParser
from ollamapy.worker import DecodeJob, DecodeWorker, EmbedJob, EmbedWorker, Worker


class Runner:
    def __init__(self, spec: ModelSpec, num_ctx: int, *, num_parallel: int = 4,
                 max_queue: int = 512, device: str | None = None, fast: bool = False,
                 compile: bool = False, kv_cache_type: str = "f16",
                 batch_invariant: bool = True, tensor_parallel: int = 1,
                 job: str = "") -> None:
        """fast: GGUF weights stay quantized (int4/int8 kernels); compile: the batched
        decode step is compiled (and compiled now, before the first request waits on it);
        kv_cache_type: OLLAMA_KV_CACHE_TYPE (the fast path's cache); batch_invariant:
        OLLAMAPY_BATCH_INVARIANT (`Transformer.batch_invariant`); tensor_parallel:
        OLLAMAPY_TENSOR_PARALLEL, the model split over that many processes, this one rank 0
        (tensor_group.py; its steps run eagerly); job: the address of torchrun's store when
        the server is rank 0 of a torchrun job, whose other ranks run the followers
        (cluster.py)."""
        self.spec = spec
        self.group: Group | None = None
        part = None
        if tensor_parallel > 1:
            self.group = Group.start(spec.path, tensor_parallel, device=pick_device(device),
                                     fast=fast, kv_cache_type=kv_cache_type, num_ctx=num_ctx,
                                     slots=num_parallel, batch_invariant=batch_invariant,
                                     name=spec.name, job=job)
            part, compile = self.group.part, False
        # Ollama's num_gpu (a Modelfile parameter, or a request's: the scheduler puts it in
        # the spec): a count of layers splits the model between the accelerator and the CPU
        num_gpu = parse_options(spec.params).num_gpu
        if num_gpu > 0 and pick_device(device).type != "cpu":
            compile = False  # the split float model runs eagerly
        # compile=False: the batch below gets its own compiled step, one per bucket
        try:
            self.model: LoadedModel = load(spec.path, device=device, fast=fast, compile=False,
                                           kv_cache_type=kv_cache_type, part=part,
                                           num_gpu=num_gpu)
        except Exception as e:
            if self.group is not None:
                self.group.ready(e)  # the followers learn it and stop
            raise
        if self.group is not None:
            self.group.ready()
            self.group.lead(self.model.model)
        self.is_encoder = self.model.checkpoint.kind == "encoder"
        self.context_length = self.model.context_length
        # the KV window this runner was loaded for: Ollama clamps num_ctx to the trained one
        self.num_ctx = max(4, min(num_ctx, self.context_length))
        self.num_parallel = num_parallel
        self.base_options = parse_options(spec.params, Options(num_ctx=self.num_ctx))
        tok = self.model.tokenizer
        self.prompt = ModelPrompt(
            go_template=spec.template, jinja_template=self.model.checkpoint.chat_template,
            system=spec.system, messages=tuple(spec.messages),
            bos_token=tok.token_text(tok.bos_id) if tok.bos_id is not None else "",
            eos_token=tok.token_text(tok.eos_id) if tok.eos_id is not None else "")
        self.worker: Worker
        if self.is_encoder:
            self.worker = EmbedWorker(spec.name, self.model.embed_ids, max_queue)
        else:
            self.model.decoder.init_rope(self.num_ctx)  # LongRoPE: the factors for this window
            self.model.decoder.batch_invariant = batch_invariant
            batch = Batch(self.model.decoder, num_parallel, self.num_ctx,
                          self.base_options.num_batch)
            if self.group is not None:
                batch.cache = self.group.mirrored(batch.cache)
            if compile:
                batch.decode = CompiledDecode(self.model.decoder, num_parallel,
                                              self.model.device)
                batch.decode.warm_up(batch.cache)
            num_batch = self.base_options.num_batch
            self.worker = DecodeWorker(
                spec.name, batch, max_queue,
                embed=lambda ids, limit, normalize: self.model.embed_ids(
                    ids, limit, normalize, num_batch=num_batch))
        # from here the engine thread does the compute; this thread's OpenMP team would slow
        # every step down (engine/device.py)
        release_openmp_threads()

    def close(self) -> None:
        """Stop the engine thread (failing what it still holds) and release the weights."""
        self.worker.stop()
        if self.group is not None:
            self.group.stop()
        if isinstance(self.worker, DecodeWorker):
            del self.worker.batch
        del self.model
        gc.collect()
        release_cached_memory()

    # -- facts for /api/ps ------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Bytes held: weights (tied ones once) plus, for decoders, the KV cache of every
        slot."""
        tensors = {t.data_ptr(): t.numel() * t.element_size()
                   for t in self.model.model.state_dict().values()}
        kv = 0 if self.is_encoder else self.num_parallel * self.model.kv_bytes(self.num_ctx)
        return sum(tensors.values()) + kv

    @property
    def on_gpu(self) -> bool:
        return self.model.device.type != "cpu"

    @property
    def alive(self) -> bool:
        """False once the engine thread has stopped (the scheduler then loads afresh)."""
        return self.worker.thread.is_alive()

    def stats(self) -> dict[str, Any]:
        """The engine's counters (`Worker.stats`)."""
        return self.worker.stats()

    def options(self, request: Mapping[str, Any] | None) -> Options:
        return request_options(self.base_options, request, self.num_ctx)

    # -- text generation --------------------------------------------------------------------
    def chat(self, messages: Sequence[Mapping[str, Any]], options: Options, *,
             tools: Sequence[Mapping[str, Any]] | None = None, truncate: bool = True,
             shift: bool = True, logprobs: int | None = None, format: Any = None,
             think: Think = None) -> AsyncIterator[Text | Finished]:
        """logprobs: None for none, else how many alternatives per token (0–20); format:
        Ollama's `format` ("json" or a JSON schema) enforced by a grammar; think: the
        request's, after the server's defaulting (None: unset)."""
        self._need_decoder("chat")
        rendered: list[str] = []

        def prompt() -> tuple[list[int], int]:
            msgs = chat_messages(self.prompt, messages)
            if self.thinking_tags == (OPEN, CLOSE):
                msgs = without_earlier_thinking(msgs)
            if not truncate:
                text, dropped = render(self.prompt, msgs, tools=tools, think=think), 0
            else:
                text, dropped = fit_messages(self.prompt, msgs, options.num_ctx,
                                             self.model.count_prompt_tokens, tools=tools,
                                             think=think)
            rendered.append(text)
            return self.model.prompt_ids(text), dropped

        events = self._generate(prompt, options, truncate=truncate, shift=shift,
                                logprobs=logprobs, format=format,
                                opened=self._opened(rendered) if self._thinks(think) else None)
        return self._answer(events, rendered, think, tools)

    def generate(self, prompt: str, options: Options, *, system: str | None = None,
                 raw: bool = False, template: str | None = None, suffix: str | None = None,
                 context: Sequence[int] | None = None, truncate: bool = True,
                 shift: bool = True, logprobs: int | None = None, format: Any = None,
                 think: Think = None) -> AsyncIterator[Text | Finished]:
        self._need_decoder("generate")
        rendered: list[str] = []

        def prompt_ids() -> tuple[list[int], int]:
            if raw:
                rendered.append(prompt)
                return self.model.prompt_ids(prompt), 0
            msgs = generate_messages(self.prompt, prompt, system, with_history=context is None)
            text = render(self.prompt, msgs, go_template=template, suffix=suffix, think=think)
            if context:
                text = self.model.detokenize(list(context)) + text
            rendered.append(text)
            return self.model.prompt_ids(text), 0

        think = None if raw else think
        events = self._generate(prompt_ids, options, truncate=truncate, shift=shift, raw=raw,
                                logprobs=logprobs, format=format,
                                opened=self._opened(rendered) if self._thinks(think) else None)
        return self._answer(events, rendered, think, None)

    def _answer(self, events: AsyncIterator[Text | Finished], rendered: list[str],
                think: Think, tools: Sequence[Mapping[str, Any]] | None
                ) -> AsyncIterator[Text | Finished]:
        """The answer's reasoning split out when the model thinks, tool calls parsed when the
        request has tools; else the events as they are. A harmony model's answer is always
        split (its reasoning cannot be turned off)."""
        if self.harmony:
            return parsed_answer(events, HarmonyParser)
        thinks = self._thinks(think)
        calls = self.tool_call_format if tools else None
        if not thinks and calls is None:
            return events

        def parser() -> TaggedAnswer:
            reasoning = ThinkingParser(*self.thinking_tags, opened=self._opened(rendered)()) \
                if thinks else None
            return TaggedAnswer(reasoning, ToolCallParser(calls) if calls else None)

        return parsed_answer(events, parser)

    @cached_property
    def harmony(self) -> bool:
        """The model answers in harmony messages (gpt-oss)."""
        return harmony_template(self.spec.template or self.model.checkpoint.chat_template)

    def _thinks(self, think: Think) -> bool:
        """The answer starts with reasoning in this model's tags."""
        return think is not None and think is not False and all(self.thinking_tags)

    def _opened(self, rendered: list[str]) -> Callable[[], bool]:
        """→ (once the prompt is rendered) whether it ends with the opening tag."""
        return lambda: bool(rendered) and rendered[0].rstrip().endswith(self.thinking_tags[0])

    def _reasoning_first(self, grammar: Matcher, opened: bool) -> ReasoningFirst:
        """A grammar that applies once the reasoning is over (engine/reasoning_first.py)."""
        closing = self.thinking_tags[1]
        return ReasoningFirst(grammar, opening_ids=self._opening_ids,
                              closing_ids=self.model.tokenize(closing, False, True),
                              closing=closing.encode(),
                              token_bytes=self.model.tokenizer.token_bytes, opened=opened)

    @cached_property
    def _opening_ids(self) -> list[int]:
        """The tokens that are the whole opening tag (a vocabulary scan, once)."""
        tok, opening = self.model.tokenizer, self.thinking_tags[0].encode()
        return [i for i in range(tok.vocab_size) if tok.token_bytes(i).strip() == opening]

    @cached_property
    def thinking_tags(self) -> tuple[str, str]:
        """The tags this model's template wraps reasoning in (("", ""): it does not think)."""
        if self.spec.template is not None:
            try:
                return thinking_tags(self.spec.template)
            except GoTemplateError:
                return "", ""
        template = self.model.checkpoint.chat_template
        return (OPEN, CLOSE) if template and jinja_thinks(template) else ("", "")

    @cached_property
    def grammars(self) -> Grammars:
        """Structured outputs for this vocabulary (built on first use: ~0.1 s)."""
        tok = self.model.tokenizer
        vocab = [b"" if tok.is_control(i) else tok.token_bytes(i) for i in range(tok.vocab_size)]
        return Grammars(vocab, tok.eos_ids, self.model.decoder.config.vocab_size)

    @cached_property
    def tool_call_format(self) -> ToolCallFormat | None:
        """How this model's template writes tool calls (None: it does not)."""
        probe_tools = [{"type": "function", "function": {
            "name": "probe_function_name", "description": "",
            "parameters": {"type": "object", "properties": {}}}}]
        try:
            return ToolCallFormat.probe(lambda msgs: render(self.prompt, msgs,
                                                            tools=probe_tools))
        except ValueError:  # a template that refuses the probe conversation
            return None

    def _need_decoder(self, what: str) -> None:
        if self.is_encoder:
            raise RequestError(f'"{self.spec.name}" does not support {what}')

    def _describe(self, lp: TokenLogprobs) -> TokenLogprob:
        """Token ids → their bytes (the server writes them as Ollama's or OpenAI's JSON)."""
        raw = self.model.tokenizer.token_bytes
        return TokenLogprob(raw(lp.token), lp.logprob, tuple((raw(t), p) for t, p in lp.top))

    async def _generate(self, make_prompt: Callable[[], tuple[list[int], int]],
                        options: Options, *, truncate: bool, shift: bool, raw: bool = False,
                        logprobs: int | None = None, format: Any = None,
                        opened: Callable[[], bool] | None = None
                        ) -> AsyncIterator[Text | Finished]:
        """make_prompt → (ids, messages dropped) runs on a pool thread: rendering and
        tokenizing a long history is real work that must not stall the event loop. opened:
        the model reasons first (→ whether the prompt opened the tag), so a format's grammar
        waits for the reasoning to end."""
        compiled = None
        if constrains(format):
            compiled = await asyncio.to_thread(self.grammars.compile, format)
        ids, dropped = await asyncio.to_thread(make_prompt)
        if not truncate and len(ids) > options.num_ctx:
            raise RequestError("the input length exceeds the context length")
        tok = self.model.tokenizer

        def make_seq() -> Seq:
            constraint: Constraint | None = None
            if compiled is not None:
                grammar = compiled.matcher()
                constraint = grammar if opened is None else self._reasoning_first(grammar,
                                                                                  opened())
            return Seq(ids, options, num_ctx=self.num_ctx, eos_ids=tok.eos_ids,
                       detokenizer=IncrementalDetokenizer(tok, specials=self.harmony and
                                                          not raw),
                       add_bos=tok.add_bos,
                       shift=shift, device=self.model.device, constraint=constraint,
                       top_logprobs=logprobs)

        job = DecodeJob(asyncio.get_running_loop(), make_seq, raw=raw, messages_dropped=dropped,
                        describe=self._describe if logprobs is not None else None)
        self.worker.submit(job)
        async for item in self.worker.results(job):
            yield item

    # -- tokens (beyond Ollama: /api/tokenize, /api/detokenize) ------------------------------
    async def tokenize(self, content: str, *, add_special: bool = False,
                       parse_special: bool = True) -> list[int]:
        """As llama.cpp's server /tokenize: no BOS by default, special-token text parsed."""
        return await asyncio.to_thread(self.model.tokenize, content, add_special, parse_special)

    async def detokenize(self, tokens: Sequence[int]) -> str:
        size = self.model.tokenizer.vocab_size
        bad = next((t for t in tokens if not 0 <= t < size), None)
        if bad is not None:
            raise RequestError(f"token {bad} is out of range: the vocabulary has {size} tokens")
        return await asyncio.to_thread(self.model.detokenize, list(tokens))

    # -- embeddings ---------------------------------------------------------------------------
    async def embed(self, inputs: Sequence[str], *, truncate: bool = True,
                    dimensions: int | None = None, num_ctx: int | None = None,
                    normalize: bool = True) -> AsyncIterator[Embeddings]:
        """The token limit is min(num_ctx, trained context); longer inputs are cut
        (truncate) or refused. An encoder's concurrent requests share padded forwards; a
        decoder (a completion model, as Ollama's runner serves one) embeds between decode
        steps, its last token's final hidden state unless its GGUF says how to pool."""
        limit = min(num_ctx or self.num_ctx, self.context_length)
        batch = await asyncio.to_thread(lambda: [self.model.embedding_ids(t) for t in inputs])
        if not truncate and any(len(ids) > limit for ids in batch):
            raise RequestError("the input length exceeds the context length")
        job = EmbedJob(asyncio.get_running_loop(), batch, limit, normalize)
        self.worker.submit(job)
        async for result in self.worker.results(job):
            assert isinstance(result, Embeddings)
            if dimensions and 0 < dimensions < len(result.vectors[0]):
                result = Embeddings([_renormalize(v[:dimensions]) for v in result.vectors],
                                    result.prompt_eval_count)
            yield result


def _renormalize(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v] if norm > 0 else v
