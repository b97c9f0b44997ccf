"""GGUF tensor bytes → the kernels' forms: the row forms of `kernels/rows.py` (losslessly
where the codes fit), the quantized layers the policy picks, and the token embedding.

Q4_0, Q4_1 and Q4_K are 4-bit codes with one affine per 32 weights (a K-quant's sub-block),
which is exactly torch's int4 group-32 form, w = (q - 8) * scale + zero:

    Q4_0  w = d * (q - 8)           scale = d          zero = 0
    Q4_1  w = d * q + m             scale = d          zero = m + 8d
    Q4_K  w = d*sc_j * q - dmin*m_j scale = d * sc_j   zero = 8 d sc_j - dmin m_j

so they are repacked code for code (the codes are never touched; only the scale and zero are
later rounded to bfloat16 by the kernel). Where a kernel reads a type's blocks as stored
(Q4_K and Q6_K on an x86 CPU with AVX-512 VNNI: `Policy.keeps_blocks`) the bytes are kept as
they are (`BlockRows`, with this file format's decoder for the reference twin and for
conversions). Every other type is dequantized bit-exactly
(`quants.py`) and quantized again to the requested target, a slice of rows at a time so a
262144-row embedding never exists in float32 all at once.

The kernels know rows, not GGUF: this module is the one place that reads ggml's block types
for them, so `kernels/` imports nothing from `ollamapy`.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ollamapy.engine.kernels import (
    DEFAULT_POLICY,
    GROUP,
    BlockRows,
    Int4Rows,
    Int8Rows,
    Policy,
    QuantizedEmbedding,
    QuantRows,
    RowDecoder,
    Target,
    concat_rows,
    pack,
    rows_from_dense,
)
from ollamapy.loading.ggml_types import GGML_TYPE_IDS, GGML_TYPES
from ollamapy.loading.quants import DEQUANTIZE, Q4_GROUPS, dequantize, q4_groups

LOSSLESS_INT4 = frozenset(Q4_GROUPS)  # the types whose codes are int4 groups of 32
_CHUNK_ROWS = 8192  # bounds the float32 temporaries of a requantization to ~20 MB


def _row_bytes(type_name: str, k: int) -> int:
    """Bytes of one row of K weights: a row of a ggml tensor is a whole number of blocks."""
    t = GGML_TYPES[GGML_TYPE_IDS[type_name]]
    return k // t.block_size * t.type_size


def int4_rows_from_q4(raw: torch.Tensor, type_name: str, shape: tuple[int, int]) -> Int4Rows:
    """Q4_0 / Q4_1 / Q4_K bytes of an (N, K) weight → Int4Rows, code for code."""
    n, k = shape
    q, scale, low = q4_groups(raw, type_name)  # (G, 32), (G, 1), (G, 1), row-major groups
    zero = low + 8.0 * scale  # the value of code 8
    return Int4Rows(q.reshape(n, k), scale.view(n, k // GROUP), zero.view(n, k // GROUP))


def rows_from_gguf(raw: torch.Tensor, type_name: str, shape: tuple[int, int],
                   target: Target) -> QuantRows:
    """raw: an (N, K) weight's bytes as stored, (nbytes,) uint8 → rows. A Q4 type asked for
    int4 is repacked losslessly; anything else goes through float32, in slices of rows."""
    if len(shape) != 2:
        raise ValueError(f"a linear weight is 2-D, got shape {shape}")
    n, k = shape
    if type_name in LOSSLESS_INT4 and target == "int4":
        return int4_rows_from_q4(raw, type_name, (n, k))
    by_row = raw.view(n, _row_bytes(type_name, k))

    def rows(i: int) -> QuantRows:  # rows [i, i + _CHUNK_ROWS)
        return rows_from_dense(dequantize(by_row[i:i + _CHUNK_ROWS].reshape(-1), type_name,
                                          (min(_CHUNK_ROWS, n - i), k)), target)

    first = rows(0)
    if n <= _CHUNK_ROWS:
        return first
    if isinstance(first, Int8Rows):  # a vocabulary-sized head: written in place, never twice
        q = torch.empty(n, k, dtype=torch.int8)
        scales = torch.empty(n, dtype=first.scales.dtype)
        for i in range(0, n, _CHUNK_ROWS):
            part = first if i == 0 else rows(i)
            assert isinstance(part, Int8Rows)
            q[i:i + _CHUNK_ROWS], scales[i:i + _CHUNK_ROWS] = part.q, part.scales
        return Int8Rows(q, scales)
    return concat_rows([first, *(rows(i) for i in range(_CHUNK_ROWS, n, _CHUNK_ROWS))])


def _dequantize_rows(rows: torch.Tensor, type_name: str) -> torch.Tensor:
    """(n, row_bytes) uint8 → (n, K) float32, K from the row's whole blocks."""
    t = GGML_TYPES[GGML_TYPE_IDS[type_name]]
    dim = rows.shape[1] // t.type_size * t.block_size
    return dequantize(rows.reshape(-1), type_name, (rows.shape[0], dim))


