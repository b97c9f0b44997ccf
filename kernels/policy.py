"""Which kernel each weight gets, and the functions the engine calls to build the layers.

The policy (DEFAULT_POLICY), chosen by measurement on this 2-core AVX-512 box, torch 2.13,
2 threads (`python -m ollamapy_kernels.bench_linear [--types]`; logits over a 317–327 token
English text and 4 chat prompts, against the float32 reference engine):

    Q4_0, Q4_1, Q4_K            int4 g32, repacked code for code (lossless but for the bf16
                                rounding of scale and zero: weight error 1.9–2.0e-3, the
                                same order as rounding the weights to bf16, 1.3–1.7e-3)
    every other quantized type  int8, one scale per row (weight error 0.8–1.9e-2; IQ4_NL,
                                IQ4_XS and MXFP4 too, by the same reasoning, unmeasured: no
                                model at hand stores them)
    F16, BF16, F32              bf16 (the file chose precision; `Policy(default="int8")`
                                trades it for 2x speed)
    tied output head            int8 from the embedding's bytes

Why int8 and not int4 for 5/6/8-bit types: re-quantizing them to int4 g32 costs 8–9% weight
error; on gemma3-270m, Q5_0 → int4 alone gives a mean KL divergence of 1.1e-1 (top-1
agreement 0.78), against 1.4e-3 (0.97) for Q5_0 → int8; int8 everywhere (body and head) gives
4.3e-3 (0.95). For scale, the whole engine in bf16 costs 0.9–1.0e-3 on both models. int8 is
still 2x faster than bf16 and within 1.5x of int4:

    µs per call, M=1 (M=4)   fp32          bf16          int8         int4
    3072x576  (ffn w13)      433 (584)     133 (131)      67 (71)      45 (60)
    576x1536  (ffn w2)       181 (279)      81 (78)       39 (41)      26 (36)
    49152x576 (head)        7096 (12311)  1812 (1842)    860 (943)    528 (778)

(the best of three runs on a box shared with other work; the head's int4/int8 reach 33 GB/s,
the DRAM peak)

Why an int8 head and not int4: the head is re-quantized from Q8_0 either way; int4 gives 9%
weight error and, on SmolLM2-135M, a KL divergence of 6.2e-2 (top-1 0.80) and different
greedy text on 4 of 4 prompts; int8 gives 1.7e-3 (top-1 0.985) and the same greedy text as a
bf16 head (3 of 4 prompts identical to the fp32 engine over 24 tokens; the fourth diverges at
token 10 with a bf16 head too: bf16 activations, not the head). int8 halves the bf16 head's
bytes (gemma3: 168 MB instead of 335 MB) and time. Greedy text is a fragile measure: on
gemma3-270m (plain prompts, many near-ties) it matched the fp32 engine on 3 of 4 prompts with
everything bf16 and on 1 of 4 with this policy (diverging at tokens 1, 1 and 13), while the
top-1 choice at every prompt position stayed identical (1.000).

The kernels want bfloat16 activations (float32 ones run scalar code 20–40x slower); every
layer casts its input to bf16 and its output back, so callers may pass any dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from torch import nn

from .dense_linear import DenseLinear, DenseLinearReference
from .gguf_rows import rows_from_gguf
from .int4_linear import Int4Linear, Int4LinearReference
from .int8_linear import Int8Linear, Int8LinearReference
from .requantize import Target, rows_from_dense
from .rows import Int4Rows, Int8Rows, QuantRows


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

    def target(self, type_name: str) -> Target:
        return self.by_type.get(type_name, self.default)


DEFAULT_POLICY = Policy()


def _layers(rows: QuantRows, device: torch.device | str) -> tuple[type, type]:
    """→ (fast layer, its reference) for rows on device."""
    kind = torch.device(device).type
    if isinstance(rows, Int4Rows) and kind in ("cpu", "cuda"):
        return Int4Linear, Int4LinearReference
    if isinstance(rows, Int8Rows) and kind == "cpu":
        return Int8Linear, Int8LinearReference
    return DenseLinear, DenseLinearReference


def pack(rows: QuantRows, *, bias: torch.Tensor | None = None,
         device: torch.device | str = "cpu") -> nn.Module:
    """Rows → the fastest layer for them on `device`: int4 codes → `Int4Linear` (CPU and
    CUDA), int8 codes → `Int8Linear` (CPU), anything else → `DenseLinear` (bf16)."""
    fast, _ = _layers(rows, device)
    return fast(rows, bias, device)


def pack_reference(rows: QuantRows, *, bias: torch.Tensor | None = None,
                   device: torch.device | str = "cpu") -> nn.Module:
    """The plain-torch twin of `pack(rows, ...)`: the same weight as the kernel sees it,
    multiplied in float32."""
    _, reference = _layers(rows, device)
    return reference(rows, bias, device)


def gguf_rows(raw: torch.Tensor, type_name: str, shape: tuple[int, int],
              policy: Policy = DEFAULT_POLICY) -> QuantRows:
    """The rows `policy` wants for a stored weight, before fusing or permuting."""
    return rows_from_gguf(raw, type_name, shape, policy.target(type_name))


def quantize_linear(raw: torch.Tensor, type_name: str, shape: tuple[int, int], *,
                    bias: torch.Tensor | None = None, device: torch.device | str = "cpu",
                    policy: Policy = DEFAULT_POLICY) -> nn.Module:
    """A GGUF weight's bytes (raw (nbytes,) uint8, `shape` = (N, K)) → a layer with
    forward(x) = x @ W.T (+ bias), W kept in the form `policy` chooses for its type."""
    return pack(gguf_rows(raw, type_name, shape, policy), bias=bias, device=device)


def quantize_head(raw: torch.Tensor, type_name: str, shape: tuple[int, int], *,
                  device: torch.device | str = "cpu",
                  policy: Policy = DEFAULT_POLICY) -> nn.Module:
    """The output head of a model that ties it to its token embedding: a quantized copy of
    the embedding's bytes, in `policy.head` form (the embedding keeps its own table)."""
    return pack(rows_from_gguf(raw, type_name, shape, policy.head), device=device)


def from_dense(weight: torch.Tensor, target: Target, *, bias: torch.Tensor | None = None,
               device: torch.device | str = "cpu") -> nn.Module:
    """An (N, K) float weight (safetensors, a dequantized embedding) → a `target` layer."""
    return pack(rows_from_dense(weight, target), bias=bias, device=device)
