"""The decoder families we load: one entry each, for what their files do not say themselves.

GGUF metadata and config.json carry the sizes (`<arch>.block_count`, `hidden_size`, …), read
the same way for every family by gguf_config.py and hf_config.py. What llama.cpp hard-codes per
architecture instead, and the layout quirks of each format, are here, keyed by the GGUF
architecture word (`general.architecture`) and, for safetensors folders, by config.json's
`model_type`. Sources: llama.cpp's src/llama-model.cpp and its converter
(convert_hf_to_gguf.py / conversion/*.py), and transformers' modeling code of each family.
Adding a family is one entry here, plus a tensor name in weights.py if it brings a new one.
This module imports no torch: the store asks it whether a file can run before storing it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ollamapy.engine.config import Activation, NormPlacement, QKNorm
from ollamapy.loading.ggml_types import DEQUANTIZABLE


@dataclass(frozen=True, slots=True)
class Family:
    arch: str  # GGUF general.architecture
    hf_model_types: tuple[str, ...] = ()  # config.json model_type values that are this family
    # llama.cpp's converter stores q/k rows as interleaved RoPE pairs (LlamaModel.permute)
    interleaved_qk: bool = False
    # safetensors keep RMSNorm weights as w and apply 1 + w; GGUFs store 1 + w (gemma)
    norm_plus_one: bool = False
    norms: NormPlacement = "pre"
    qk_norm: QKNorm = "head"  # the kind, where the file has q/k norm weights
    sliding_pattern: int = 0  # every n-th layer attends globally, the others slide
    rope_base_local: float | None = None  # the sliding layers' RoPE base, if their own
    activation: Activation = "silu"
    scale_embeddings: bool = False  # embeddings times sqrt(dim)
    # one ffn_up / gate_up_proj tensor holds the gate rows, then the up rows (phi3)
    fused_gate_up: bool = False
    # at this block count (gemma2 27B: 46, gemma3 27B: 62) llama.cpp scales attention by
    # 1/sqrt(dim / n_heads) instead of 1/sqrt(head_dim), as the checkpoints'
    # query_pre_attn_scalar does; GGUF does not store it
    wide_attn_scale_layers: int = 0


FAMILIES: dict[str, Family] = {f.arch: f for f in (
    Family("llama", ("llama", "mistral", "mixtral"), interleaved_qk=True),
    Family("qwen2", ("qwen2",)),
    Family("qwen3", ("qwen3",)),
    Family("qwen3moe", ("qwen3_moe",)),
    Family("gemma2", ("gemma2",), norm_plus_one=True, norms="sandwich", sliding_pattern=2,
           activation="gelu_tanh", scale_embeddings=True, wide_attn_scale_layers=46),
    Family("gemma3", ("gemma3", "gemma3_text"), norm_plus_one=True, norms="sandwich",
           sliding_pattern=6, rope_base_local=10_000.0, activation="gelu_tanh",
           scale_embeddings=True, wide_attn_scale_layers=62),
    Family("phi3", ("phi3",), fused_gate_up=True),
    Family("granite", ("granite",), interleaved_qk=True),
    Family("olmo2", ("olmo2",), norms="post", qk_norm="all"),
    Family("gpt-oss", ("gpt_oss",), sliding_pattern=2, activation="swiglu_oai"),
)}
HF_FAMILIES: dict[str, Family] = {t: f for f in FAMILIES.values() for t in f.hf_model_types}

# sentence encoders (engine/bert.py): GGUF architectures and config.json model types
ENCODER_ARCHS = ("bert", "nomic-bert")
HF_ENCODER_TYPES = ("bert", "nomic_bert")
# the tensors of Ollama's multimodal files that are not the text model's
VISION_PREFIXES = ("v.", "mm.")


def unsupported_gguf(arch: str, tensor_types: Mapping[str, str]) -> str | None:
    """Why a GGUF model of `arch` with these tensors (name → ggml type) cannot run here, or
    None when it can."""
    if arch not in FAMILIES and arch not in ENCODER_ARCHS:
        return (f"unsupported architecture {arch!r} (supported: "
                f"{', '.join([*FAMILIES, *ENCODER_ARCHS])})")
    for name, type_name in tensor_types.items():
        if type_name not in DEQUANTIZABLE and not name.startswith(VISION_PREFIXES):
            return f"unsupported tensor type {type_name} (tensor {name})"
    return None


def unsupported_folder(model_type: str) -> str | None:
    """Why a safetensors folder of this config.json model_type cannot run here, or None."""
    if model_type in HF_FAMILIES or model_type in HF_ENCODER_TYPES:
        return None
    return (f"unsupported model_type {model_type!r} (supported: "
            f"{', '.join([*HF_FAMILIES, *HF_ENCODER_TYPES])})")
