"""Path on disk → a ready checkpoint: model on its device, tokenizer, chat template, metadata.

A `.gguf` file or a Hugging Face safetensors folder. Decoders (the families in families.py)
become a `Transformer`; BERT and nomic-bert (a GGUF or a folder) become a `BertEncoder`. This
is the only module that knows which reader and which name map go with which format.
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ollamapy.engine.bert import BertEncoder
from ollamapy.engine.config import ModelConfig
from ollamapy.engine.model import Transformer
from ollamapy.engine.tensor_parallel import Part, shard, shard_encoder
from ollamapy.loading.encoder_weights import build_encoder, encoder_from_hf, gguf_encoder_name
from ollamapy.loading.families import ENCODER_ARCHS, HF_ENCODER_TYPES
from ollamapy.loading.gguf import GGUFFile, read_gguf
from ollamapy.loading.gguf_config import (
    CONFIG_TENSORS,
    UnsupportedModelError,
    config_from_gguf,
    encoder_config_from_gguf,
    is_decoder_weight,
)
from ollamapy.loading.hf_config import config_from_hf
from ollamapy.loading.safetensors import HFFolder, read_hf_folder
from ollamapy.loading.weights import (
    build_transformer,
    fix_gguf_tensor,
    fix_hf_tensor,
    gguf_name,
    hf_name,
    split_experts,
    stack_experts,
)
from ollamapy.text.tokenizer import Tokenizer


@dataclass
class Checkpoint:
    kind: Literal["decoder", "encoder"]
    model: Transformer | BertEncoder
    tokenizer: Tokenizer
    chat_template: str | None
    # GGUF metadata (its vocabulary arrays left to the tokenizer) or config.json
    metadata: dict[str, Any] = field(default_factory=dict)


def load_checkpoint(path: str | Path, device: torch.device, dtype: torch.dtype,
                    fast: bool = False, part: Part | None = None) -> Checkpoint:
    """fast: a GGUF decoder's weights stay quantized (`loading/fast_model.py`); everything
    else, and fast=False, dequantizes to dtype (the reference path). part: only this
    tensor-parallel rank's share (engine/tensor_parallel.py)."""
    path = Path(path)
    if path.is_dir():
        checkpoint = _load_hf(read_hf_folder(path), device, dtype)
    elif not path.is_file():
        raise FileNotFoundError(f"no model file or folder at {path}")
    else:
        with read_gguf(path) as gguf:
            checkpoint = _load_gguf(gguf, device, dtype, fast, part)
    if part is None:
        return checkpoint
    model = checkpoint.model
    if isinstance(model, BertEncoder):  # small: split once loaded
        checkpoint.model = shard_encoder(model, part.rank, part.world, part.group)
    elif not fast or path.is_dir():  # the float decoder; the fast loader cut its rows itself
        checkpoint.model = shard(model, part.rank, part.world, part.group)
    return checkpoint


def decoder_tensors(gguf: GGUFFile, config: ModelConfig) -> Iterator[tuple[str, torch.Tensor]]:
    """The file's decoder weights under our names, fixed for the reference model."""
    for name in filter(is_decoder_weight, gguf.tensors):
        ours = gguf_name(name, config)
        yield ours, fix_gguf_tensor(ours, gguf.tensor(name), config)


def _load_gguf(gguf: GGUFFile, device: torch.device, dtype: torch.dtype,
               fast: bool, part: Part | None = None) -> Checkpoint:
    meta = gguf.metadata
    if meta.get("general.architecture") in ENCODER_ARCHS:  # fast or not: BERT is small
        config = encoder_config_from_gguf(meta)
        tensors = ((gguf_encoder_name(name), gguf.tensor(name)) for name in gguf.tensors)
        return Checkpoint("encoder", build_encoder(config, tensors, device, dtype),
                          Tokenizer.from_gguf_metadata(meta), None, without_vocabulary(meta))
    values = {n: gguf.tensor(n).tolist() for n in CONFIG_TENSORS if n in gguf.tensors}
    config = config_from_gguf(meta, gguf.tensors.keys(), values)
    tokenizer = Tokenizer.from_gguf_metadata(meta)
    trim_heap()  # the vocabulary's build temporaries, before the weights arrive
    if fast:
        from ollamapy.loading.fast_model import build_fast_transformer  # imports the kernels

        model = build_fast_transformer(gguf, config, device, dtype, part=part)
    else:
        model = build_transformer(config, decoder_tensors(gguf, config), device, dtype)
    trim_heap()
    template = meta.get("tokenizer.chat_template")
    return Checkpoint("decoder", model, tokenizer,
                      template if isinstance(template, str) else None, without_vocabulary(meta))


# the vocabulary's arrays (gemma3's 262144 tokens and scores: ~48 MB of Python objects) live
# on in the tokenizer; a checkpoint keeps the rest of the metadata
VOCABULARY_ARRAYS = frozenset({"tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                               "tokenizer.ggml.token_type", "tokenizer.ggml.merges"})


def without_vocabulary(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in meta.items() if key not in VOCABULARY_ARRAYS}


def trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc's malloc_trim): a load frees
    far more small objects than it keeps (the vocabulary's merge list, the weights' row
    conversions), and glibc would otherwise hold their pages for the process's life."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (macOS, musl): nothing to trim this way
        return None


_LIBC = _glibc()


def _load_hf(folder: HFFolder, device: torch.device, dtype: torch.dtype) -> Checkpoint:
    if folder.tokenizer_json is None:
        raise UnsupportedModelError(f"{folder.path}: no tokenizer.json")
    tok_config = folder.extra.get("tokenizer_config.json") or {}
    tokenizer = Tokenizer.from_tokenizer_json(folder.tokenizer_json, tok_config)
    if folder.config.get("model_type") in HF_ENCODER_TYPES:
        model = encoder_from_hf(folder, device, dtype)
        return Checkpoint("encoder", model, tokenizer, None, dict(folder.config))
    config = config_from_hf(folder.config, folder.tensors.keys())
    tensors = stack_experts((hf_name(n, config), t) for n, t in folder.tensors.items())
    parts = (part for n, t in tensors for part in split_experts(n, t))
    model = build_transformer(config, ((n, fix_hf_tensor(n, t, config)) for n, t in parts),
                              device, dtype)
    template = tok_config.get("chat_template")
    if template is None and (folder.path / "chat_template.jinja").is_file():
        template = (folder.path / "chat_template.jinja").read_text()
    if isinstance(template, list):  # named templates: take the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return Checkpoint("decoder", model, tokenizer, template, json.loads(json.dumps(folder.config)))
