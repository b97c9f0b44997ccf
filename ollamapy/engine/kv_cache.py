"""The preallocated key/value cache: run state, passed into the model's forward.

One (B, n_kv_heads, max_len, head_dim) buffer per layer for keys and one for values, allocated
once for the whole context window (num_ctx). `update` writes the new positions in place and
returns a view of everything cached so far, so a decode step never reallocates.
"""

from __future__ import annotations

import torch

from ollamapy.engine.config import ModelConfig


class KVCache:
    def __init__(self, config: ModelConfig, max_len: int, batch: int = 1,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        shape = (batch, config.n_kv_heads, max_len, config.head_dim)
        self.max_len = max_len
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.length = 0  # positions [0, length) hold valid entries

    def update(self, layer: int, start_pos: int, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, n_kv_heads, T, head_dim) at start_pos; return (B, n_kv_heads, S, hd)."""
        end = start_pos + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: position {end} > num_ctx {self.max_len}")
        self.k[layer][:, :, start_pos:end] = k
        self.v[layer][:, :, start_pos:end] = v
        if layer == len(self.k) - 1:
            self.length = end
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def truncate(self, length: int) -> None:
        """Forget positions >= length (their values are overwritten by later writes)."""
        self.length = min(self.length, length)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)
