"""Tokenizers built straight from the real files: GGUF metadata read by gguf-py (an independent
reader, not ours) and the all-minilm tokenizer.json folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import pytest

from ollamapy.text.tokenizer import Tokenizer
from tests.conftest import model_path


def read_gguf_metadata(path: Path) -> dict[str, Any]:
    reader = gguf.GGUFReader(path)
    return {name: field.contents() for name, field in reader.fields.items()
            if not name.startswith("GGUF.")}


@pytest.fixture(scope="session")
def smollm2_meta() -> dict[str, Any]:
    return read_gguf_metadata(model_path("smollm2-135m.gguf"))


@pytest.fixture(scope="session")
def gemma3_meta() -> dict[str, Any]:
    return read_gguf_metadata(model_path("gemma3-270m.gguf"))


@pytest.fixture(scope="session")
def smollm2_tok(smollm2_meta) -> Tokenizer:
    return Tokenizer.from_gguf_metadata(smollm2_meta)


@pytest.fixture(scope="session")
def gemma3_tok(gemma3_meta) -> Tokenizer:
    return Tokenizer.from_gguf_metadata(gemma3_meta)


@pytest.fixture(scope="session")
def minilm_tok() -> Tokenizer:
    folder = model_path("all-minilm")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    return Tokenizer.from_tokenizer_json(folder / "tokenizer.json", config)


@pytest.fixture
def tok(request) -> Tokenizer:
    """The GGUF tokenizer a test is parametrized with ("smollm2" or "gemma3")."""
    return request.getfixturevalue(f"{request.param}_tok")
