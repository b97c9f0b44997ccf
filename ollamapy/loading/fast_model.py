"""A GGUF decoder whose weights stay quantized: the fast path's model, built from the bytes.

The same `Transformer`, with its linear layers swapped for the kernels' quantized ones
(`ollamapy.engine.kernels`, policy in `kernels/policy.py`, the bytes turned into rows by
`gguf_rows.py`: Q4_x repacked code for code into torch's int4 layout, other types int8 per
row) before any float copy of them exists:

- q, k and v become one matmul (`attn.wqkv`), gate and up another (`ffn.w_gate_up`), when
  their parts share a form or the file already fuses them (phi3); llama's q/k row order is
  undone on the rows before packing;
- an MoE layer's experts stay int8 (`Int8Experts`), its router float (routing is a top-k:
  a rounding there would change which experts run);
- the token embedding stays in its stored rows (dequantized per looked-up token), and a tied
  output head gets its own quantized copy (int8 from the embedding's bytes);
- norms and biases are small: dequantized to the residual stream's dtype.
Activations, the residual stream, attention and the KV cache stay in `dtype` (float32 on
CPU); each quantized layer casts to bfloat16 at its input, where the kernels are fast.
"""

from __future__ import annotations

import torch
from torch import nn

from ollamapy.engine.config import ModelConfig
from ollamapy.engine.kernels import (
    DEFAULT_POLICY,
    Int8Experts,
    Policy,
    QuantRows,
    concat_rows,
    pack,
)
from ollamapy.engine.model import Transformer
from ollamapy.loading.families import FAMILIES
from ollamapy.loading.gguf import GGUFFile
from ollamapy.loading.gguf_config import UnsupportedModelError, is_decoder_weight
from ollamapy.loading.gguf_rows import gguf_embedding, gguf_rows, quantize_head
from ollamapy.loading.weights import fix_gguf_tensor, gguf_name, unpermute_qk


def _fused(parts: list[QuantRows], bias: list[torch.Tensor] | None,
           device: torch.device) -> nn.Module | None:
    """One layer for parts of one form (q/k/v, gate/up); None when their forms differ (a
    conversion would lose what the stored types keep)."""
    if len({type(p) for p in parts}) != 1:
        return None
    return pack(concat_rows(parts), bias=torch.cat(bias) if bias else None, device=device)


def _qkv(attn: nn.Module, q: QuantRows, k: QuantRows, v: QuantRows,
         biases: list[torch.Tensor] | None, device: torch.device) -> None:
    """q, k and v as one layer (`attn.wqkv`) when they share a form, else three."""
    fused = _fused([q, k, v], biases, device)
    if fused is not None:
        attn.wqkv = fused
        del attn.wq, attn.wk, attn.wv
        return
    for name, part, b in zip(("wq", "wk", "wv"), (q, k, v), biases or [None] * 3, strict=True):
        setattr(attn, name, pack(part, bias=b, device=device))


def _gate_up(ffn: nn.Module, gate: QuantRows, up: QuantRows, device: torch.device) -> None:
    """gate and up as one layer (`ffn.w_gate_up`) when they share a form, else two."""
    fused = _fused([gate, up], None, device)
    if fused is not None:
        ffn.w_gate_up = fused
        del ffn.w_gate, ffn.w_up
    else:
        ffn.w_gate, ffn.w_up = pack(gate, device=device), pack(up, device=device)


def build_fast_transformer(gguf: GGUFFile, config: ModelConfig, device: torch.device,
                           dtype: torch.dtype, policy: Policy = DEFAULT_POLICY) -> Transformer:
    stored = {gguf_name(name, config): name for name in filter(is_decoder_weight, gguf.tensors)}

    def rows(ours: str) -> QuantRows:
        info = gguf.tensors[stored[ours]]
        return gguf_rows(gguf.raw(stored[ours]), info.type_name, info.shape, policy)

    def experts(ours: str) -> Int8Experts:
        info = gguf.tensors[stored[ours]]
        n_experts, *shape = info.shape  # (E, N, K): each expert's blocks are contiguous
        raw = gguf.raw(stored[ours]).view(n_experts, -1)
        bias = ours.replace(".weight", ".bias")
        return Int8Experts([gguf_rows(raw[e], info.type_name, (shape[0], shape[1]), policy)
                            for e in range(n_experts)], device,
                           dense(bias) if bias in stored else None)

    def dense(ours: str) -> torch.Tensor:
        t = fix_gguf_tensor(ours, gguf.tensor(stored[ours]), config)
        return t.to(device=device, dtype=dtype)

    def layer(ours: str) -> nn.Module:
        bias = ours.replace(".weight", ".bias")
        return pack(rows(ours), bias=dense(bias) if bias in stored else None, device=device)

    with torch.device("meta"):
        model = Transformer(config)
    interleaved = FAMILIES[config.arch].interleaved_qk
    for i, block in enumerate(model.layers):
        attn, ffn, p = block.attn, block.ffn, f"layers.{i}."
        attn.wo = layer(p + "attn.wo.weight")
        if p + "attn.wqkv.weight" in stored:  # stored fused (phi3)
            attn.wqkv = layer(p + "attn.wqkv.weight")
            del attn.wq, attn.wk, attn.wv
        else:
            q, k, v = (rows(p + f"attn.{w}.weight") for w in ("wq", "wk", "wv"))
            if interleaved:  # llama.cpp stores q/k rows as interleaved RoPE pairs
                q = q.permute_rows(unpermute_qk(torch.arange(q.shape[0]), config.n_heads))
                k = k.permute_rows(unpermute_qk(torch.arange(k.shape[0]), config.n_kv_heads))
            biases = [dense(p + f"attn.{w}.bias") for w in ("wq", "wk", "wv")] \
                if config.qkv_bias else None
            _qkv(attn, q, k, v, biases, device)
        if config.n_experts:  # the router stays on the meta device: loaded dense below
            ffn.w_gate, ffn.w_up, ffn.w_down = (experts(p + f"ffn.{w}.weight")
                                                for w in ("w_gate", "w_up", "w_down"))
            continue
        ffn.w_down = layer(p + "ffn.w_down.weight")
        if p + "ffn.w_gate_up.weight" in stored:  # stored fused (phi3)
            ffn.w_gate_up = layer(p + "ffn.w_gate_up.weight")
            del ffn.w_gate, ffn.w_up
        else:
            _gate_up(ffn, rows(p + "ffn.w_gate.weight"), rows(p + "ffn.w_up.weight"), device)

    embd = gguf.tensors[stored["tok_embeddings.weight"]]
    model.tok_embeddings = gguf_embedding(gguf.raw(embd.name).to(device), embd.type_name,
                                          embd.shape, dtype)
    model.output = quantize_head(gguf.raw(embd.name), embd.type_name, embd.shape,
                                 device=device, policy=policy) \
        if config.tied_embeddings else layer("output.weight")

    # what is left on the meta device: norms, q/k norms and MoE routers, dequantized as they are
    rest = {name: dense(name) for name, t in model.state_dict().items() if t.is_meta}
    model.load_state_dict(rest, assign=True, strict=False)
    if left := [n for n, t in model.state_dict().items() if t.is_meta]:
        raise UnsupportedModelError(f"no weights for {left[:5]}")
    model.init_rope()
    return model.eval()
