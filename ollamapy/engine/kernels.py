"""The one door from the engine to `kernels/` (the `ollamapy_kernels` package).

Everything the fast path uses from the accelerated kernels is named here, so the rest of
the package depends on this module's names, not on the kernels' layout. The reference path
never imports it. The kernels take rows (`kernels/rows.py`); the loader's
`loading/gguf_rows.py` turns a file's bytes into them (two GGUF block layouts, Q4_K and Q6_K,
are read by a kernel as stored: `BlockRows`, with the loader's decoder beside them).
"""

from __future__ import annotations

from ollamapy_kernels.embedding import QuantizedEmbedding
from ollamapy_kernels.experts import Int8Experts
from ollamapy_kernels.policy import DEFAULT_POLICY, Policy, from_dense, pack, span_attention
from ollamapy_kernels.requantize import Target, convert_rows, rows_from_dense
from ollamapy_kernels.rows import (
    GROUP,
    BlockRows,
    Int4Rows,
    Int8Rows,
    QuantRows,
    RowDecoder,
    columns,
    concat_rows,
    form,
)

__all__ = ["DEFAULT_POLICY", "GROUP", "BlockRows", "Int4Rows", "Int8Experts", "Int8Rows", "Policy",
           "QuantRows", "QuantizedEmbedding", "RowDecoder", "Target", "columns", "concat_rows",
           "convert_rows", "span_attention", "form", "from_dense", "pack", "rows_from_dense"]
