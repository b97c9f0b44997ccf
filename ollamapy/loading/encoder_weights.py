"""A BERT or nomic-bert checkpoint → a `BertEncoder`: the encoder's name maps and its assembly.

Owns the map from Hugging Face tensor names to ours (`bert_name`) and from a `bert` or
`nomic-bert` GGUF's (`gguf_encoder_name`), the split of nomic-bert's fused q/k/v projection,
`build_encoder` (the encoder's `build_transformer`) and `encoder_from_hf`, which reads a
sentence-transformers folder's module configs. Config translation lives beside the decoder's:
`hf_config.encoder_config_from_hf`, `gguf_config.encoder_config_from_gguf`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

from ollamapy.engine.bert import BertEncoder, EncoderConfig
from ollamapy.loading.hf_config import encoder_config_from_hf
from ollamapy.loading.safetensors import HFFolder
from ollamapy.loading.weights import gguf_rename

# -- Hugging Face names → ours ------------------------------------------------------------------

_HF_GLOBAL = {
    "embeddings.word_embeddings.weight": "tok_embeddings.weight",
    "embeddings.position_embeddings.weight": "pos_embeddings.weight",
    "embeddings.token_type_embeddings.weight": "type_embeddings.weight",
    "embeddings.LayerNorm.weight": "embed_norm.weight",
    "embeddings.LayerNorm.bias": "embed_norm.bias",
    # nomic-bert, as nomic-ai's checkpoints name it (and transformers' save_pretrained writes it)
    "emb_ln.weight": "embed_norm.weight",
    "emb_ln.bias": "embed_norm.bias",
}
_HF_LAYER = {
    "attention.self.query": "attn.wq",
    "attention.self.key": "attn.wk",
    "attention.self.value": "attn.wv",
    "attention.output.dense": "attn.wo",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "ffn.w_up",
    "output.dense": "ffn.w_down",
    "output.LayerNorm": "ffn_norm",
    # nomic-bert; `encoder.layers`, not `encoder.layer`
    "attn.Wqkv": "attn.wqkv",  # q, k and v stacked: split by build_encoder
    "attn.out_proj": "attn.wo",
    "norm1": "attn_norm",
    "mlp.fc11": "ffn.w_up",
    "mlp.fc12": "ffn.w_gate",
    "mlp.fc2": "ffn.w_down",
    "norm2": "ffn_norm",
}
_HF_BLOCK = re.compile(r"encoder\.layers?\.(\d+)\.([\w.]+)\.(weight|bias)")
# Saved by BertModel but unused by a sentence encoder: the position_ids buffer (we build
# positions ourselves), the pooler (a tanh head for next-sentence prediction; sentence
# pooling reads the hidden states) and pretraining heads.
_HF_UNUSED = re.compile(r"embeddings\.position_ids|pooler\..*|cls\..*")


def bert_name(hf_name: str) -> str | None:
    """Our parameter name for a Hugging Face BERT or nomic-bert tensor, None for tensors we do
    not use."""
    name = hf_name.removeprefix("bert.")  # BertFor* task models nest the encoder here
    if name in _HF_GLOBAL:
        return _HF_GLOBAL[name]
    if _HF_UNUSED.fullmatch(name):
        return None
    m = _HF_BLOCK.fullmatch(name)
    if m and m[2] in _HF_LAYER:
        return f"layers.{m[1]}.{_HF_LAYER[m[2]]}.{m[3]}"
    raise ValueError(f"unexpected tensor {hf_name!r} in a BERT checkpoint")


# -- GGUF names → ours --------------------------------------------------------------------------

# `bert` GGUFs, as llama.cpp's converter writes all-minilm; `nomic-bert` adds attn_qkv (split
# by build_encoder) and ffn_gate
_GGUF_GLOBAL = {
    "token_embd.weight": "tok_embeddings.weight", "position_embd.weight": "pos_embeddings.weight",
    "token_types.weight": "type_embeddings.weight", "token_embd_norm.weight": "embed_norm.weight",
    "token_embd_norm.bias": "embed_norm.bias",
}
_GGUF_LAYER = {
    "attn_q": "attn.wq", "attn_k": "attn.wk", "attn_v": "attn.wv", "attn_output": "attn.wo",
    "attn_output_norm": "attn_norm", "ffn_up": "ffn.w_up", "ffn_down": "ffn.w_down",
    "layer_output_norm": "ffn_norm", "attn_qkv": "attn.wqkv", "ffn_gate": "ffn.w_gate",
}


def gguf_encoder_name(name: str) -> str:
    return gguf_rename(name, _GGUF_GLOBAL, _GGUF_LAYER, "a BERT GGUF")


# -- assembly -----------------------------------------------------------------------------------


def build_encoder(config: EncoderConfig, tensors: Iterable[tuple[str, torch.Tensor]],
                  device: torch.device | str, dtype: torch.dtype) -> BertEncoder:
    """A BertEncoder from (our name, tensor) pairs: built on the meta device, then each tensor
    converted and assigned in turn, so the weights are allocated once, on their device."""
    with torch.device("meta"):
        model = BertEncoder(config)
    state = {name: tensor.to(device=device, dtype=dtype) for name, tensor in _split_qkv(tensors)}
    expected = set(model.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ValueError(
            f"weights do not fit the config: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    model.load_state_dict(state, assign=True, strict=True)
    return model.eval()


def _split_qkv(tensors: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    """nomic-bert's fused projection `attn.wqkv` (3 * dim, dim), rows q then k then v → our
    `attn.wq`, `attn.wk`, `attn.wv` (dim, dim) each; other tensors pass as they are."""
    for name, tensor in tensors:
        if ".attn.wqkv." not in name:
            yield name, tensor
            continue
        for part, rows in zip(("wq", "wk", "wv"), tensor.chunk(3, dim=0), strict=True):
            yield name.replace(".wqkv.", f".{part}."), rows


def encoder_from_hf(folder: HFFolder, device: torch.device | str,
                    dtype: torch.dtype) -> BertEncoder:
    """A BertEncoder from a Hugging Face (sentence-transformers) folder."""
    config = encoder_config_from_hf(
        folder.config,
        pooling_config=_sentence_module_config(folder.extra, "Pooling"),
        sentence_config=folder.extra.get("sentence_bert_config.json"),
        modules=folder.extra.get("modules.json"),
    )
    ours = ((name, t) for hf, t in folder.tensors.items() if (name := bert_name(hf)))
    return build_encoder(config, ours, device, dtype)


def _sentence_module_config(extra: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    """The config of the sentence-transformers module of this kind (e.g. 1_Pooling/config.json);
    modules.json names its folder."""
    for module in extra.get("modules.json") or []:
        if str(module.get("type", "")).endswith(f".{kind}"):
            return extra.get(f"{module.get('path')}/config.json")
    return None
