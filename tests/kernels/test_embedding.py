"""The row-gathered GGUF embedding equals a lookup in the dequantized table, bit for bit."""

from __future__ import annotations

import pytest
import torch

from ollamapy.loading.gguf import read_gguf
from ollamapy_kernels.embedding import GGUFEmbedding, GGUFEmbeddingReference
from tests.conftest import model_path
from tests.kernels.helpers import random_gguf


@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_K", "Q6_K", "Q5_0", "F16", "F32", "IQ4_NL",
                                       "IQ4_XS", "MXFP4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_random_tables(type_name: str, dtype: torch.dtype) -> None:
    shape = (300, 512)
    raw = random_gguf(type_name, shape)
    ids = torch.randint(0, 300, (3, 7))
    got = GGUFEmbedding(raw, type_name, shape, dtype)(ids)
    expected = GGUFEmbeddingReference(raw, type_name, shape, dtype)(ids)
    assert got.shape == (3, 7, 512) and got.dtype == dtype
    assert torch.equal(got, expected)


@pytest.mark.parametrize("file", ["smollm2-135m.gguf", "gemma3-270m.gguf"])
def test_real_token_embedding(file: str) -> None:
    with read_gguf(model_path(file)) as f:
        info = f.tensors["token_embd.weight"]
        raw = f.raw("token_embd.weight")
    shape = (info.shape[0], info.shape[1])
    emb = GGUFEmbedding(raw, info.type_name, shape)
    ids = torch.tensor([[0, 1, 2, shape[0] - 1], [17, 9000, 42, 3]])
    assert torch.equal(emb(ids), GGUFEmbeddingReference(raw, info.type_name, shape)(ids))
    assert emb.nbytes == info.nbytes
