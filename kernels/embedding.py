"""A token embedding that stays in its stored rows: the rows a batch asks for are gathered and
decoded on each call.

The table is `rows`, (num_embeddings, row_bytes) uint8, one encoded row per token, and
`decode` turns any n of them, (n, row_bytes) uint8, into (n, embedding_dim) float32. The
encoding is the caller's: the loader passes a GGUF tensor's bytes with ggml's dequantization
(`ollamapy/loading/gguf_rows.py`, `gguf_embedding`), where a row is a whole number of blocks and
decodes alone, bit-exactly. For a tied model the table then costs its stored size
(gemma3-270m's Q8_0 262144 x 640: 178 MB, against 671 MB as float32), while the output head
keeps its own quantized copy (a Q6_K table is read by the head itself: `kquant_vnni`).
`QuantizedEmbeddingReference` takes the same arguments and looks the ids up in the fully
decoded table.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .rows import RowDecoder


class QuantizedEmbedding(nn.Module):
    """ids (...) → (..., dim) vectors of `dtype`, decoded from the stored rows."""

    def __init__(self, rows: torch.Tensor, embedding_dim: int, decode: RowDecoder,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = rows.shape[0], embedding_dim
        self.decode, self.dtype = decode, dtype
        self.register_buffer("rows", rows)

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, {self.rows.shape[1]} bytes per row"

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        vectors = self.decode(self.rows[ids.reshape(-1)])  # (n, row_bytes) → (n, dim)
        return vectors.view(*ids.shape, self.embedding_dim).to(self.dtype)


class QuantizedEmbeddingReference(nn.Module):
    def __init__(self, rows: torch.Tensor, embedding_dim: int, decode: RowDecoder,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.register_buffer("weight", decode(rows).to(dtype))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)
