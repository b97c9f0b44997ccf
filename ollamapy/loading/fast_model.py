"""A GGUF decoder whose weights stay quantized: the fast path's model, built from the bytes.

The same `Transformer`, with its linear layers swapped for the kernels' quantized ones
(`ollamapy.engine.kernels`, policy in `kernels/policy.py`, the bytes turned into rows by
`gguf_rows.py`: Q4_K and Q6_K kept in their own blocks where a kernel reads them, Q4_x
otherwise repacked code for code into torch's int4 layout, other types int8 per row) before
any float copy of them exists:

- q, k and v become the model's one `attn.wqkv` matmul, gate and up its `ffn.w_gate_up`,
  when their parts share a form or the file already fuses them (phi3); parts of different
  forms (a Q4_K_M file's Q6_K v beside Q4_K q and k) stay separate layers read side by side
  (`SideBySide`); llama's q/k row order is undone on the rows before packing;
- an MoE layer's experts stay int8 (`Int8Experts`), its router float (routing is a top-k:
  a rounding there would change which experts run);
- the token embedding stays in its stored rows (dequantized per looked-up token); a tied
  output head reads the same table where its blocks are kept (Q4_K, Q6_K), else gets its
  own quantized copy (int8 from the embedding's bytes);
- norms and biases are small: dequantized to the residual stream's dtype;
- decode steps attend through the kernels' one-query attention where the device has one.
Activations, the residual stream and attention stay in `dtype` (float32 on CPU; the KV
cache's type is the loader's choice, `ollamapy.loaded.load`'s kv_cache_type); each quantized
layer takes its input as its kernel needs it (bf16 for torch's, int8 steps for the VNNI ones).
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
    columns,
    concat_rows,
    convert_rows,
    form,
    pack,
    span_attention,
)
from ollamapy.engine.model import Transformer
from ollamapy.engine.tensor_parallel import (
    AllReduced,
    Part,
    Split,
    shard_config,
    share,
    split_of,
    split_tensor,
)
from ollamapy.loading.gguf import GGUFFile
from ollamapy.loading.gguf_config import UnsupportedModelError, is_decoder_weight
from ollamapy.loading.gguf_rows import gguf_embedding, gguf_rows, quantize_head
from ollamapy.loading.weights import fix_gguf_tensor, gguf_name, gguf_row_order


class SideBySide(nn.Module):
    """Linear layers read as one: x → their outputs concatenated, for a fused projection
    whose parts are stored in different forms."""

    def __init__(self, parts: list[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([part(x) for part in self.parts], dim=-1)


def _joined(parts: list[QuantRows], biases: list[torch.Tensor | None], device: torch.device
            ) -> nn.Module:
    """One layer for parts of one form; parts of different forms side by side (a conversion
    would lose what the stored types keep)."""
    if len({form(p) for p in parts}) == 1:
        present = [b for b in biases if b is not None]
        return pack(concat_rows(parts), bias=torch.cat(present) if present else None,
                    device=device)
    return SideBySide([pack(p, bias=b, device=device) for p, b in zip(parts, biases, strict=True)])


def _split_rows(rows: QuantRows, split: Split | None) -> QuantRows:
    """A rank's share of rows (`split_of`); columns that would cut an int4 group or a block
    in two are taken from the weight as int8 (one scale per row: any columns)."""
    if split is None:
        return rows
    if split[0] == "rows":
        assert isinstance(split[1], torch.Tensor)
        return rows.permute_rows(split[1])
    assert isinstance(split[1], slice)
    start, stop = split[1].start, split[1].stop
    try:
        return columns(rows, start, stop)
    except ValueError:
        return columns(convert_rows(rows, "int8"), start, stop)


def build_fast_transformer(gguf: GGUFFile, config: ModelConfig, device: torch.device,
                           dtype: torch.dtype, policy: Policy = DEFAULT_POLICY,
                           part: Part | None = None) -> Transformer:
    """part: only this tensor-parallel rank's share of each layer (engine/tensor_parallel.py),
    cut from the rows before they are packed; wo and w_down sum over its group."""
    stored = {gguf_name(name, config): name for name in filter(is_decoder_weight, gguf.tensors)}
    mine = share(config, part.rank, part.world) if part else None

    def split(ours: str) -> Split | None:
        return None if mine is None else split_of(ours, config, mine)

    def rows(ours: str) -> QuantRows:
        info = gguf.tensors[stored[ours]]
        r = gguf_rows(gguf.raw(stored[ours]), info.type_name, info.shape, policy, device)
        order = gguf_row_order(ours, config)
        return _split_rows(r if order is None else r.permute_rows(order), split(ours))

    def dense(ours: str) -> torch.Tensor:
        t = split_tensor(fix_gguf_tensor(ours, gguf.tensor(stored[ours]), config), split(ours))
        return t.contiguous().to(device=device, dtype=dtype)

    def bias(weight: str) -> torch.Tensor | None:
        name = weight.replace(".weight", ".bias")
        return dense(name) if name in stored else None

    def layer(ours: str) -> nn.Module:
        return pack(rows(ours), bias=bias(ours), device=device)

    def summed(ours: str) -> nn.Module:
        """A row-parallel projection (wo, w_down): under tensor parallelism this rank's
        inputs, summed over the group, the bias added once."""
        if part is None:
            return layer(ours)
        return AllReduced(pack(rows(ours), device=device), bias(ours), part.group)

    def fused(ours: str, parts: tuple[str, ...]) -> nn.Module:
        """The model's fused projection: stored so (phi3), or joined from its parts."""
        if ours in stored:
            return layer(ours)
        return _joined([rows(p) for p in parts], [bias(p) for p in parts], device)

    def experts(ours: str) -> Int8Experts:
        info = gguf.tensors[stored[ours]]
        n_experts, *shape = info.shape  # (E, N, K): each expert's blocks are contiguous
        raw = gguf.raw(stored[ours]).view(n_experts, -1)
        return Int8Experts([gguf_rows(raw[e], info.type_name, (shape[0], shape[1]), policy)
                            for e in range(n_experts)], device, bias(ours))

    ours = shard_config(config, part.rank, part.world) if part else config
    with torch.device("meta"):
        model = Transformer(ours)
    kernel = span_attention(device, ours.n_heads, ours.n_kv_heads, ours.head_dim)
    for i, block in enumerate(model.layers):
        attn, ffn, p = block.attn, block.ffn, f"layers.{i}."
        attn.kernel = kernel
        attn.wqkv = fused(p + "attn.wqkv.weight",
                          tuple(p + f"attn.{w}.weight" for w in ("wq", "wk", "wv")))
        attn.wo = summed(p + "attn.wo.weight")
        if config.n_experts:  # the router stays on the meta device: loaded dense below
            ffn.w_gate, ffn.w_up, ffn.w_down = (experts(p + f"ffn.{w}.weight")
                                                for w in ("w_gate", "w_up", "w_down"))
        else:
            ffn.w_gate_up = fused(p + "ffn.w_gate_up.weight",
                                  (p + "ffn.w_gate.weight", p + "ffn.w_up.weight"))
            ffn.w_down = summed(p + "ffn.w_down.weight")

    embd = gguf.tensors[stored["tok_embeddings.weight"]]
    table = gguf.raw(embd.name)  # read once: a tied head is made from the same bytes
    model.tok_embeddings = gguf_embedding(table.to(device), embd.type_name, embd.shape, dtype)
    model.output = quantize_head(table, embd.type_name, embd.shape, device=device,
                                 policy=policy) \
        if config.tied_embeddings else layer("output.weight")
    del table

    # what is left on the meta device: norms, q/k norms and MoE routers, dequantized as they are
    rest = {name: dense(name) for name, t in model.state_dict().items() if t.is_meta}
    model.load_state_dict(rest, assign=True, strict=False)
    if left := [n for n, t in model.state_dict().items() if t.is_meta]:
        raise UnsupportedModelError(f"no weights for {left[:5]}")
    model.init_rope()
    return model.eval()
