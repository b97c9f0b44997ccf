"""Dequantization is bit-exact against gguf-py's `gguf.quants` (the reference numpy port of
ggml's dequantize_row_*), on random blocks and on every tensor type of the real models."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf import quants

from ollamapy.loading.ggml_types import GGML_TYPE_IDS, GGML_TYPES
from ollamapy.loading.gguf import read_gguf
from ollamapy.loading.quants import DEQUANTIZE, Q4_GROUPS, dequantize, q4_groups
from tests.conftest import model_path

# byte offsets of the fp16 scale fields inside one block (ggml-common.h); MXFP4's scale is
# one E8M0 byte (offset 0), and every one of its 256 values is a finite scale
FP16_FIELDS = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
               "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
               "IQ4_NL": [0], "IQ4_XS": [0], "MXFP4": []}
# fp16 scale bits: +0, -0, the smallest subnormal and its negative, the largest finite, -1,
# +inf, -inf (inf * a zero level, as in IQ4_XS's sc = 32, makes NaN)
EDGE_FP16 = np.array([0x0000, 0x8000, 0x0001, 0x8001, 0x7BFF, 0xBC00, 0x7C00, 0xFC00],
                     dtype=np.uint16)


def random_blocks(name: str, n_blocks: int, seed: int) -> np.ndarray:
    """(n_blocks, type_size) random bytes whose float fields are finite (no inf/NaN, whose
    payloads the two implementations need not agree on)."""
    t = GGML_TYPES[GGML_TYPE_IDS[name]]
    rng = np.random.default_rng(seed)
    if name in ("F32", "F16", "BF16"):
        values = rng.standard_normal(n_blocks).astype(np.float32) * 10
        raw = {"F32": values, "F16": values.astype(np.float16),
               "BF16": (values.view(np.uint32) >> 16).astype(np.uint16)}[name]
        return raw.view(np.uint8).reshape(n_blocks, t.type_size)
    blocks = rng.integers(0, 256, (n_blocks, t.type_size), dtype=np.uint8)
    for offset in FP16_FIELDS[name]:
        blocks[:, offset + 1] &= 0b1011_1111  # clear an exponent bit: the value is finite
    return blocks


def reference(blocks: np.ndarray, name: str) -> np.ndarray:
    """gguf-py's float32 values, (n_blocks, block_size); its overflow to inf (MXFP4's
    largest exponents) and inf * 0 are the defined results here, not warnings."""
    with np.errstate(over="ignore", invalid="ignore"):
        values = quants.dequantize(blocks, Q[name])
    return values.reshape(blocks.shape[0], -1).astype(np.float32)


def ours(blocks: np.ndarray, name: str) -> np.ndarray:
    t = GGML_TYPES[GGML_TYPE_IDS[name]]
    raw = torch.from_numpy(blocks.reshape(-1).copy())
    return dequantize(raw, name, (blocks.shape[0], t.block_size)).numpy()


@pytest.mark.parametrize("name", list(DEQUANTIZE))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_blocks_are_bit_exact(name: str, seed: int) -> None:
    blocks = random_blocks(name, 97, seed)  # not a multiple of anything in particular
    expected = reference(blocks, name)
    got = ours(blocks, name)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("name", ["IQ4_NL", "IQ4_XS", "MXFP4"])
def test_edge_scales_are_bit_exact(name: str) -> None:
    """IQ4_NL / IQ4_XS: signed zeros, subnormal, largest and infinite fp16 scales (signed
    zeros and NaN bits count). MXFP4: all 256 E8M0 bytes, which the reference maps to
    2^(e - 128) from bits: 0 and 1 to the subnormals 2^-128 and 2^-127, 255 to 2^127 (not
    NaN, as the OCP spec has it), whose products overflow to inf."""
    blocks = random_blocks(name, 256, seed=4)
    if name == "MXFP4":
        blocks[:, 0] = np.arange(256, dtype=np.uint8)
    else:
        blocks[:, 0:2] = np.resize(EDGE_FP16, 256).view(np.uint8).reshape(256, 2)
    expected, got = reference(blocks, name), ours(blocks, name)
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    if name == "MXFP4":  # subnormal scales are not flushed to zero; e = 255 overflows
        assert (got[0] != 0).any() and (np.abs(got[:2]) <= 12 * 2.0**-127).all()
        assert np.isinf(got[255]).any()
    else:  # d = -0 gives zeros of both signs, d = inf no finite weight
        zeros = got[1::8]
        assert (zeros == 0).all() and np.signbit(zeros).any() and not np.signbit(zeros).all()
        assert not np.isfinite(got[6::8]).any()


def test_quantized_then_dequantized_values_round_trip() -> None:
    """gguf-py's quantizers make the blocks: our dequantization of them equals its own."""
    x = np.random.default_rng(3).standard_normal((8, 256)).astype(np.float32)
    for name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "BF16"):
        packed = quants.quantize(x, Q[name])
        expected = quants.dequantize(packed, Q[name])
        got = dequantize(torch.from_numpy(packed.reshape(-1).copy()), name, x.shape).numpy()
        assert np.array_equal(got.view(np.uint32), expected.view(np.uint32)), name
        # and it is close to what was quantized: within one step of the coarsest (4-bit)
        # type, whose step is at most a block's largest magnitude / 8
        err = np.abs(got - x).reshape(-1, 32).max(axis=1)
        assert (err <= np.abs(x).reshape(-1, 32).max(axis=1) / 8 * 1.0001).all(), name


