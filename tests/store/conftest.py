"""Fixtures for the store tests: an empty store, tiny GGUF files, streaming uploads, and
stand-in registries (`registry`, and `other` on another port: a foreign realm, a CDN)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ollamapy.store import Store
from tests.store.standin import StandIn, standin

CHUNK = 1 << 20


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "models")


@pytest.fixture
def registry() -> Iterator[StandIn]:
    with standin() as r:
        yield r


@pytest.fixture
def other() -> Iterator[StandIn]:
    """A second stand-in on another port: a foreign auth realm, a CDN."""
    with standin() as r:
        yield r


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def upload(store: Store, path: Path) -> str:
    """What a client does: hash the file, then stream it to the blob store chunk by chunk."""
    digest = sha256_file(path)
    writer = store.blobs.writer(digest)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            writer.write(chunk)
    writer.commit()
    return digest


def write_gguf(path: Path, *, arch: str = "llama", file_type: int | None = 1,
               pooling: bool = False, general_type: str | None = None,
               n_embd: int = 64, n_layers: int = 2, raw_type: str | None = None) -> Path:
    """A small valid GGUF (F32 tensors, n_embd × 32 × n_layers + n_embd weights); with
    raw_type, the block tensors are zero bytes of that ggml type instead."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    if general_type is not None:
        w.add_type(general_type)
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layers)
    if file_type is not None:
        w.add_file_type(file_type)
    if pooling:
        w.add_pooling_type(gguf.PoolingType.MEAN)
    rng = np.random.default_rng(0)
    for i in range(n_layers):
        if raw_type is None:
            w.add_tensor(f"blk.{i}.ffn_up.weight", rng.standard_normal((32, n_embd), np.float32))
        else:
            kind = gguf.GGMLQuantizationType[raw_type]
            block, size = gguf.GGML_QUANT_SIZES[kind]
            w.add_tensor(f"blk.{i}.ffn_up.weight", np.zeros((32, n_embd // block * size),
                                                            np.uint8), raw_dtype=kind)
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
