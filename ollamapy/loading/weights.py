"""Foreign tensor names → ours, with the layout fixes each format needs, in one place.

Our names follow `ollamapy.engine.model` (`layers.3.attn.wq.weight`). Two fixes:
- llama GGUFs store q/k rows in the interleaved-pairs RoPE layout (llama.cpp's converter
  permutes them); `unpermute_qk` restores the rotate-half layout our RoPE uses.
- Hugging Face gemma checkpoints store RMSNorm weights as w and apply 1 + w; we store 1 + w.
The model is built on the meta device and the translated tensors are assigned, so weights
are allocated once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import torch

from ollamapy.engine.config import ModelConfig
from ollamapy.engine.model import Transformer
from ollamapy.loading.gguf_config import UnsupportedModelError

_GGUF_GLOBAL = {"token_embd.weight": "tok_embeddings.weight",
                "output_norm.weight": "norm.weight", "output.weight": "output.weight"}
_GGUF_LAYER = {
    "attn_norm": "attn_norm", "attn_q": "attn.wq", "attn_k": "attn.wk", "attn_v": "attn.wv",
    "attn_output": "attn.wo", "attn_q_norm": "attn.q_norm", "attn_k_norm": "attn.k_norm",
    "post_attention_norm": "post_attn_norm", "ffn_norm": "ffn_norm", "ffn_gate": "ffn.w_gate",
    "ffn_up": "ffn.w_up", "ffn_down": "ffn.w_down", "post_ffw_norm": "post_ffn_norm",
}
_HF_GLOBAL = {"model.embed_tokens.weight": "tok_embeddings.weight",
              "model.norm.weight": "norm.weight", "lm_head.weight": "output.weight"}
_HF_LAYER = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn.wq", "self_attn.k_proj": "attn.wk",
    "self_attn.v_proj": "attn.wv", "self_attn.o_proj": "attn.wo",
    "self_attn.q_norm": "attn.q_norm", "self_attn.k_norm": "attn.k_norm",
    "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffn_norm",
    "mlp.gate_proj": "ffn.w_gate", "mlp.up_proj": "ffn.w_up", "mlp.down_proj": "ffn.w_down",
}
# BERT (`bert` GGUFs, as llama.cpp's converter writes all-minilm; `nomic-bert` adds attn_qkv,
# split by build_encoder, and ffn_gate): our BertEncoder's names
_GGUF_BERT_GLOBAL = {
    "token_embd.weight": "tok_embeddings.weight", "position_embd.weight": "pos_embeddings.weight",
    "token_types.weight": "type_embeddings.weight", "token_embd_norm.weight": "embed_norm.weight",
    "token_embd_norm.bias": "embed_norm.bias",
}
_GGUF_BERT_LAYER = {
    "attn_q": "attn.wq", "attn_k": "attn.wk", "attn_v": "attn.wv", "attn_output": "attn.wo",
    "attn_output_norm": "attn_norm", "ffn_up": "ffn.w_up", "ffn_down": "ffn.w_down",
    "layer_output_norm": "ffn_norm", "attn_qkv": "attn.wqkv", "ffn_gate": "ffn.w_gate",
}
_GGUF_BLOCK = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
_HF_BLOCK = re.compile(r"model\.layers\.(\d+)\.([\w.]+)\.(weight|bias)")

# Architectures whose GGUF q/k weights llama.cpp's converter permutes (LlamaModel.permute)
INTERLEAVED_QK_ARCHS = frozenset({"llama"})


def _gguf_rename(name: str, top: dict[str, str], layer: dict[str, str], what: str) -> str:
    if name in top:
        return top[name]
    m = _GGUF_BLOCK.fullmatch(name)
    if m and m[2] in layer:
        return f"layers.{m[1]}.{layer[m[2]]}.{m[3]}"
    raise UnsupportedModelError(f"unexpected tensor {name!r} in {what}")


def gguf_name(name: str) -> str:
    return _gguf_rename(name, _GGUF_GLOBAL, _GGUF_LAYER, "GGUF")


def gguf_encoder_name(name: str) -> str:
    return _gguf_rename(name, _GGUF_BERT_GLOBAL, _GGUF_BERT_LAYER, "a BERT GGUF")


def hf_name(name: str, config: ModelConfig) -> str:
    name = name.removeprefix("language_model.")  # gemma3 multimodal checkpoints
    if name in _HF_GLOBAL:
        return _HF_GLOBAL[name]
    m = _HF_BLOCK.fullmatch(name)
    if m and m[2] == "post_attention_layernorm":
        # gemma3 norms the attention output with it; llama/qwen norm the MLP input with it
        return f"layers.{m[1]}.{'post_attn_norm' if config.post_norms else 'ffn_norm'}.{m[3]}"
    if m and m[2] in _HF_LAYER:
        return f"layers.{m[1]}.{_HF_LAYER[m[2]]}.{m[3]}"
    raise UnsupportedModelError(f"unexpected tensor {name!r} in safetensors")


def unpermute_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation: per head, rows are stored as interleaved pairs
    (x0, x_{d/2}, x1, …); the rotate-half layout wants the halves contiguous.
    w: (n_heads * head_dim, …) → same shape."""
    head_dim = w.shape[0] // n_heads
    rest = w.shape[1:]
    # (n_heads, head_dim // 2, 2, …) → (n_heads, 2, head_dim // 2, …)
    return w.reshape(n_heads, head_dim // 2, 2, *rest).transpose(1, 2).reshape(w.shape)


def fix_gguf_tensor(our_name: str, t: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    if config.arch in INTERLEAVED_QK_ARCHS:
        if ".attn.wq." in our_name:
            return unpermute_qk(t, config.n_heads)
        if ".attn.wk." in our_name:
            return unpermute_qk(t, config.n_kv_heads)
    return t


def fix_hf_tensor(our_name: str, t: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    if config.arch == "gemma3" and "norm." in our_name:
        return t.float() + 1.0  # gemma's RMSNorm multiplies by (1 + w)
    return t


def build_transformer(config: ModelConfig, tensors: Iterator[tuple[str, torch.Tensor]],
                      device: torch.device | str, dtype: torch.dtype) -> Transformer:
    """Assemble a Transformer from (our_name, tensor) pairs without allocating twice."""
    with torch.device("meta"):
        model = Transformer(config)
    state = {name: t.to(device=device, dtype=dtype) for name, t in tensors}
    if config.tied_embeddings:
        state.setdefault("output.weight", state["tok_embeddings.weight"])
    missing = set(model.state_dict()) - set(state)
    unexpected = set(state) - set(model.state_dict())
    if missing or unexpected:
        raise UnsupportedModelError(f"weights do not fit the config: missing {sorted(missing)[:5]}"
                                    f", unexpected {sorted(unexpected)[:5]}")
    model.load_state_dict(state, assign=True, strict=True)
    model.init_rope()
    return model.eval()
