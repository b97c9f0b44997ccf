"""The engine's public face for notebooks and scripts: `ollamapy.load(path)` → `LoadedModel`.

    m = ollamapy.load("model.gguf")            # or a Hugging Face safetensors folder
    for chunk in m.generate("Why is the sky blue?", temperature=0):
        print(chunk.get("response", ""), end="")

Chunks are dicts shaped like Ollama's /api/generate stream (chat chunks like /api/chat).

`ollamapy.load(path, fast=True)` runs what the server runs: quantized weights and the compiled
decode step (compiled, or loaded from the compile cache, when the model loads, for the default
window; another `num_ctx` gets its own step on first use). Where the fast path is batch
invariant (README, "Batch invariance") it gives the server's tokens for the same file, options
and seed, whatever else the server was running.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ollamapy.engine.compiled import CompiledDecode
from ollamapy.engine.device import pick_device, pick_dtype
from ollamapy.engine.generate import Delta, generate
from ollamapy.engine.kv_cache import KVCache, kv_cache_dtype
from ollamapy.engine.model import Transformer
from ollamapy.engine.options import Options, parse_options
from ollamapy.engine.placement import place
from ollamapy.engine.pooling import decoder_embedding
from ollamapy.engine.seq import window
from ollamapy.engine.tensor_parallel import Part
from ollamapy.loading.gguf_config import decoder_pooling
from ollamapy.loading.load import Checkpoint, load_checkpoint
from ollamapy.text.detokenize import IncrementalDetokenizer
from ollamapy.text.template import DEFAULT_TEMPLATE, render_chat_template


class LoadedModel:
    def __init__(self, checkpoint: Checkpoint, path: Path, compile: bool = False) -> None:
        """compile: a decoder decodes through a compiled step (engine/compiled.py), one per
        window, the default window's compiled now."""
        self.checkpoint = checkpoint
        self.path = path
        self.model = checkpoint.model
        self.tokenizer = checkpoint.tokenizer
        first = next(iter(self.model.parameters()))
        self.device = self.model.device if isinstance(self.model, Transformer) else first.device
        self.dtype = self.model.dtype if isinstance(self.model, Transformer) else first.dtype
        self.compile = compile and isinstance(self.model, Transformer)
        self.compiled: dict[int, CompiledDecode] = {}  # window (num_ctx) → its decode step
        if self.compile:
            self.compiled_decode(window(Options(), self.context_length))

    def __repr__(self) -> str:
        return (f"LoadedModel({self.path.name!r}, {self.checkpoint.kind}, {self.device}, "
                f"{self.dtype})")

    # -- text ---------------------------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False
                 ) -> list[int]:
        return self.tokenizer.encode(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True
               ) -> str:
        """The chat template (the checkpoint's own, else a plain concatenation) applied."""
        tok = self.tokenizer
        bos = tok.token_text(tok.bos_id) if tok.bos_id is not None else ""
        eos = tok.token_text(tok.eos_id) if tok.eos_id is not None else ""
        return render_chat_template(self.checkpoint.chat_template or DEFAULT_TEMPLATE, messages,
                                    add_generation_prompt=add_generation_prompt,
                                    bos_token=bos, eos_token=eos)

    def prompt_ids(self, text: str) -> list[int]:
        """A rendered prompt → ids: special-token text is parsed (templates emit it); BOS is
        added unless the text already starts with it, so a template that writes bos_token
        does not double it."""
        tok = self.tokenizer
        bos = tok.token_text(tok.bos_id) if tok.bos_id is not None else None
        add_special = not (bos and text.startswith(bos))
        return tok.encode(text, add_special=add_special, parse_special=True)

    def count_prompt_tokens(self, text: str) -> int:
        return len(self.prompt_ids(text))

    @property
    def context_length(self) -> int:
        """The longest sequence the checkpoint was trained for (an encoder: the most tokens
        its pipeline embeds)."""
        if isinstance(self.model, Transformer):
            return self.model.config.context_length
        return self.model.config.max_tokens

    # -- decoder ------------------------------------------------------------------------------
    @property
    def decoder(self) -> Transformer:
        if not isinstance(self.model, Transformer):
            raise ValueError(f"{self.path.name} is an embedding model: it does not generate")
        return self.model

    def compiled_decode(self, num_ctx: int) -> CompiledDecode | None:
        """The compiled decode step for a window of num_ctx (None when not compiling): made
        on first use, loaded from the compile cache when a process before made it."""
        if not self.compile:
            return None
        if num_ctx not in self.compiled:
            step = CompiledDecode(self.decoder, 1, self.device)
            step.warm_up(KVCache(self.decoder.config, num_ctx, device=self.device,
                                 dtype=self.decoder.kv_dtype))
            self.compiled[num_ctx] = step
        return self.compiled[num_ctx]

    def kv_bytes(self, num_ctx: int) -> int:
        """Bytes of a KV cache of num_ctx positions (keys and values, every layer)."""
        c = self.decoder.config
        return 2 * c.n_layers * c.n_kv_heads * c.head_dim * num_ctx * self.decoder.kv_dtype.itemsize

    def logits(self, ids: Sequence[int]) -> torch.Tensor:
        """float32 logits of the last position, shape (vocab,), from one uncached forward."""
        tokens = torch.tensor([list(ids)], device=self.device)  # (1, T)
        return self.decoder(tokens)[0].float().cpu()

    def generate(self, prompt: str, raw: bool = False, system: str | None = None,
                 **options: Any) -> Iterator[dict[str, Any]]:
        if raw:
            text = prompt
        else:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}]
            text = self.render(messages)
        for delta, final in self._stream(self.prompt_ids(text), options):
            yield ({"response": delta, "done": False} if final is None
                   else {"response": "", "done": True, **final})

    def chat(self, messages: Sequence[Mapping[str, Any]], **options: Any
             ) -> Iterator[dict[str, Any]]:
        """Like generate, with chunks shaped as Ollama's /api/chat:
        {"message": {"role": "assistant", "content": delta}, "done": False} … final counters."""
        ids = self.prompt_ids(self.render(messages))
        for delta, final in self._stream(ids, options):
            message = {"role": "assistant", "content": delta}
            yield ({"message": message, "done": False} if final is None
                   else {"message": message, "done": True, **final})

    def _stream(self, ids: list[int], options: Mapping[str, Any]
                ) -> Iterator[tuple[str, dict[str, Any] | None]]:
        model = self.decoder
        opts = parse_options(options)
        # the model's tensors and each step's are made outside inference mode, even when the
        # caller is in it: the compiled step takes no inference tensors (a guard refuses them)
        with torch.inference_mode(False):
            model.init_rope(opts.num_ctx)  # LongRoPE: this window's factors, as the server
            decode = self.compiled_decode(window(opts, self.context_length))
        detok = IncrementalDetokenizer(self.tokenizer)
        events = generate(model, ids, opts, eos_ids=self.tokenizer.eos_ids, detokenizer=detok,
                          add_bos=self.tokenizer.add_bos, decode=decode)
        while True:
            with torch.inference_mode(False):
                event = next(events, None)
            if event is None:
                return
            if isinstance(event, Delta):
                if event.text:
                    yield event.text, None
            else:
                yield "", {"done_reason": event.done_reason,
                           "total_duration": event.total_duration,
                           "prompt_eval_count": event.prompt_eval_count,
                           "prompt_eval_duration": event.prompt_eval_duration,
                           "eval_count": event.eval_count,
                           "eval_duration": event.eval_duration}

    # -- embeddings ---------------------------------------------------------------------------
    def embedding_ids(self, text: str) -> list[int]:
        """A text's ids for an embedding, special tokens added (BOS; [CLS] … [SEP]). A decoder
        also parses special-token text, as llama.cpp's runner tokenizes a prompt."""
        return self.tokenize(text, parse_special=isinstance(self.model, Transformer))

    def embed(self, texts: str | Sequence[str]) -> list[list[float]]:
        """L2-normalised embeddings, one per text (an encoder's from one padded forward)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.embed_ids([self.embedding_ids(t) for t in texts]) if texts else []

    def embed_ids(self, batch: Sequence[Sequence[int]], max_tokens: int | None = None,
                  normalize: bool = True, num_batch: int = 512) -> list[list[float]]:
        """Token id lists → one embedding each, inputs cut to max_tokens first: an encoder
        keeps its closing [SEP], a decoder the start of the text (as Ollama cuts it). A
        decoder embeds as llama.cpp does (`engine/pooling.py`), one input at a time, in
        chunks of num_batch positions."""
        if not isinstance(self.model, Transformer):
            return self.model.embed_ids(batch, max_tokens, normalize).tolist()
        pooling = decoder_pooling(self.checkpoint.metadata)
        limit = min(max_tokens or self.context_length, self.context_length)
        vectors = torch.stack([decoder_embedding(self.model, list(ids)[:limit], pooling,
                                                 num_batch) for ids in batch])  # (B, dim)
        return (F.normalize(vectors, dim=-1) if normalize else vectors).tolist()


def load(path: str | Path, device: str | torch.device | None = None,
         dtype: str | torch.dtype | None = None, *, fast: bool = False,
         compile: bool | None = None, kv_cache_type: str = "f16",
         part: Part | None = None, num_gpu: int = -1) -> LoadedModel:
    """Load a .gguf file or a Hugging Face safetensors folder onto device (auto: cuda, mps,
    cpu) in dtype (auto: bf16 on cuda, fp16 on mps, fp32 on cpu). fast: keep a GGUF's
    weights quantized (int4/int8 kernels) instead of the float reference, its KV cache of
    kv_cache_type (OLLAMA_KV_CACHE_TYPE's values; the reference keeps dtype). compile
    (default: fast): decode through the compiled step the server runs, compiled now. part:
    a decoder's tensor-parallel share (ollamapy/tensor_group.py runs it). num_gpu: Ollama's
    layers on the accelerator (-1: all, 0: none; a count splits a decoder between the
    accelerator and the CPU, engine/placement.py: its float model, run eagerly)."""
    dev = pick_device(device)
    if num_gpu == 0:
        dev = torch.device("cpu")
    if dev.type != "cpu" and num_gpu > 0:  # a count: the layers split between the two
        cpu = torch.device("cpu")
        checkpoint = load_checkpoint(path, cpu, pick_dtype(cpu, dtype), False, part)
        if isinstance(checkpoint.model, Transformer):
            checkpoint.model = place(checkpoint.model, num_gpu, dev)
        else:  # an encoder: small, whole on the accelerator
            checkpoint.model.to(dev)
        return LoadedModel(checkpoint, Path(path), False)
    checkpoint = load_checkpoint(path, dev, pick_dtype(dev, dtype), fast, part)
    if fast and isinstance(checkpoint.model, Transformer):
        model = checkpoint.model
        model.kv_dtype = kv_cache_dtype(kv_cache_type, model.dtype)
    return LoadedModel(checkpoint, Path(path), fast if compile is None else compile)
