"""The row-gathered embedding equals a lookup in the fully decoded table, bit for bit: with a
toy row encoding, with every GGUF type's (the loader's decoder) and on the real tables."""

from __future__ import annotations

import pytest
import torch

from ollamapy.loading.gguf import read_gguf
from ollamapy.loading.gguf_rows import gguf_embedding
from ollamapy_kernels.embedding import QuantizedEmbedding, QuantizedEmbeddingReference
from tests.conftest import model_path
from tests.kernels.helpers import random_gguf


def _reference(emb: QuantizedEmbedding, dtype: torch.dtype = torch.float32
               ) -> QuantizedEmbeddingReference:
    """The reference built from the same arguments as `emb`."""
    return QuantizedEmbeddingReference(emb.rows, emb.embedding_dim, emb.decode, dtype)


def test_any_row_encoding() -> None:
    """int8 codes followed by a float32 scale, 4 bytes: the kernel knows only the decoder."""
    n, dim = 50, 24
    codes = torch.randint(-127, 128, (n, dim), dtype=torch.int8)
    scales = torch.rand(n, 1)
    rows = torch.cat([codes.view(torch.uint8), scales.view(torch.uint8)], dim=1)  # (n, dim + 4)

    def decode(r: torch.Tensor) -> torch.Tensor:
        return r[:, :dim].view(torch.int8).float() * r[:, dim:].contiguous().view(torch.float32)

    emb = QuantizedEmbedding(rows, dim, decode)
    ids = torch.tensor([[3, 0, 49], [7, 7, 1]])
    assert torch.equal(emb(ids), (codes.float() * scales)[ids])
    assert torch.equal(emb(ids), _reference(emb)(ids))
    assert emb.nbytes == n * (dim + 4)


@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_K", "Q6_K", "Q5_0", "F16", "F32", "IQ4_NL",
                                       "IQ4_XS", "MXFP4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_random_gguf_tables(type_name: str, dtype: torch.dtype) -> None:
    shape = (300, 512)
    emb = gguf_embedding(random_gguf(type_name, shape), type_name, shape, dtype)
    ids = torch.randint(0, 300, (3, 7))
    got = emb(ids)
    assert got.shape == (3, 7, 512) and got.dtype == dtype
    assert torch.equal(got, _reference(emb, dtype)(ids))


@pytest.mark.parametrize("file", ["smollm2-135m.gguf", "gemma3-270m.gguf"])
def test_real_token_embedding(file: str) -> None:
    with read_gguf(model_path(file)) as f:
        info = f.tensors["token_embd.weight"]
        raw = f.raw("token_embd.weight")
    shape = (info.shape[0], info.shape[1])
    emb = gguf_embedding(raw, info.type_name, shape)
    ids = torch.tensor([[0, 1, 2, shape[0] - 1], [17, 9000, 42, 3]])
    assert torch.equal(emb(ids), _reference(emb)(ids))
    assert emb.nbytes == info.nbytes
