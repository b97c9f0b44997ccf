"""The one door from the engine to `kernels/` (the `ollamapy_kernels` package).

Everything the fast path uses from the accelerated kernels is named here, so the rest of
the package depends on this module's names, not on the kernels' layout. The reference path
never imports it.
"""

from __future__ import annotations

from ollamapy_kernels.embedding import GGUFEmbedding
from ollamapy_kernels.experts import Int8Experts
from ollamapy_kernels.policy import (
    DEFAULT_POLICY,
    Policy,
    from_dense,
    gguf_rows,
    pack,
    quantize_head,
)
from ollamapy_kernels.requantize import convert_rows
from ollamapy_kernels.rows import QuantRows, concat_rows

__all__ = ["DEFAULT_POLICY", "GGUFEmbedding", "Int8Experts", "Policy", "QuantRows",
           "concat_rows", "convert_rows", "from_dense", "gguf_rows", "pack", "quantize_head"]
