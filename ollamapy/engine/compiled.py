"""The decode fast path, applied from outside the model: a compiled batched decode step.

The reference `Transformer.forward` stays the readable definition; this module only wraps
the batch's decode step (`Batch.decode`) in `torch.compile`:

- fullgraph, static shapes but one: the span of cached positions attended over
  (`key_positions`, marked dynamic), so a sequence that grows never recompiles; positions
  are tensors, so nothing in the step syncs with the host;
- the batch is padded to a bucket (1, 2, 4, … up to the slot count), so joins and leaves
  reuse a few graphs, all compiled when the model loads; a row comes out of every bucket's
  graph with the same bits (batch invariance: tests/e2e/test_batch_invariance.py);
- inductor's Python wrapper (its C++ wrapper, faster for plain bf16/int4 graphs per
  perf-anchors.md §6.1, calls our quantized kernels back through Python and was slower here:
  kernels/README.md), and a persistent cache directory (`OLLAMAPY_COMPILE_CACHE`, default
  ~/.cache/ollamapy/inductor);
- each bucket's step is compiled ahead of time (`torch.compile(...).aot_compile`) and saved
  whole, traced graph, guards and generated code, under `ollamapy-steps/<key>/` in that cache; the
  key covers torch, Python, the engine's source, the model's modules, weights' shapes and
  config, and the cache's shape. The next process with the same model loads the step
  instead of tracing it again (tracing, not code generation, is what a restart otherwise
  pays). A saved step whose guards refuse the model, or a model aot_compile cannot save, is
  compiled the usual way.

The server compiles when `OLLAMAPY_COMPILE` is not 0 (settings.py); with 0 it runs the same
step eagerly, and `OLLAMAPY_FAST=0` goes back to the float reference model entirely.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from ollamapy.engine.kv_cache import KVCache
from ollamapy.engine.model import Transformer
from ollamapy.engine.step import decode_step

log = logging.getLogger(__name__)


Step = Callable[[Transformer, torch.Tensor, torch.Tensor, torch.Tensor, KVCache], torch.Tensor]


def compile_cache() -> Path:
    """OLLAMAPY_COMPILE_CACHE, else $OLLAMAPY_CACHE/inductor (~/.cache/ollamapy/inductor)."""
    return Path(os.environ.get("OLLAMAPY_COMPILE_CACHE") or Path(
        os.environ.get("OLLAMAPY_CACHE", Path.home() / ".cache" / "ollamapy")) / "inductor")


def configure_inductor(device: torch.device) -> None:
    """Where compiled artifacts live and how CPU code is wrapped; before the first compile."""
    cache = str(compile_cache())
    # set, not defaulted: torch writes its own default (/tmp/torchinductor_$USER) into this
    # variable the first time it asks, which loading a model may already have done
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    import torch._inductor.config as inductor

    inductor.fx_graph_cache = True
    # not the C++ wrapper: with torch's int4/int8 kernels (aten ops without a C shim) it
    # called them back through Python and a decode step was slower (kernels/README.md); with
    # the VNNI ops it measured no faster on smollm2 (129.7 vs 133.4 tok/s, within this box's
    # noise) and took 65 s instead of ~30 s to compile
    inductor.cpp_wrapper = False
    # no size, stride and alignment checks of every input and op output on each call: the
    # guards check the inputs already, and ~400 checks cost smollm2's step ~0.16 ms (2%)
    inductor.size_asserts = False
    inductor.alignment_asserts = False


class CompiledDecode:
    """A drop-in for `Batch.decode` of model: (tokens (B, 1), positions (B,), key_positions
    (S,), cache) → logits (B, vocab), one compiled step per batch bucket, each loaded from
    disk when a process before compiled it for the same model."""

    def __init__(self, model: Transformer, slots: int, device: torch.device) -> None:
        configure_inductor(device)
        self.model = model
        # powers of two up to the slot count: two sequences do not pay for eight rows
        self.buckets = sorted({min(2**i, slots) for i in range(slots.bit_length() + 1)})
        self.steps: dict[int, Step] = {}
        self.origin: dict[int, str] = {}  # bucket → "saved" (loaded), "aot" or "jit"
        self._saved: Path | None = None  # the folder of this model's saved steps

    # every step is compiled and run with gradients off, whatever the caller's mode: a step
    # traced with them on is refused (a guard on grad mode) when called under no_grad or
    # inference_mode, as a notebook or a benchmark may call it
    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor,
                 key_positions: torch.Tensor, cache: KVCache) -> torch.Tensor:
        B = tokens.shape[0]
        bucket = next(b for b in self.buckets if b >= B)
        if bucket != B:
            # padding rows decode token 0 in the slots after the decoding ones, which hold a
            # prompt being prefilled or what finished sequences left for prefix reuse: they
            # write at the window's last position, which neither has written yet nor will
            # read (a prompt is at most max_len - 1 tokens, a reused prefix shorter still)
            pad = bucket - B
            tokens = torch.cat([tokens, tokens.new_zeros(pad, 1)])
            positions = torch.cat([positions, positions.new_full((pad,), cache.max_len - 1)])
        if bucket not in self.steps:
            self.steps[bucket] = self._step(bucket, cache)
        try:
            logits = self.steps[bucket](self.model, tokens, positions, key_positions, cache)
        except RuntimeError as e:  # a saved step's guards refuse these inputs: run eagerly
            if not str(e).startswith("GuardManager check failed"):
                raise
            log.warning("the compiled decode step refused its inputs (%s): eager step", e)
            logits = decode_step(self.model, tokens, positions, key_positions, cache)
        return logits[:B]

    @torch.no_grad()
    def warm_up(self, cache: KVCache) -> None:
        """Every bucket's step now, loaded or compiled, each run once (a jit step compiles
        then) with dummy rows at the start of the cache, which real sequences overwrite when
        they come."""
        for bucket in self.buckets:
            self.steps[bucket] = step = self._step(bucket, cache)
            step(self.model, *_dummy_inputs(bucket, cache))

    @torch.no_grad()
    def _step(self, bucket: int, cache: KVCache) -> Step:
        """The bucket's step: saved, else compiled ahead and saved, else compiled in this
        process on its first call. Nothing runs here: the cache is untouched."""
        tokens, positions, keys, _ = inputs = _dummy_inputs(bucket, cache)
        if self._saved is None:
            self._saved = saved_steps(self.model, cache)
        path = self._saved / f"decode-{bucket}.bin"
        if path.exists():
            try:
                with path.open("rb") as f:
                    step = torch.compiler.load_compiled_function(f)
                if step.guard_check(self.model, *inputs):  # it was made for this model
                    self.origin[bucket] = "saved"
                    return step
                log.warning("the saved decode step %s does not fit: compiling it again", path)
            except Exception:
                log.warning("the saved decode step %s cannot be read: compiling it again",
                            path, exc_info=True)
        torch._dynamo.mark_dynamic(keys, 0)  # any span of cached positions, one graph
        compiled = torch.compile(decode_step, fullgraph=True, dynamic=False)
        try:
            step = compiled.aot_compile(((self.model, *inputs), {}))
        except Exception:
            log.warning("this model's decode step cannot be compiled ahead of time: it is "
                        "compiled on its first call, in this process only", exc_info=True)
            self.origin[bucket] = "jit"
            return _marking_spans(compiled)
        self.origin[bucket] = "aot"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            step.save_compiled_function(str(path))  # written whole or not at all
        except Exception:
            log.warning("the decode step could not be saved to %s", path, exc_info=True)
        return step


def _dummy_inputs(bucket: int, cache: KVCache
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, KVCache]:
    """Token 0 at position 0 of the first `bucket` slots, attending over two positions."""
    device = cache.k[0].device
    return (torch.zeros(bucket, 1, dtype=torch.long, device=device),
            torch.zeros(bucket, dtype=torch.long, device=device),
            torch.arange(2, device=device), cache)


def _marking_spans(compiled: Step) -> Step:
    """A torch.compile'd step told, call by call, that the span of cached positions varies."""
    def step(model: Transformer, tokens: torch.Tensor, positions: torch.Tensor,
             key_positions: torch.Tensor, cache: KVCache) -> torch.Tensor:
        torch._dynamo.mark_dynamic(key_positions, 0)
        return compiled(model, tokens, positions, key_positions, cache)

    return step


def saved_steps(model: Transformer, cache: KVCache) -> Path:
    """The folder of this model's saved steps in the compile cache, named by a hash of
    everything the traced graph depends on."""
    h = hashlib.sha256()
    h.update(f"{torch.__version__} {sys.version} {model.config!r}".encode())
    sources = {Path(__file__).parent / name for name in os.listdir(Path(__file__).parent)
               if name.endswith(".py")}
    for name, module in model.named_modules():
        h.update(f"{name}:{type(module).__module__}.{type(module).__qualname__};".encode())
        if (source := inspect.getsourcefile(type(module))) is not None:
            sources.add(Path(source))
        sources.update(getattr(type(module), "extra_sources", ()))  # e.g. C++ kernels
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}:{t.device};".encode())
    for t in [*cache.k, *cache.v]:
        h.update(f"{tuple(t.shape)}:{t.dtype}:{t.device};".encode())
    for source in sorted(sources):
        h.update(source.read_bytes())
    return compile_cache() / "ollamapy-steps" / h.hexdigest()[:32]
