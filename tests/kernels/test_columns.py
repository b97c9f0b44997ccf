"""A tensor-parallel rank's inputs of a weight (`columns`): exactly those columns of the whole
weight, in every row form, and refused where a cut would split a group's or block's scale."""

from __future__ import annotations

import pytest
import torch

from ollamapy.loading.gguf_rows import block_rows, rows_from_gguf
from ollamapy_kernels.policy import pack
from ollamapy_kernels.rows import columns
from tests.kernels.helpers import random_gguf

SHAPE = (48, 1024)


@pytest.mark.parametrize(("type_name", "target"), [("Q4_1", "int4"), ("Q8_0", "int8"),
                                                   ("F16", "bf16")])
@pytest.mark.parametrize(("start", "stop"), [(0, 512), (512, 1024), (192, 576)])
def test_columns_are_the_whole_weights_columns(type_name: str, target: str, start: int,
                                               stop: int) -> None:
    rows = rows_from_gguf(random_gguf(type_name, SHAPE), type_name, SHAPE, target)
    cut = columns(rows, start, stop)
    assert cut.shape == (SHAPE[0], stop - start)
    assert torch.equal(cut.dequantize(), rows.dequantize()[:, start:stop])
    # and the packed layer multiplies by the same weight
    assert torch.equal(pack(cut).dequantize(),  # type: ignore[operator]
                       pack(rows).dequantize()[:, start:stop])  # type: ignore[operator]


@pytest.mark.parametrize("kind", ["Q4_K", "Q6_K"])
def test_block_columns_are_whole_blocks_decoded_by_the_same_decoder(kind: str) -> None:
    rows = block_rows(random_gguf(kind, SHAPE), kind, SHAPE)
    for start, stop in ((0, 256), (256, 1024), (512, 768)):
        cut = columns(rows, start, stop)
        assert cut.shape == (SHAPE[0], stop - start)
        assert torch.equal(cut.dequantize(), rows.dequantize()[:, start:stop])


def test_cuts_inside_a_group_or_block_are_refused() -> None:
    int4 = rows_from_gguf(random_gguf("Q4_1", SHAPE), "Q4_1", SHAPE, "int4")
    with pytest.raises(ValueError, match="split a 32-weight group"):
        columns(int4, 0, 100)
    blocks = block_rows(random_gguf("Q4_K", SHAPE), "Q4_K", SHAPE)
    with pytest.raises(ValueError, match="split a 256-weight block"):
        columns(blocks, 192, 576)
    with pytest.raises(ValueError, match=r"columns \[0, 2000\) of a weight of 1024 inputs"):
        columns(int4, 0, 2000)
    int8 = rows_from_gguf(random_gguf("Q8_0", SHAPE), "Q8_0", SHAPE, "int8")
    assert columns(int8, 3, 5).shape == (48, 2)  # one scale per row: any columns
