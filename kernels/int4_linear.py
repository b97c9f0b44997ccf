"""A linear layer whose weight stays 4-bit: torch's int4 "tinygemm" kernels, group size 32.

On an x86 CPU with AVX-512 VNNI the policy builds `int4_vnni.Int4VnniLinear` instead (the
same rows, multiplied as integers, ~1.4x this kernel's rate); this layer serves CUDA and the
other CPUs.

The kernel computes y = x @ W.T with W[n, k] = (q[n, k] - 8) * scale[g, n] + zero[g, n],
g = k // 32, from a packed copy of the codes and a bfloat16 (K / 32, N, 2) table of
(scale, zero) pairs. Verified here (tests/kernels/test_int4_linear.py) rather than trusted:

* CPU (`_convert_weight_to_int4pack_for_cpu` / `_weight_int4pack_mm_for_cpu`): the packing
  takes int32 codes (N, K) in 0..15 and returns uint8 (N, K / 2) in a layout that depends on
  the CPU's vector width (AVX-512 interleaves 64-row blocks); `innerKTiles` is ignored. N
  must be a multiple of 16, K of the group size. Scales must have the activations' dtype,
  and only bfloat16 activations take the AVX-512/AVX2 path: fp32 ones run a scalar loop
  (its cost: kernels/README.md), so the input is cast to bf16 here and the output cast back.
  The weight is dequantized and accumulated in fp32; the output is rounded to bf16.
* CUDA (`_convert_weight_to_int4pack` / `_weight_int4pack_mm`): the packing takes uint8
  (N, K / 2) with two codes per byte, the even k in the *high* nibble, and returns an int32
  tensor-core layout (N / 8, K / (16 innerKTiles), 32, innerKTiles / 2); K / 16 must be a
  multiple of innerKTiles (8, 4 or 2: the largest that fits is taken). The weight is
  dequantized in bf16 arithmetic.

Rows are padded to a multiple of 16 with all-zero groups and the output sliced back, so any
N works. A packed layout belongs to its device: to move the layer, pack the rows again.
`Int4LinearReference` takes the same arguments and computes the same product in plain torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .reference_linear import LinearReference
from .rows import GROUP, Int4Rows

ROW_MULTIPLE = 16  # the CPU kernel's N granularity (CUDA needs 8)
_PACK_ROWS = 4096  # CPU packing in slices (a multiple of every CPU row block: 16/32/64)


def _pad_rows(rows: Int4Rows) -> Int4Rows:
    n, _ = rows.shape
    pad = -n % ROW_MULTIPLE
    if not pad:
        return rows
    return Int4Rows(F.pad(rows.q, (0, 0, 0, pad), value=8), F.pad(rows.scales, (0, 0, 0, pad)),
                    F.pad(rows.zeros, (0, 0, 0, pad)))


def _pack_cpu(q: torch.Tensor) -> torch.Tensor:
    """(N, K) uint8 codes → the CPU kernel's (N, K / 2) uint8, a slice of rows at a time
    (the layout is made of independent row blocks, so slices concatenate)."""
    return torch.cat([torch.ops.aten._convert_weight_to_int4pack_for_cpu(
        q[i:i + _PACK_ROWS].to(torch.int32), 1) for i in range(0, q.shape[0], _PACK_ROWS)])


def _inner_k_tiles(k: int) -> int:
    return next(t for t in (8, 4, 2) if (k // 16) % t == 0)


def _pack_cuda(q: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(N, K) uint8 codes → the CUDA kernel's int32 tensor-core layout."""
    q = q.to(device)
    pairs = (q[:, 0::2] << 4) | q[:, 1::2]  # (N, K / 2): the even k in the high nibble
    return torch.ops.aten._convert_weight_to_int4pack(pairs.contiguous(),
                                                      _inner_k_tiles(q.shape[1]))


def scales_and_zeros(rows: Int4Rows) -> torch.Tensor:
    """(N, K / 32) scales and zeros → the kernels' (K / 32, N, 2) bfloat16 table."""
    return torch.stack([rows.scales, rows.zeros], dim=-1).transpose(0, 1) \
        .to(torch.bfloat16).contiguous()


class Int4Linear(nn.Module):
    """y = x @ W.T (+ bias) with W kept as int4 codes; the kernel is chosen by `device`."""

    def __init__(self, rows: Int4Rows, bias: torch.Tensor | None = None,
                 device: torch.device | str = "cpu") -> None:
        super().__init__()
        device = torch.device(device)
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"no int4 kernel for {device.type}: use DenseLinear")
        self.out_features, self.in_features = rows.shape
        if self.in_features % GROUP:
            raise ValueError(f"K = {self.in_features} is not a multiple of {GROUP}")
        padded = _pad_rows(rows)
        self.on_cuda = device.type == "cuda"
        packed = _pack_cuda(padded.q, device) if self.on_cuda else _pack_cpu(padded.q)
        self.register_buffer("packed", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros(padded).to(device))
        self.register_buffer("bias", None if bias is None else bias.float().to(device))

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.buffers())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"group={GROUP}, {'cuda' if self.on_cuda else 'cpu'} layout"

    def _matmul(self, a: torch.Tensor) -> torch.Tensor:
        """a (M, K) bf16 → (M, N padded) bf16."""
        if self.on_cuda:
            return torch.ops.aten._weight_int4pack_mm(a, self.packed, GROUP,
                                                      self.scales_and_zeros)
        return torch.ops.aten._weight_int4pack_mm_for_cpu(a, self.packed, GROUP,
                                                          self.scales_and_zeros)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()  # (M, K)
        y = self._matmul(a)[:, :self.out_features]  # (M, N)
        y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def dequantize(self) -> torch.Tensor:
        """The weight the kernel multiplies by, (N, K) float32, read back through the kernel
        itself (so it is independent of the packed layout): unit scales and zero zeros over
        an identity input give q - 8 exactly; the real scale and zero are then applied."""
        codes = _unpack_codes(self)  # (N, K) float32, q - 8
        sz = self.scales_and_zeros[:, :self.out_features].float()  # (G, N, 2)
        scale = sz[..., 0].T.repeat_interleave(GROUP, dim=1)  # (N, K)
        zero = sz[..., 1].T.repeat_interleave(GROUP, dim=1)
        return codes * scale + zero


def _unpack_codes(layer: Int4Linear) -> torch.Tensor:
    k, n_padded = layer.in_features, layer.scales_and_zeros.shape[1]
    device = layer.packed.device
    unit = torch.zeros(k // GROUP, n_padded, 2, dtype=torch.bfloat16, device=device)
    unit[..., 0] = 1
    out = torch.empty(layer.out_features, k, device=device)
    for i in range(0, k, 256):  # identity rows in slices: (256, K) @ W.T = W[:, i:i+256].T
        eye = torch.eye(k, device=device, dtype=torch.bfloat16)[i:i + 256].contiguous()
        if layer.on_cuda:
            y = torch.ops.aten._weight_int4pack_mm(eye, layer.packed, GROUP, unit)
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(eye, layer.packed, GROUP, unit)
        out[:, i:i + 256] = y[:, :layer.out_features].T.float()
    return out


class Int4LinearReference(LinearReference):
    """The same layer in plain torch: the dequantized weight (scales and zeros rounded to
    bf16, as the kernel sees them) and `F.linear` in float32."""
