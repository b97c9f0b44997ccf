"""Shared builders for the kernel tests: random GGUF blocks and the error bounds."""

from __future__ import annotations

import torch

from ollamapy.loading.ggml_types import GGML_TYPE_IDS, GGML_TYPES

# byte offsets of the fp16 scale fields inside one block (ggml-common.h)
FP16_FIELDS = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
               "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
               "IQ4_NL": [0], "IQ4_XS": [0], "MXFP4": []}
BF16_EPS = 2.0**-8  # bf16 keeps 8 significant bits: rounding to nearest is within 2^-8 relative


def random_gguf(type_name: str, shape: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Random bytes of an (N, K) weight of a block type, with small, finite fp16 scales
    (exponent ≤ 2^-3, like real weights; MXFP4: E8M0 scales 2^-13..2^-7, largest weight
    0.09) → (nbytes,) uint8. Float types get N(0, 0.02)."""
    g = torch.Generator().manual_seed(seed)
    n, k = shape
    if type_name in ("F32", "F16", "BF16"):
        w = torch.randn(n, k, generator=g) * 0.02
        dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[type_name]
        return w.to(dtype).view(torch.uint8).reshape(-1)
    t = GGML_TYPES[GGML_TYPE_IDS[type_name]]
    blocks = torch.randint(0, 256, (n * k // t.block_size, t.type_size), generator=g,
                           dtype=torch.uint8)
    for offset in FP16_FIELDS[type_name]:
        scale = (torch.rand(blocks.shape[0], generator=g) * 0.01).to(torch.float16)
        if type_name in ("Q4_K", "Q5_K", "Q2_K") and offset != FP16_FIELDS[type_name][0]:
            scale = scale / 4  # dmin, a fraction of d like the quantizers make
        if type_name in ("Q4_1", "Q5_1") and offset == 2:
            scale = -scale * 8  # m, the block minimum: negative
        blocks[:, offset:offset + 2] = scale.view(torch.uint8).view(-1, 2)
    if type_name == "MXFP4":  # byte 0: e, the half scale 2^(e - 128)
        blocks[:, 0] = torch.randint(115, 122, (blocks.shape[0],), generator=g)
    return blocks.reshape(-1)


def linear_bound(x: torch.Tensor, weight: torch.Tensor, y_ref: torch.Tensor,
                 input_rounded: bool) -> torch.Tensor:
    """Elementwise bound on |kernel(x) - x @ W.T| for a kernel that rounds its output to
    bf16 (2^-8 |y|), accumulates in fp32 in another order (2^-12 of sum |x||w|, far above
    K * 2^-24 for these K, and covering the output rounding of that difference) and, when fed
    fp32, first rounds x to bf16 (2^-8 of sum |x||w|)."""
    mag = x.float().abs() @ weight.abs().T  # (M, N)
    slack = 2.0**-12 + (0.0 if input_rounded else BF16_EPS)
    return BF16_EPS * y_ref.abs() + slack * mag


def int8_activation_bound(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Elementwise bound on |kernel(x) - x @ W.T| for a kernel that keeps each group of 32
    activations as two int8 steps, d (a + b / 256) with d = max|x_group| / 127 (each x within
    d / 512, or d / 256 where b saturates at 127) and accumulates in fp32 (2^-12 of
    sum |x||w|, as in `linear_bound`); its output is fp32."""
    m, k = x.shape
    pad = -k % 32
    xg = torch.nn.functional.pad(x.float(), (0, pad)).view(m, -1, 32)  # (M, G, 32)
    x_err = xg.abs().amax(-1) / 127 / 256  # (M, G): each x's error is within d / 256
    wg = torch.nn.functional.pad(weight.abs(), (0, pad)).view(weight.shape[0], -1, 32).sum(-1)
    return x_err @ wg.T + 2.0**-12 * (x.float().abs() @ weight.abs().T)


def layer_bound(layer: torch.nn.Module, x: torch.Tensor, weight: torch.Tensor,
                y_ref: torch.Tensor) -> torch.Tensor:
    """The bound that applies to `layer` on fp32 input x: `int8_activation_bound` for the
    VNNI layers, `linear_bound` for every bf16-rounding kernel."""
    from ollamapy_kernels.int4_vnni import Int4VnniLinear
    from ollamapy_kernels.int8_vnni import Int8VnniLinear
    from ollamapy_kernels.kquant_vnni import KQuantVnniLinear

    if isinstance(layer, Int4VnniLinear | Int8VnniLinear | KQuantVnniLinear):
        return int8_activation_bound(x, weight)
    return linear_bound(x, weight, y_ref, False)
