"""A decoder's foreign tensor names → ours, with the layout fixes each format needs, in one place
(a BERT encoder's are in `encoder_weights.py`).

Our names follow `ollamapy.engine.model` (`layers.3.attn.wqkv.weight`); a checkpoint's separate
q, k, v (gate, up) tensors are first named as parts (`attn.wq`, `ffn.w_gate`) and then joined
into the model's one matmul (`fuse_projections`). The fixes:
- llama GGUFs store q/k rows in the interleaved-pairs RoPE layout (llama.cpp's converter
  permutes them); `unpermute_qk` restores the rotate-half layout our RoPE uses.
- Hugging Face gemma checkpoints store RMSNorm weights as w and apply 1 + w; we store 1 + w.
- gpt-oss's input-major experts are split and transposed into the model's layout
  (`split_experts`); a Hugging Face MoE's per-expert matrices are stacked into one
  (n_experts, out, in) tensor.
The model is built on the meta device and the translated tensors are assigned, so weights
are allocated once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import torch

from ollamapy.engine.config import ModelConfig
from ollamapy.engine.model import Transformer
from ollamapy.loading.families import FAMILIES
from ollamapy.loading.gguf_config import UnsupportedModelError

_GGUF_GLOBAL = {"token_embd.weight": "tok_embeddings.weight",
                "output_norm.weight": "norm.weight", "output.weight": "output.weight"}
_GGUF_LAYER = {
    "attn_norm": "attn_norm", "attn_q": "attn.wq", "attn_k": "attn.wk", "attn_v": "attn.wv",
    "attn_qkv": "attn.wqkv", "attn_output": "attn.wo", "attn_q_norm": "attn.q_norm",
    "attn_k_norm": "attn.k_norm", "post_attention_norm": "post_attn_norm",
    "attn_sinks": "attn.sinks",
    "ffn_norm": "ffn_norm", "ffn_gate": "ffn.w_gate", "ffn_up": "ffn.w_up",
    "ffn_down": "ffn.w_down", "post_ffw_norm": "post_ffn_norm",
    # mixture of experts: the router and each projection's (n_experts, out, in) stack
    "ffn_gate_inp": "ffn.router", "ffn_gate_exps": "ffn.w_gate", "ffn_up_exps": "ffn.w_up",
    "ffn_down_exps": "ffn.w_down",
}
_HF_GLOBAL = {"model.embed_tokens.weight": "tok_embeddings.weight",
              "model.norm.weight": "norm.weight", "lm_head.weight": "output.weight"}
_HF_LAYER = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn.wq", "self_attn.k_proj": "attn.wk",
    "self_attn.v_proj": "attn.wv", "self_attn.o_proj": "attn.wo",
    "self_attn.q_norm": "attn.q_norm", "self_attn.k_norm": "attn.k_norm",
    "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffn_norm",
    "mlp.gate_proj": "ffn.w_gate", "mlp.up_proj": "ffn.w_up", "mlp.down_proj": "ffn.w_down",
    "self_attn.qkv_proj": "attn.wqkv", "mlp.gate_up_proj": "ffn.w_gate_up",
    "mlp.gate": "ffn.router", "block_sparse_moe.gate": "ffn.router", "mlp.router": "ffn.router",
}
# per-expert matrices of an MoE folder: qwen3moe's mlp.experts.E.gate_proj, Mixtral's
# block_sparse_moe.experts.E.w1 (gate), w3 (up), w2 (down)
_HF_EXPERT = re.compile(r"model\.layers\.(\d+)\.(?:mlp|block_sparse_moe)\.experts\.(\d+)\."
                        r"(gate_proj|up_proj|down_proj|w1|w3|w2)\.weight")
_HF_EXPERT_PART = {"gate_proj": "w_gate", "w1": "w_gate", "up_proj": "w_up", "w3": "w_up",
                   "down_proj": "w_down", "w2": "w_down"}
# gpt-oss keeps all experts of a projection in one input-major tensor, (E, in, out), gate and
# up interleaved in gate_up_proj's columns; biases (E, out); split by split_experts
_HF_FUSED_EXPERTS = re.compile(r"model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)"
                               r"(_bias)?")
_HF_SINKS = re.compile(r"model\.layers\.(\d+)\.self_attn\.sinks")
_GGUF_BLOCK = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
_HF_BLOCK = re.compile(r"model\.layers\.(\d+)\.([\w.]+)\.(weight|bias)")


def gguf_rename(name: str, top: dict[str, str], layer: dict[str, str], what: str) -> str:
    """A GGUF tensor name → ours through one format's maps: `top` for whole-model tensors,
    `layer` for the part after `blk.N.`."""
    if name in top:
        return top[name]
    m = _GGUF_BLOCK.fullmatch(name)
    if m and m[2] in layer:
        return f"layers.{m[1]}.{layer[m[2]]}.{m[3]}"
    raise UnsupportedModelError(f"unexpected tensor {name!r} in {what}")


def gguf_name(name: str, config: ModelConfig) -> str:
    ours = gguf_rename(name, _GGUF_GLOBAL, _GGUF_LAYER, "GGUF")
    if ours.endswith(".ffn.w_up.weight") and FAMILIES[config.arch].fused_gate_up:
        return ours.replace(".w_up.", ".w_gate_up.")
    if ".post_attn_norm." in ours and config.norms == "pre":  # gpt-oss: the MLP's input norm
        return ours.replace(".post_attn_norm.", ".ffn_norm.")
    return ours


def hf_name(name: str, config: ModelConfig) -> str:
    name = name.removeprefix("language_model.")  # gemma3 multimodal checkpoints
    if name in _HF_GLOBAL:
        return _HF_GLOBAL[name]
    if m := _HF_EXPERT.fullmatch(name):  # one expert's matrix: stacked by stack_experts
        return f"layers.{m[1]}.ffn.{_HF_EXPERT_PART[m[3]]}.weight.{m[2]}"
    if m := _HF_FUSED_EXPERTS.fullmatch(name):
        stem = m[2].removesuffix("_proj")  # gate_up, down
        return f"layers.{m[1]}.ffn.{stem}_exps_t.{'bias' if m[3] else 'weight'}"
    if m := _HF_SINKS.fullmatch(name):
        return f"layers.{m[1]}.attn.sinks.weight"
    m = _HF_BLOCK.fullmatch(name)
    if m and m[2] == "post_attention_layernorm":
        # gemma and olmo2 norm the attention output with it; llama/qwen the MLP input
        post = config.norms != "pre"
        return f"layers.{m[1]}.{'post_attn_norm' if post else 'ffn_norm'}.{m[3]}"
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


def split_experts(our_name: str, t: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
    """gpt-oss's input-major expert tensors → the model's (E, out, in) parts; others pass as
    they are."""
    if ".ffn.gate_up_exps_t." in our_name:  # (E, in, 2 ffn) / (E, 2 ffn), gate/up interleaved
        t = t.transpose(1, 2) if t.dim() == 3 else t
        stem = our_name.replace(".gate_up_exps_t.", ".{}.")
        yield stem.format("w_gate"), t[:, 0::2].contiguous()
        yield stem.format("w_up"), t[:, 1::2].contiguous()
    elif ".ffn.down_exps_t." in our_name:  # (E, ffn, dim) → (E, dim, ffn)
        yield (our_name.replace(".down_exps_t.", ".w_down."),
               t.transpose(1, 2).contiguous() if t.dim() == 3 else t)
    else:
        yield our_name, t


def stack_experts(tensors: Iterator[tuple[str, torch.Tensor]]
                  ) -> Iterator[tuple[str, torch.Tensor]]:
    """Per-expert matrices (`….w_gate.weight.E`, from hf_name) → one (n_experts, out, in)
    tensor per projection; other tensors pass as they are."""
    experts: dict[str, dict[int, torch.Tensor]] = {}
    for name, t in tensors:
        stem, _, index = name.rpartition(".")
        if index.isdigit() and stem.endswith(".weight"):
            experts.setdefault(stem, {})[int(index)] = t
        else:
            yield name, t
    for stem, parts in experts.items():
        if sorted(parts) != list(range(len(parts))):
            raise UnsupportedModelError(f"{stem}: experts {sorted(parts)[:8]}… are not 0..n-1")
        yield stem, torch.stack([parts[e] for e in range(len(parts))])


def gguf_row_order(our_name: str, config: ModelConfig) -> torch.Tensor | None:
    """The order that puts a llama-family GGUF's q or k rows (weight or bias) back in the
    rotate-half layout; None for every other tensor. Both paths apply it: the reference to
    the dequantized tensor, the fast path to the quantized rows."""
    if not FAMILIES[config.arch].interleaved_qk:
        return None
    heads = (config.n_heads if ".attn.wq." in our_name else
             config.n_kv_heads if ".attn.wk." in our_name else None)
    return None if heads is None else unpermute_qk(torch.arange(heads * config.head_dim), heads)


def fix_gguf_tensor(our_name: str, t: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    order = gguf_row_order(our_name, config)
    return t if order is None else t[order]


def fix_hf_tensor(our_name: str, t: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    if FAMILIES[config.arch].norm_plus_one and "norm." in our_name:
        return t.float() + 1.0  # gemma's RMSNorm multiplies by (1 + w)
    return t


_FUSED = {".attn.wqkv.": (".attn.wq.", ".attn.wk.", ".attn.wv."),
          ".ffn.w_gate_up.": (".ffn.w_gate.", ".ffn.w_up.")}


def fuse_projections(state: dict[str, torch.Tensor], config: ModelConfig
                     ) -> dict[str, torch.Tensor]:
    """Join each layer's q, k, v (and a dense feed-forward's gate, up) weights and biases into
    the model's one matmul, rows in that order; a file that already stores them fused (phi3)
    passes as it is. An MoE layer's experts stay separate (`engine/moe.py`)."""
    for i in range(config.n_layers):
        for fused, parts in _FUSED.items():
            if fused == ".ffn.w_gate_up." and config.n_experts:
                continue
            for kind in ("weight", "bias"):
                names = [f"layers.{i}{part}{kind}" for part in parts]
                if all(name in state for name in names):
                    state[f"layers.{i}{fused}{kind}"] = torch.cat([state.pop(n) for n in names])
    return state


def build_transformer(config: ModelConfig, tensors: Iterator[tuple[str, torch.Tensor]],
                      device: torch.device | str, dtype: torch.dtype) -> Transformer:
    """Assemble a Transformer from (our_name, tensor) pairs without allocating twice."""
    with torch.device("meta"):
        model = Transformer(config)
    state = fuse_projections({name: t.to(device=device, dtype=dtype) for name, t in tensors},
                             config)
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
