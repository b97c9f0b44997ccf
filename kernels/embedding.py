"""A token embedding that stays in its GGUF bytes: the rows a batch asks for are gathered and
dequantized on each call.

A row of a ggml tensor is a whole number of blocks, so row i is bytes [i * row_bytes,
(i + 1) * row_bytes) and dequantizes alone, bit-exactly (`ollamapy.loading.quants`). For a
tied model the table then costs its stored size (gemma3-270m's Q8_0 262144 x 640: 178 MB,
against 671 MB as float32), while the output head keeps its own quantized copy
(`policy.quantize_head`). `GGUFEmbeddingReference` takes the same arguments and looks the ids
up in the fully dequantized table.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ollamapy.loading.ggml_types import GGML_TYPE_IDS, GGML_TYPES
from ollamapy.loading.quants import DEQUANTIZE, dequantize


class GGUFEmbedding(nn.Module):
    """ids (...) → (..., dim) vectors of `dtype`, dequantized from the stored rows."""

    def __init__(self, raw: torch.Tensor, type_name: str, shape: tuple[int, int],
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if type_name not in DEQUANTIZE:
            raise NotImplementedError(f"cannot dequantize {type_name}")
        t = GGML_TYPES[GGML_TYPE_IDS[type_name]]
        self.num_embeddings, self.embedding_dim = shape
        self.type_name, self.dtype = type_name, dtype
        row_bytes = self.embedding_dim // t.block_size * t.type_size
        self.register_buffer("rows", raw.view(self.num_embeddings, row_bytes))

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, {self.type_name} rows"

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        picked = self.rows[ids.reshape(-1)]  # (n, row_bytes)
        vectors = dequantize(picked.reshape(-1), self.type_name,
                             (picked.shape[0], self.embedding_dim))
        return vectors.view(*ids.shape, self.embedding_dim).to(self.dtype)


class GGUFEmbeddingReference(nn.Module):
    def __init__(self, raw: torch.Tensor, type_name: str, shape: tuple[int, int],
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.register_buffer("weight", dequantize(raw, type_name, shape).to(dtype))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)