def row_decoder(type_name: str) -> RowDecoder:
    """ggml's dequantization of whole rows (of any number of blocks): the decoder an
    embedding's table and kept blocks carry."""
    return functools.partial(_dequantize_rows, type_name=type_name)


def block_rows(raw: torch.Tensor, type_name: str, shape: tuple[int, int]) -> BlockRows:
    """An (N, K) weight's bytes kept as stored: (N, row bytes) rows of blocks, no copy."""
    n, k = shape
    return BlockRows(raw.view(n, _row_bytes(type_name, k)), type_name, k,
                     row_decoder(type_name))


def gguf_rows(raw: torch.Tensor, type_name: str, shape: tuple[int, int],
              policy: Policy = DEFAULT_POLICY, device: torch.device | str | None = None
              ) -> QuantRows:
    """The rows `policy` wants for a stored weight, before fusing or permuting: its own
    blocks where `device` (when given) has a kernel for them, else `policy.target`'s form."""
    if len(shape) == 2 and device is not None and \
            policy.keeps_blocks(type_name, shape[1], device):
        return block_rows(raw, type_name, shape)
    return rows_from_gguf(raw, type_name, shape, policy.target(type_name))


def quantize_linear(raw: torch.Tensor, type_name: str, shape: tuple[int, int], *,
                    bias: torch.Tensor | None = None, device: torch.device | str = "cpu",
                    policy: Policy = DEFAULT_POLICY) -> nn.Module:
    """A GGUF weight's bytes (raw (nbytes,) uint8, `shape` = (N, K)) → a layer with
    forward(x) = x @ W.T (+ bias), W kept in the form `policy` chooses for its type."""
    return pack(gguf_rows(raw, type_name, shape, policy, device), bias=bias, device=device)


def quantize_head(raw: torch.Tensor, type_name: str, shape: tuple[int, int], *,
                  device: torch.device | str = "cpu",
                  policy: Policy = DEFAULT_POLICY) -> nn.Module:
    """The output head of a model that ties it to its token embedding: the embedding's own
    blocks where a kernel reads them (Q6_K: `raw` itself, shared with the embedding's table;
    Q4_K: a copy, its codes reordered), else a quantized copy in `policy.head` form."""
    if policy.keeps_blocks(type_name, shape[1], device):
        return pack(block_rows(raw, type_name, shape), device=device)
    return pack(rows_from_gguf(raw, type_name, shape, policy.head), device=device)




def gguf_embedding(raw: torch.Tensor, type_name: str, shape: tuple[int, int],
                   dtype: torch.dtype = torch.float32) -> QuantizedEmbedding:
    """A token embedding that keeps the table's GGUF bytes (raw (nbytes,) uint8 of a
    (vocab_size, dim) tensor) and dequantizes the rows each call looks up."""
    if type_name not in DEQUANTIZE:
        raise NotImplementedError(f"cannot dequantize {type_name}")
    n, dim = shape
    return QuantizedEmbedding(raw.view(n, _row_bytes(type_name, dim)), dim,
                              row_decoder(type_name), dtype)
