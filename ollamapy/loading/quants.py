"""Dequantization of ggml tensor bytes into float32 torch tensors.

A ggml tensor is stored as a run of blocks (`ollamapy.loading.ggml_types`); `dequantize` turns
the bytes of the types listed in `DEQUANTIZE` into float32, bit for bit what gguf-py (and so
llama.cpp's reference `dequantize_row_*`) computes: every float operation below happens in
the same order, as a separate rounding step (no fused multiply-add).

Block layouts (bytes, in order; `d`, `m`, `dmin` are fp16; source: ggml-common.h):
    Q4_0  d, qs[16]                      w = d * (q - 8)            q: 4 bit
    Q4_1  d, m, qs[16]                   w = d * q + m              q: 4 bit
    Q5_0  d, qh[4], qs[16]               w = d * (q - 16)           q: 4 low bits + 1 high bit
    Q5_1  d, m, qh[4], qs[16]            w = d * q + m
    Q8_0  d, qs[32]                      w = d * q                  q: int8
    Q2_K  scales[16], qs[64], d, dmin    w = (d * sc) * q - dmin * mn, 16 sub-blocks of 16
    Q3_K  hmask[32], qs[64], scales[12], d          w = (d * (sc - 32)) * q, q in [-4, 3]
    Q4_K  d, dmin, scales[12], qs[128]   w = (d * sc) * q - dmin * mn, 8 sub-blocks of 32
    Q5_K  d, dmin, scales[12], qh[32], qs[128]      as Q4_K with a fifth bit
    Q6_K  ql[128], qh[64], scales[16] (int8), d     w = (d * sc) * (q - 32)
    IQ4_NL d, qs[16]                     w = d * kv[q]              q: 4 bit, kv: kvalues_iq4nl
    IQ4_XS d, scales_h, scales_l[4], qs[128]        w = (d * (sc - 32)) * kv[q], 8 sub-blocks of 32
    MXFP4 e, qs[16]                      w = 2^(e - 128) * kvalues_mxfp4[q]   e: E8M0 (uint8)
kvalues_iq4nl is a 16-entry int8 table of non-uniform levels; kvalues_mxfp4 holds the FP4 E2M1
values doubled (0, 1, 2, 3, 4, 6, 8, 12 and negatives), so the block scale 2^(e - 127) enters
halved. IQ4_XS's six-bit sc of sub-block i: low 4 bits from scales_l (two per byte, low
nibble first), high 2 bits from bits 2i, 2i + 1 of the little-endian uint16 scales_h.
In the 32-weight blocks (and each 32-weight sub-block of IQ4_XS, 16 bytes of qs), byte j of
qs holds weight j in its low nibble and weight j + 16 in its high nibble.

`q4_groups` returns the 4-bit codes of Q4_0 / Q4_1 / Q4_K with their per-32-weight affine
instead of floats, for kernels that keep those weights 4-bit (`gguf_rows.py` repacks them).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ollamapy.loading.ggml_types import GGML_TYPE_IDS, GGML_TYPES


def _u8(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.uint8)


_NIBBLE_SHIFTS = _u8([0, 4])
_CRUMB_SHIFTS = _u8([0, 2, 4, 6])  # four 2-bit fields per byte
_BIT_SHIFTS = _u8(list(range(8)))


def _f16(b: torch.Tensor) -> torch.Tensor:
    """(n, 2) little-endian fp16 bytes → (n, 1) float32."""
    return b.contiguous().view(torch.float16).float()


def _split(blocks: torch.Tensor, *sizes: int) -> list[torch.Tensor]:
    """Cut (n, type_size) blocks into consecutive fields of the given byte widths."""
    return list(torch.split(blocks, list(sizes), dim=1))


def _fields(packed: torch.Tensor, shifts: torch.Tensor, mask: int) -> torch.Tensor:
    """Unpack bit fields: (n, g, w) bytes → (n, g, len(shifts), w), field i of each byte at
    shift[i], so byte j of group g yields weights j, w + j, 2w + j, …"""
    return (packed.unsqueeze(2) >> shifts.view(1, 1, -1, 1)) & mask


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """(n, 16) bytes → (n, 32) 4-bit values: low nibbles are weights 0–15, high 16–31."""
    return _fields(qs.unsqueeze(1), _NIBBLE_SHIFTS, 0x0F).reshape(qs.shape[0], 32)


def _high_bits(qh: torch.Tensor) -> torch.Tensor:
    """(n, 4) bytes of a little-endian uint32 → (n, 32) bits, bit i for weight i."""
    return ((qh.unsqueeze(2) >> _BIT_SHIFTS) & 1).reshape(qh.shape[0], 32)


def _q4_0(b: torch.Tensor) -> torch.Tensor:
    d, qs = _split(b, 2, 16)
    q = _nibbles(qs).to(torch.int8) - 8
    return _f16(d) * q.float()


def _q4_1(b: torch.Tensor) -> torch.Tensor:
    d, m, qs = _split(b, 2, 2, 16)
    return _f16(d) * _nibbles(qs).float() + _f16(m)


def _q5_0(b: torch.Tensor) -> torch.Tensor:
    d, qh, qs = _split(b, 2, 4, 16)
    q = (_nibbles(qs) | (_high_bits(qh) << 4)).to(torch.int8) - 16
    return _f16(d) * q.float()


def _q5_1(b: torch.Tensor) -> torch.Tensor:
    d, m, qh, qs = _split(b, 2, 2, 4, 16)
    q = _nibbles(qs) | (_high_bits(qh) << 4)
    return _f16(d) * q.float() + _f16(m)


def _q8_0(b: torch.Tensor) -> torch.Tensor:
    d, qs = _split(b, 2, 32)
    return qs.contiguous().view(torch.int8).float() * _f16(d)


def _q2_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    scales, qs, d, dmin = _split(b, 16, 64, 2, 2)
    dl = (_f16(d) * (scales & 0x0F).float()).view(n, 16, 1)  # per 16-weight sub-block
    ml = (_f16(dmin) * (scales >> 4).float()).view(n, 16, 1)
    q = _fields(qs.reshape(n, 2, 32), _CRUMB_SHIFTS, 0x03).reshape(n, 16, 16).float()
    return (dl * q - ml).reshape(n, 256)


def _q3_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    hmask, qs, scales, d = _split(b, 32, 64, 12, 2)
    # 16 six-bit scales: low 4 bits from bytes 0–7 (two nibbles each), high 2 bits from 8–11
    low = _fields(scales[:, :8].unsqueeze(1), _NIBBLE_SHIFTS, 0x0F).reshape(n, 16)
    high = _fields(scales[:, 8:].unsqueeze(1), _CRUMB_SHIFTS, 0x03).reshape(n, 16)
    sc = ((low | (high << 4)).to(torch.int8) - 32).float()
    dl = (_f16(d) * sc).view(n, 16, 1)
    ql = _fields(qs.reshape(n, 2, 32), _CRUMB_SHIFTS, 0x03).reshape(n, 16, 16)
    # the high bit is a "no subtract" flag: weight = low 2 bits - 4 where the bit is clear
    qh = _fields(hmask.reshape(n, 1, 32), _BIT_SHIFTS, 0x01).reshape(n, 16, 16) ^ 1
    q = (ql.to(torch.int8) - (qh << 2).to(torch.int8)).float()
    return (dl * q).reshape(n, 256)


def _k_scales(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K/Q5_K: 12 bytes → 8 six-bit scales and 8 six-bit mins, each (n, 8).
    Bytes 0–3 hold scales 0–3 (low 6 bits), 4–7 mins 0–3; bytes 8–11 hold the low 4 bits
    of scale/min 4–7, whose top 2 bits sit in the top bits of bytes 0–3 / 4–7."""
    s, m, extra = scales[:, 0:4], scales[:, 4:8], scales[:, 8:12]
    sc = torch.cat((s & 0x3F, (extra & 0x0F) | ((s >> 2) & 0x30)), dim=1)
    mn = torch.cat((m & 0x3F, (extra >> 4) | ((m >> 2) & 0x30)), dim=1)
    return sc, mn


