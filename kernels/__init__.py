"""Accelerated twins of `ollamapy.engine` ops (installed as `ollamapy_kernels`).

Every kernel here has a pure-PyTorch reference with the same signature and a test comparing
the two. The reference path always works on CPU; nothing here is required.

Linear layers that keep GGUF weights quantized (same contract as `engine.ops.Linear`:
forward(x) = x @ W.T (+ bias), any input dtype in, the same dtype out):

    layer = quantize_linear(gguf.raw(name), info.type_name, info.shape)     # one weight
    head = quantize_head(gguf.raw("token_embd.weight"), "Q8_0", shape)     # a tied head

Fusing and permuting happen on the rows, before packing:

    q, k, v = (gguf_rows(gguf.raw(n), ...) for n in names)
    q = q.permute_rows(unpermute_qk(torch.arange(n_q), n_heads))   # llama's q/k row order
    wqkv = pack(concat_rows([q, k, v]))   # parts of mixed forms: convert_rows them first

See `policy` for which form each GGUF type gets and why, `rows` for the forms, and
`python -m ollamapy_kernels.bench_linear` for the measurements. Every fast layer has `nbytes` (its
resident bytes) and `dequantize()` (the (N, K) float32 weight it really multiplies by).

Two rules for the caller: build a layer on its final device (a packed layout belongs to one
device: repack the rows to move it), and do not cast it with `module.to(dtype)` (its scales
must stay bfloat16; it accepts and returns any activation dtype anyway).
"""

from .dense_linear import DenseLinear, DenseLinearReference
from .embedding import GGUFEmbedding, GGUFEmbeddingReference
from .gguf_rows import rows_from_gguf
from .int4_linear import Int4Linear, Int4LinearReference
from .int8_linear import Int8Linear, Int8LinearReference
from .policy import (
    DEFAULT_POLICY,
    Policy,
    from_dense,
    gguf_rows,
    pack,
    pack_reference,
    quantize_head,
    quantize_linear,
)
from .requantize import Target, convert_rows, rows_from_dense
from .rows import DenseRows, Int4Rows, Int8Rows, QuantRows, concat_rows

__all__ = [
    "DEFAULT_POLICY", "DenseLinear", "DenseLinearReference", "DenseRows", "GGUFEmbedding",
    "GGUFEmbeddingReference", "Int4Linear", "Int4LinearReference", "Int4Rows", "Int8Linear",
    "Int8LinearReference", "Int8Rows", "Policy", "QuantRows", "Target", "concat_rows",
    "convert_rows", "from_dense", "gguf_rows", "pack", "pack_reference", "quantize_head",
    "quantize_linear", "rows_from_dense", "rows_from_gguf",
]
