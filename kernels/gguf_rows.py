"""GGUF tensor bytes → the row forms of `rows.py`, losslessly where the codes fit.

Q4_0, Q4_1 and Q4_K are 4-bit codes with one affine per 32 weights (a K-quant's sub-block),
which is exactly torch's int4 group-32 form, w = (q - 8) * scale + zero:

    Q4_0  w = d * (q - 8)           scale = d          zero = 0
    Q4_1  w = d * q + m             scale = d          zero = m + 8d
    Q4_K  w = d*sc_j * q - dmin*m_j scale = d * sc_j   zero = 8 d sc_j - dmin m_j

so they are repacked code for code (the codes are never touched; only the scale and zero are
later rounded to bfloat16 by the kernel). Every other type is dequantized bit-exactly
(`ollamapy.loading.quants`) and quantized again to the requested target, a slice of rows at a
time so a 262144-row embedding never exists in float32 all at once.
"""

from __future__ import annotations

import torch

from ollamapy.loading.ggml_types import GGML_TYPE_IDS, GGML_TYPES
from ollamapy.loading.quants import Q4_GROUPS, dequantize, q4_groups

from .requantize import Target, rows_from_dense
from .rows import GROUP, Int4Rows, QuantRows, concat_rows

LOSSLESS_INT4 = frozenset(Q4_GROUPS)  # the types whose codes are int4 groups of 32
_CHUNK_ROWS = 8192  # bounds the float32 temporaries of a requantization to ~20 MB


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
    t = GGML_TYPES[GGML_TYPE_IDS[type_name]]
    row_bytes = k // t.block_size * t.type_size
    by_row = raw.view(n, row_bytes)
    parts = [rows_from_dense(dequantize(by_row[i:i + _CHUNK_ROWS].reshape(-1), type_name,
                                        (min(_CHUNK_ROWS, n - i), k)), target)
             for i in range(0, n, _CHUNK_ROWS)]
    return parts[0] if len(parts) == 1 else concat_rows(parts)
