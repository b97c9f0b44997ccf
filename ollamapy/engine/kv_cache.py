"""The preallocated key/value cache: run state, passed into the model's forward.

One (slots, n_kv_heads, max_len, head_dim) buffer per layer for keys and one for values,
allocated once for the whole context window (num_ctx) and every slot (one slot per sequence
decoded together). `update` writes the new positions in place, row i's T new entries at
positions[i] (a (B, T) tensor: a prompt chunk is one row of T, a batched decode step B rows
of 1), and returns a view of the first `length` positions (the span the model attends over;
its mask hides what a row must not see), so a step never reallocates. Positions stay on the
device: no host sync, and a compiled step never recompiles.

`slot(i)` is slot i as a one-sequence cache of its own (views of the same buffers), for
prefilling one sequence of a batch; `swap` exchanges two slots' contents when the batch is
compacted or a prompt finds its prefix in another slot, and `copy` shares a prefix.

On CPU the buffers are private anonymous memory maps (`zeros`): the kernel gives out pages on
first write, and a read of a page never written maps its shared zero page. So the window is
allocated whole, once, but costs resident memory only for the positions written: 4 slots of
a 4096-position window for smollm2 are 720 MiB of address space and ~46 KB of RSS per token.
"""

from __future__ import annotations

import logging
import math
import mmap
from collections.abc import Sequence

import torch

from ollamapy.engine.config import ModelConfig

log = logging.getLogger(__name__)


def kv_cache_dtype(kind: str, dtype: torch.dtype) -> torch.dtype:
    """OLLAMA_KV_CACHE_TYPE → the cache's dtype for a model whose residual stream is `dtype`:
    "f16" 16 bits (float16, or the model's own type when it is 16 bits already), "f32" the
    model's own. Quantized caches (q8_0, q4_0) are not implemented: they fall back to f16
    with a warning, as Ollama does where a model cannot take them."""
    kind = kind.strip().lower() or "f16"
    if kind == "f32":
        return dtype
    if kind != "f16":
        log.warning("kv cache type %s is not supported here: using f16", kind)
    return dtype if dtype.itemsize <= 2 else torch.float16


class KVCache:
    parent: KVCache | None = None  # a slot view's cache, and its slot there (`slot`)
    index: int | None = None

    def __init__(self, config: ModelConfig, max_len: int, batch: int = 1,
                 device: torch.device | str | Sequence[torch.device] = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        """device: one for every layer, or each layer's (`Transformer.cache_devices`: its
        layers split between an accelerator and the CPU, engine/placement.py)."""
        shape = (batch, config.n_kv_heads, max_len, config.head_dim)
        devices = [device] * config.n_layers if isinstance(device, str | torch.device) \
            else list(device)
        if len(devices) != config.n_layers:
            raise ValueError(f"{len(devices)} devices for {config.n_layers} layers")
        # zeros, not empty: a masked-out key still meets its value in the matmul (0 · NaN = NaN)
        self._hold([zeros(shape, d, dtype) for d in devices],
                   [zeros(shape, d, dtype) for d in devices])

    def _hold(self, k: list[torch.Tensor], v: list[torch.Tensor]) -> None:
        self.k, self.v = k, v  # per layer: (slots, n_kv_heads, max_len, head_dim)
        self.slots, self.max_len = k[0].shape[0], k[0].shape[2]

    def update(self, layer: int, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, n_kv_heads, T, head_dim) at positions (B, T); return the first
        `length` positions of rows [0, B), (B, n_kv_heads, length, head_dim)."""
        B, dtype = k.shape[0], self.k[layer].dtype
        rows = torch.arange(B, device=k.device)[:, None]  # (B, 1), broadcast against (B, T)
        # indexing (rows, :, positions) selects (B, T, n_kv_heads, head_dim)
        self.k[layer][rows, :, positions] = k.transpose(1, 2).to(dtype)
        self.v[layer][rows, :, positions] = v.transpose(1, 2).to(dtype)
        return self.k[layer][:B, :, :length], self.v[layer][:B, :, :length]

    def check(self, end: int) -> None:
        """Refuse to write past the window (a tensor position past it would fail inside the
        write with a less helpful message, or not at all on some devices)."""
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: position {end} > num_ctx {self.max_len}")

    def slot(self, i: int) -> KVCache:
        """Slot i as a one-sequence cache: views of rows i:i+1, so its writes land here."""
        view = object.__new__(KVCache)
        view._hold([k[i:i + 1] for k in self.k], [v[i:i + 1] for v in self.v])
        view.parent, view.index = self, i
        return view

    def copy(self, src: int, dst: int, length: int) -> None:
        """Slot src's first `length` positions into slot dst (a shared prompt prefix)."""
        for t in self.k + self.v:
            t[dst, :, :length] = t[src, :, :length]

    def swap(self, a: int, b: int, len_a: int, len_b: int) -> None:
        """Exchange slot a's first len_a positions with slot b's first len_b (batch
        compaction, which keeps what a finished sequence left for a later prompt)."""
        for buffers in (self.k, self.v):
            for t in buffers:
                held = t[a, :, :len_a].clone()  # (n_kv_heads, len_a, head_dim)
                t[a, :, :len_b] = t[b, :, :len_b]
                t[b, :, :len_a] = held

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


def zeros(shape: tuple[int, ...], device: torch.device | str, dtype: torch.dtype
          ) -> torch.Tensor:
    """A tensor of zeros; on CPU backed by pages the kernel zero-fills on first touch (a
    private anonymous map: `torch.zeros` would write, and so make resident, every byte)."""
    count = math.prod(shape)
    if torch.device(device).type != "cpu" or count == 0 or not hasattr(mmap, "MAP_PRIVATE"):
        return torch.zeros(shape, device=device, dtype=dtype)  # a GPU, or Windows
    pages = mmap.mmap(-1, count * dtype.itemsize, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    # the tensor holds a reference to the map: it is unmapped when the last view goes
    return torch.frombuffer(pages, dtype=dtype, count=count).view(shape)