def _q4_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    d, dmin, scales, qs = _split(b, 2, 2, 12, 128)
    sc, mn = _k_scales(scales)
    dl = (_f16(d) * sc.float()).view(n, 8, 1)  # per 32-weight sub-block
    ml = (_f16(dmin) * mn.float()).view(n, 8, 1)
    q = _fields(qs.reshape(n, 4, 32), _NIBBLE_SHIFTS, 0x0F).reshape(n, 8, 32).float()
    return (dl * q - ml).reshape(n, 256)


def _q5_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    d, dmin, scales, qh, qs = _split(b, 2, 2, 12, 32, 128)
    sc, mn = _k_scales(scales)
    dl = (_f16(d) * sc.float()).view(n, 8, 1)
    ml = (_f16(dmin) * mn.float()).view(n, 8, 1)
    ql = _fields(qs.reshape(n, 4, 32), _NIBBLE_SHIFTS, 0x0F).reshape(n, 8, 32)
    high = _fields(qh.reshape(n, 1, 32), _BIT_SHIFTS, 0x01).reshape(n, 8, 32)
    q = (ql | (high << 4)).float()
    return (dl * q - ml).reshape(n, 256)


def _q6_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    ql, qh, scales, d = _split(b, 128, 64, 16, 2)
    dl = (_f16(d) * scales.contiguous().view(torch.int8).float()).view(n, 16, 1)
    low = _fields(ql.reshape(n, 2, 64), _NIBBLE_SHIFTS, 0x0F).reshape(n, 8, 32)
    high = _fields(qh.reshape(n, 2, 32), _CRUMB_SHIFTS, 0x03).reshape(n, 8, 32)
    q = ((low | (high << 4)).to(torch.int8) - 32).reshape(n, 16, 16).float()
    return (dl * q).reshape(n, 256)


