"""Which kernel each weight gets, and the functions that build the layers from rows.

The policy (DEFAULT_POLICY) maps a GGUF type name to a target form; the loader turns the bytes
into rows of that form (`ollamapy/loading/gguf_rows.py`) and `pack`s them here. It was chosen by
measurement (`python benchmarks/bench_linear.py [--types]`; the figures and the reasons are in
kernels/README.md, "The policy, measured"):

    Q4_K, Q6_K                  their own blocks, read by `kquant_vnni` (x86 CPU with AVX-512
                                VNNI, K a multiple of 256: `Policy.keeps_blocks`); elsewhere:
    Q4_0, Q4_1, Q4_K            int4 g32, repacked code for code (lossless but for the bf16
                                rounding of scale and zero); the layer is `int4_layer(device)`
    every other quantized type  int8, one scale per row (IQ4_NL, IQ4_XS and MXFP4 too: their
                                4-bit codes are not affine, so int4 would requantize them)
    F16, BF16, F32              bf16 (the file chose precision; `Policy(default="int8")`
                                trades it for speed)
    tied output head            the embedding's own blocks where they are kept (the table
                                shared), else int8 from the embedding's bytes

5/6/8-bit types are not squeezed into int4 groups: the re-quantization error shows in the
logits, while int8 keeps most of int4's speed. torch's kernels want bfloat16 activations
(float32 ones run scalar code), the VNNI kernel quantizes them to int8; every layer casts its
input as its kernel needs and its output back, so callers may pass any dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from torch import nn

from . import native
from .attention import SpanAttention
from .dense_linear import DenseLinear, DenseLinearReference
from .int4_linear import Int4Linear, Int4LinearReference
from .int4_vnni import Int4VnniLinear
from .int8_linear import Int8Linear, Int8LinearReference
from .int8_vnni import Int8VnniLinear
from .kquant_vnni import KQuantVnniLinear, takes
from .reference_linear import LinearReference
from .requantize import Target, convert_rows, rows_from_dense
from .rows import BlockRows, Int4Rows, Int8Rows, QuantRows


def _frozen(d: dict[str, Target]) -> Mapping[str, Target]:
    return MappingProxyType(d)


@dataclass(frozen=True, slots=True)
class Policy:
    """GGUF type name → target for linear weights; `default` for types not listed (float
    types included); `head` for the output head made from a tied embedding."""

    by_type: Mapping[str, Target] = field(default_factory=lambda: _frozen({
        "Q4_0": "int4", "Q4_1": "int4", "Q4_K": "int4",
        "Q5_0": "int8", "Q5_1": "int8", "Q5_K": "int8", "Q6_K": "int8", "Q8_0": "int8",
        "Q2_K": "int8", "Q3_K": "int8",  # 16-weight sub-blocks: not int4 groups of 32
        # 4-bit codes, but of non-uniform levels (IQ4) or E2M1 floats (MXFP4): not affine
        "IQ4_NL": "int8", "IQ4_XS": "int8", "MXFP4": "int8",
    }))
    default: Target = "bf16"
    head: Target = "int8"
    # types kept in the file's own blocks where the device has a kernel for them
    blocks: frozenset[str] = frozenset({"Q4_K", "Q6_K"})

    def target(self, type_name: str) -> Target:
        return self.by_type.get(type_name, self.default)

    def keeps_blocks(self, type_name: str, k: int, device: torch.device | str) -> bool:
        """Whether a weight of this type and K inputs stays in its blocks on `device`."""
        return type_name in self.blocks and takes(type_name, k, device)


DEFAULT_POLICY = Policy()


def int4_layer(device: torch.device | str) -> type[nn.Module]:
    """The layer int4 rows get on `device`: `Int4VnniLinear` on an x86 CPU with AVX-512 VNNI
    (its library built: `native.load`), torch's kernels in `Int4Linear` on other CPUs and
    CUDA, else bf16."""
    kind = torch.device(device).type
    if kind == "cpu" and native.load():
        return Int4VnniLinear
    return Int4Linear if kind in ("cpu", "cuda") else DenseLinear


def int8_layer(device: torch.device | str) -> type[nn.Module]:
    """The layer int8 rows get on `device`: `Int8VnniLinear` on an x86 CPU with AVX-512 VNNI,
    torch's kernel in `Int8Linear` on other CPUs, else bf16."""
    kind = torch.device(device).type
    if kind == "cpu" and native.load():
        return Int8VnniLinear
    return Int8Linear if kind == "cpu" else DenseLinear


def span_attention(device: torch.device | str, n_heads: int, n_kv_heads: int,
                   head_dim: int) -> nn.Module | None:
    """The attention kernel on `device`, one query at a time: `SpanAttention` on an x86 CPU
    with AVX-512 VNNI for heads it takes, else None (torch's fused attention)."""
    if torch.device(device).type == "cpu" and native.load() and \
            SpanAttention.fits(n_heads, n_kv_heads, head_dim):
        return SpanAttention()
    return None


def _layers(rows: QuantRows, device: torch.device | str) -> tuple[type, type]:
    """→ (fast layer, its reference) for rows on device."""
    kind = torch.device(device).type
    if isinstance(rows, BlockRows):
        return KQuantVnniLinear, LinearReference
    if isinstance(rows, Int4Rows) and kind in ("cpu", "cuda"):
        return int4_layer(device), Int4LinearReference
    if isinstance(rows, Int8Rows) and kind == "cpu":
        return int8_layer(device), Int8LinearReference
    return DenseLinear, DenseLinearReference


def pack(rows: QuantRows, *, bias: torch.Tensor | None = None,
         device: torch.device | str = "cpu") -> nn.Module:
    """Rows → the fastest layer for them on `device`: blocks → `KQuantVnniLinear` (int8 where
    it cannot run), int4 codes → `int4_layer(device)`, int8 codes → `int8_layer(device)`,
    anything else → `DenseLinear` (bf16)."""
    if isinstance(rows, BlockRows) and not takes(rows.kind, rows.k, device):
        rows = convert_rows(rows, "int8")
    fast, _ = _layers(rows, device)
    return fast(rows, bias, device)


def pack_reference(rows: QuantRows, *, bias: torch.Tensor | None = None,
                   device: torch.device | str = "cpu") -> nn.Module:
    """The plain-torch twin of `pack(rows, ...)`: the same weight as the kernel sees it,
    multiplied in float32."""
    _, reference = _layers(rows, device)
    return reference(rows, bias, device)


def from_dense(weight: torch.Tensor, target: Target, *, bias: torch.Tensor | None = None,
               device: torch.device | str = "cpu") -> nn.Module:
    """An (N, K) float weight (safetensors, a dequantized embedding) → a `target` layer."""
    return pack(rows_from_dense(weight, target), bias=bias, device=device)