def test_mxfp4_quantized_then_dequantized_values_round_trip() -> None:
    """gguf-py quantizes MXFP4 (not IQ4_NL / IQ4_XS): the same bits back, and within a
    quarter of each block's largest magnitude (the scale is 2^(floor(log2 max) - 3), so the
    top levels 8, 12 (x scale) sit 4 scales apart and max < 16 scales)."""
    x = np.random.default_rng(6).standard_normal((8, 256)).astype(np.float32)
    x[0, :32] = 0.0  # an all-zero block: e = 0, the subnormal scale
    packed = quants.quantize(x, Q.MXFP4)
    expected = quants.dequantize(packed, Q.MXFP4)
    got = dequantize(torch.from_numpy(packed.reshape(-1).copy()), "MXFP4", x.shape).numpy()
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    err = np.abs(got - x).reshape(-1, 32).max(axis=1)
    assert (err <= np.abs(x).reshape(-1, 32).max(axis=1) / 4).all()


@pytest.mark.parametrize("name", list(Q4_GROUPS))
@pytest.mark.parametrize("seed", [0, 1])
def test_q4_groups_are_the_dequantization(name: str, seed: int) -> None:
    """The 4-bit codes with their affine, on any finite blocks: the same values."""
    raw = torch.from_numpy(random_blocks(name, 40, seed).reshape(-1).copy())
    q, scale, low = q4_groups(raw, name)
    assert q.dtype == torch.uint8 and int(q.max()) <= 15
    assert torch.equal(scale * q.float() + low, dequantize(raw, name, (q.numel() // 32, 32)))


def test_type_table_agrees_with_gguf_py() -> None:
    for type_id, t in GGML_TYPES.items():
        block_size, type_size = gguf.GGML_QUANT_SIZES[Q(type_id)]
        assert (t.name, t.block_size, t.type_size) == (Q(type_id).name, block_size, type_size)


def test_wrong_byte_count_and_unsupported_type_are_refused() -> None:
    with pytest.raises(ValueError, match="do not hold"):
        dequantize(torch.zeros(17, dtype=torch.uint8), "Q4_0", (32,))
    with pytest.raises(NotImplementedError, match="IQ2_XXS is not supported"):
        dequantize(torch.zeros(66, dtype=torch.uint8), "IQ2_XXS", (256,))


@pytest.mark.parametrize("file", ["smollm2-135m.gguf", "gemma3-270m.gguf"])
def test_real_model_tensors_are_bit_exact(file: str) -> None:
    """The smallest tensor of each type in the real files, through our reader and through
    gguf-py's reader: the same float32 bits (and the same torch-order shape)."""
    path = model_path(file)
    reference = {t.name: t for t in gguf.GGUFReader(path).tensors}
    with read_gguf(path) as f:
        smallest: dict[str, str] = {}
        for info in sorted(f.tensors.values(), key=lambda i: i.nbytes):
            smallest.setdefault(info.type_name, info.name)
        assert {"Q4_1", "Q8_0", "F32"} <= set(smallest) or \
            {"Q5_0", "Q4_K", "Q6_K", "Q8_0"} <= set(smallest)
        for type_name, name in smallest.items():
            ref = reference[name]
            expected = quants.dequantize(np.asarray(ref.data), ref.tensor_type)
            got = f.tensor(name)
            assert tuple(got.shape) == expected.shape, name
            assert np.array_equal(got.numpy().view(np.uint32),
                                  expected.astype(np.float32).view(np.uint32)), type_name