# the 4-bit code → value tables: kvalues_iq4nl and kvalues_mxfp4 of ggml-common.h (gguf-py:
# IQ4_NL.kvalues, MXFP4.kvalues); small integers, so exact in float32
_KVALUES_IQ4NL = torch.tensor([-127, -104, -83, -65, -49, -35, -22, -10,
                               1, 13, 25, 38, 53, 69, 89, 113], dtype=torch.float32)
_KVALUES_MXFP4 = torch.tensor([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12],
                              dtype=torch.float32)


def _iq4_nl(b: torch.Tensor) -> torch.Tensor:
    d, qs = _split(b, 2, 16)
    return _f16(d) * _KVALUES_IQ4NL[_nibbles(qs).long()]  # (n, 1) * (n, 32)


def _iq4_xs(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    d, scales_h, scales_l, qs = _split(b, 2, 2, 4, 128)
    # 8 six-bit scales: byte i of scales_l holds the low 4 bits of sub-blocks 2i (low nibble)
    # and 2i + 1; the little-endian uint16 scales_h holds the high 2 bits of sub-block i at 2i
    low = _fields(scales_l.reshape(n, 4, 1), _NIBBLE_SHIFTS, 0x0F).reshape(n, 8)
    high = _fields(scales_h.reshape(n, 2, 1), _CRUMB_SHIFTS, 0x03).reshape(n, 8)
    sc = ((low | (high << 4)).to(torch.int8) - 32).float()
    dl = (_f16(d) * sc).view(n, 8, 1)  # per 32-weight sub-block
    q = _fields(qs.reshape(n, 8, 16), _NIBBLE_SHIFTS, 0x0F).reshape(n, 8, 32)
    return (dl * _KVALUES_IQ4NL[q.long()]).reshape(n, 256)


def _e8m0_half(e: torch.Tensor) -> torch.Tensor:
    """(n, 1) E8M0 bytes → (n, 1) float32 2^(e - 128), built from its bits as ggml's
    ggml_e8m0_to_fp32_half (and gguf-py) do: e = 0 and 1 give the subnormals 2^-128 and
    2^-127, e = 255 gives 2^127 (no NaN)."""
    e = e.to(torch.int32)
    bits = torch.where(e < 2, torch.full_like(e, 0x00200000) << e, (e - 1) << 23)
    return bits.view(torch.float32)


def _mxfp4(b: torch.Tensor) -> torch.Tensor:
    e, qs = _split(b, 1, 16)
    return _e8m0_half(e) * _KVALUES_MXFP4[_nibbles(qs).long()]  # (n, 1) * (n, 32)


def _plain(dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    def convert(b: torch.Tensor) -> torch.Tensor:
        return b.contiguous().view(dtype).float()  # (n, itemsize) → (n, 1)
    return convert


# type name → (n_blocks, type_size) uint8 → (n_blocks, block_size) float32
DEQUANTIZE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "F32": _plain(torch.float32), "F16": _plain(torch.float16), "BF16": _plain(torch.bfloat16),
    "Q4_0": _q4_0, "Q4_1": _q4_1, "Q5_0": _q5_0, "Q5_1": _q5_1, "Q8_0": _q8_0,
    "Q2_K": _q2_k, "Q3_K": _q3_k, "Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k,
    "IQ4_NL": _iq4_nl, "IQ4_XS": _iq4_xs, "MXFP4": _mxfp4,
}

_CHUNK_BLOCKS = 1 << 15  # bounds the temporaries of one step to a few MB


def dequantize(raw: torch.Tensor, type_name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """raw: the tensor's bytes, (nbytes,) uint8 on CPU → float32 tensor of `shape` (torch
    order: the innermost dimension last)."""
    if type_name not in DEQUANTIZE:
        raise NotImplementedError(f"tensor type {type_name} is not supported "
                                  f"(supported: {', '.join(DEQUANTIZE)})")
    t = GGML_TYPES[GGML_TYPE_IDS[type_name]]
    n_weights = 1
    for dim in shape:
        n_weights *= dim
    if n_weights % t.block_size or raw.numel() != n_weights // t.block_size * t.type_size:
        raise ValueError(f"{type_name}: {raw.numel()} bytes do not hold {n_weights} weights")
    blocks = raw.view(-1, t.type_size)  # (n_blocks, type_size)
    out = torch.empty(blocks.shape[0], t.block_size, dtype=torch.float32)
    fn = DEQUANTIZE[type_name]
    for begin in range(0, blocks.shape[0], _CHUNK_BLOCKS):
        out[begin:begin + _CHUNK_BLOCKS] = fn(blocks[begin:begin + _CHUNK_BLOCKS])
    return out.view(shape)


# -- the 4-bit codes themselves, for kernels that keep weights quantized ---------------------

def _q4_0_groups(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    d, qs = _split(b, 2, 16)
    scale = _f16(d)
    return _nibbles(qs), scale, scale * -8.0  # d * (q - 8) = d * q - 8 d, exactly


def _q4_1_groups(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    d, m, qs = _split(b, 2, 2, 16)
    return _nibbles(qs), _f16(d), _f16(m)


def _q4_k_groups(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = b.shape[0]
    d, dmin, scales, qs = _split(b, 2, 2, 12, 128)
    sc, mn = _k_scales(scales)
    scale = (_f16(d) * sc.float()).view(n * 8, 1)  # per 32-weight sub-block
    low = (-(_f16(dmin) * mn.float())).view(n * 8, 1)
    q = _fields(qs.reshape(n, 4, 32), _NIBBLE_SHIFTS, 0x0F).reshape(n * 8, 32)
    return q, scale, low


# type name → (n_blocks, type_size) uint8 → (q, scale, low) per 32-weight group
Q4_GROUPS: dict[str, Callable[[torch.Tensor], tuple[torch.Tensor, ...]]] = {
    "Q4_0": _q4_0_groups, "Q4_1": _q4_1_groups, "Q4_K": _q4_k_groups,
}


def q4_groups(raw: torch.Tensor, type_name: str) -> tuple[torch.Tensor, torch.Tensor,
                                                            torch.Tensor]:
    """The codes of a Q4_0 / Q4_1 / Q4_K tensor without dequantizing them: raw (nbytes,)
    uint8 → q (G, 32) uint8 in 0..15, scale (G, 1) and low (G, 1) float32, one row per
    32-weight group in storage order, such that w = scale * q + low equals what `dequantize`
    computes (Q4_0: low = -8d, the same values, +0 where d * (q - 8) gives -0; Q4_1: low = m
    and Q4_K: scale = d * sc, low = -dmin * mn, the same fp32 operations, so the same bits)."""
    if type_name not in Q4_GROUPS:
        raise ValueError(f"{type_name} has no 4-bit codes (only {', '.join(Q4_GROUPS)})")
    t = GGML_TYPES[GGML_TYPE_IDS[type_name]]
    if raw.numel() % t.type_size:
        raise ValueError(f"{type_name}: {raw.numel()} bytes are not whole blocks")
    return Q4_GROUPS[type_name](raw.view(-1, t.type_size))
