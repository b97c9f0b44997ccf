"""A linear layer that reads GGUF's K-quant blocks as the file stores them (x86, AVX-512 VNNI).

Q4_K keeps 4.5 bits a weight (4-bit codes, 6-bit scales and mins per 32 under fp16 factors per
256) and Q6_K 6.5625 (6-bit codes, int8 scales per 16 under an fp16 factor per 256). Repacked
into `int4_vnni`'s groups (a bf16 scale and zero per 32) Q4_K grows to 5 bits, and Q6_K,
which int4 cannot hold, to `int8_vnni`'s 8: a decode step reads every weight once, so those
extra bits are time. Here (`csrc/kquant_vnni.cpp`) the blocks are the weight (Q6_K's as
stored, Q4_K's with their code bytes reordered within each block): each is decoded in
registers into unsigned codes, multiplied with VPDPBUSD by the activations
quantized per 32 in two int8 steps (as `int4_vnni`), and scaled per sub-block in fp32 by the
block's own scales, so the product is the file's weight times the activations as quantized,
with nothing rounded on the weight's side. Rows of x are summed in the same order whatever
their number (M = 1, a batch, a prompt chunk). `LinearReference` over the same `BlockRows` is
its twin.
"""

from __future__ import annotations

import torch
from torch import nn

from . import native
from .rows import BLOCK, BlockRows  # BLOCK: weights per K-quant block, K a multiple

KINDS = ("Q4_K", "Q6_K")
Q4K_BYTES, Q4K_HEADER = 144, 16  # a Q4_K block: d, dmin and 12 bytes of scales, then codes


def q4k_kernel_order(blocks: torch.Tensor) -> torch.Tensor:
    """(N, row bytes) Q4_K rows → the same blocks with their 128 code bytes moved to the
    kernel's order (csrc/kquant_vnni.cpp): the file holds sub-blocks 2p and 2p + 1 in the low
    and high nibbles of 32-byte run p; the kernel wants each sub-block's 16 bytes together,
    byte i holding its codes i (low nibble) and i + 16 (high). The header is untouched."""
    flat = blocks.reshape(-1, Q4K_BYTES)
    runs = flat[:, Q4K_HEADER:].reshape(-1, 4, 32)
    # (B, sub-block, half, i): codes i and i + 16 of each sub-block
    codes = torch.stack([runs & 0x0F, runs >> 4], dim=2).reshape(-1, 8, 2, 16)
    ordered = (codes[:, :, 0] | (codes[:, :, 1] << 4)).reshape(-1, 128)
    return torch.cat([flat[:, :Q4K_HEADER], ordered], dim=1).reshape(blocks.shape)


def q4k_file_order(blocks: torch.Tensor) -> torch.Tensor:
    """The inverse of `q4k_kernel_order`."""
    flat = blocks.reshape(-1, Q4K_BYTES)
    ordered = flat[:, Q4K_HEADER:].reshape(-1, 8, 16)
    # (B, run, nibble, i): sub-block 2 run + nibble's 32 codes
    codes = torch.stack([ordered & 0x0F, ordered >> 4], dim=2).reshape(-1, 4, 2, 32)
    runs = (codes[:, :, 0] | (codes[:, :, 1] << 4)).reshape(-1, 128)
    return torch.cat([flat[:, :Q4K_HEADER], runs], dim=1).reshape(blocks.shape)


def takes(kind: str, k: int, device: torch.device | str = "cpu") -> bool:
    """Whether this layer can keep a weight of block type `kind` and K inputs on `device`."""
    return kind in KINDS and k % BLOCK == 0 and torch.device(device).type == "cpu" and \
        native.load()


class KQuantVnniLinear(nn.Module):
    """y = x @ W.T (+ bias) with W kept in its Q4_K or Q6_K blocks."""

    extra_sources = (*native.SOURCES, *native.HEADERS)  # what a compiled step also depends on

    def __init__(self, rows: BlockRows, bias: torch.Tensor | None = None,
                 device: torch.device | str = "cpu") -> None:
        super().__init__()
        if not takes(rows.kind, rows.k, device):
            raise ValueError(f"KQuantVnniLinear takes {' and '.join(KINDS)} with K a multiple "
                             f"of {BLOCK} on an x86 CPU with AVX-512 VNNI, not {rows.kind} with "
                             f"K = {rows.k} on {device}")
        self.out_features, self.in_features = rows.shape
        self.kind, self._decode = rows.kind, rows.decode
        # Q6_K as given (a tied head shares its embedding's table), Q4_K's codes reordered
        blocks = q4k_kernel_order(rows.blocks) if rows.kind == "Q4_K" else rows.blocks
        self.register_buffer("blocks", blocks)  # (N, K / 256 * block bytes) uint8
        self.register_buffer("bias", None if bias is None else bias.float())

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.buffers())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"{self.kind} blocks, vnni"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.reshape(-1, self.in_features)  # (M, K)
        # the op is looked up here, not kept on the module: a compiled step would guard on
        # the op object's identity, which cannot be saved (compiled.py saves steps whole)
        ops = torch.ops.ollamapy_native
        y = (ops.q4k_mm if self.kind == "Q4_K" else ops.q6k_mm)(a, self.blocks)  # (M, N) fp32
        y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def dequantize(self) -> torch.Tensor:
        """→ (N, K) float32, the weight the kernel multiplies by (the file's, exactly)."""
        return self._decode(q4k_file_order(self.blocks) if self.kind == "Q4_K" else self.blocks)
