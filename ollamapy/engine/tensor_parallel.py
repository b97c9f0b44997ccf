"""Tensor parallelism over torch.distributed (Megatron-LM's split): one decoder across the W
ranks of a process group, each holding 1/W of every layer.

A rank keeps its share of the attention heads (the q rows of its heads, the k and v rows of
its kv heads, the matching columns of the output projection) and of the feed-forward's hidden
units (its rows of gate and up, its columns of down). Embeddings, norms and the output head
are whole on every rank. Attention and the feed-forward then each give a rank a partial sum
of the residual update, and one all-reduce completes it:

    x ─ norm ─ attention (its heads) ─ wo (its columns) ─ all-reduce ─ + ─ norm ─
      ─ gate/up (its units) ─ down (its columns) ─ all-reduce ─ +

Every rank runs the same forward on the same tokens, so each samples the same logits; its KV
cache holds its own kv heads (`shard_config(...)` is the config to build it from). gloo runs
the all-reduce on CPU, NCCL on CUDA; nothing here depends on which.

    part = shard(model, rank, world)     # after dist.init_process_group(...)
    logits = part(tokens, 0, KVCache(part.config, num_ctx))
"""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist
from torch import nn

from ollamapy.engine.config import ModelConfig
from ollamapy.engine.model import Transformer
from ollamapy.engine.ops import Linear


class AllReduced(nn.Module):
    """A row-parallel projection: this rank's columns of the weight times its share of the
    input, summed over the group, the bias (whole, on every rank) added once after the sum."""

    def __init__(self, linear: nn.Module, bias: torch.Tensor | None,
                 group: dist.ProcessGroup | None = None) -> None:
        super().__init__()
        self.linear, self.group = linear, group
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)  # (..., out_features): this rank's partial sum
        dist.all_reduce(y, group=self.group)
        return y if self.bias is None else y + self.bias


def shard_config(config: ModelConfig, world: int) -> ModelConfig:
    """The config of one rank's part: 1/world of the heads, kv heads and hidden units."""
    for what, n in (("attention heads", config.n_heads), ("kv heads", config.n_kv_heads),
                    ("feed-forward units", config.ffn_dim)):
        if n % world:
            raise ValueError(f"tensor parallel: {n} {what} do not split {world} ways")
    if config.n_experts:
        raise ValueError("tensor parallel: mixture-of-experts layers are not split yet")
    if config.qk_norm == "all":  # one norm over every head's q (olmo2): it needs them all
        raise ValueError("tensor parallel: a q/k norm over the whole projection cannot split")
    return dataclasses.replace(config, n_heads=config.n_heads // world,
                               n_kv_heads=config.n_kv_heads // world,
                               ffn_dim=config.ffn_dim // world)


@torch.no_grad()
def shard(model: Transformer, rank: int, world: int,
          group: dist.ProcessGroup | None = None) -> Transformer:
    """Rank `rank`'s part of `model` (the float reference model, its weights whole): a
    Transformer of `shard_config(model.config, world)` whose wo and w_down sum over group."""
    c, part_config = model.config, shard_config(model.config, world)
    h, kv, f, hd = part_config.n_heads, part_config.n_kv_heads, part_config.ffn_dim, c.head_dim
    with torch.device("meta"):
        part = Transformer(part_config)
    state = dict(model.state_dict())

    def rows(t: torch.Tensor, start: int, n: int) -> torch.Tensor:
        return t[start + rank * n:start + (rank + 1) * n]

    for i in range(c.n_layers):
        p = f"layers.{i}."
        q_all, kv_all = c.n_heads * hd, c.n_kv_heads * hd
        for name in ("attn.wqkv.weight", "attn.wqkv.bias"):  # rows: q, then k, then v
            if p + name in state:
                t = state[p + name]
                state[p + name] = torch.cat([rows(t, 0, h * hd), rows(t, q_all, kv * hd),
                                             rows(t, q_all + kv_all, kv * hd)])
        state[p + "attn.wo.weight"] = rows(state[p + "attn.wo.weight"].T, 0, h * hd).T
        if p + "attn.sinks.weight" in state:
            state[p + "attn.sinks.weight"] = rows(state[p + "attn.sinks.weight"], 0, h)
        up = state[p + "ffn.w_gate_up.weight"]  # rows: gate, then up
        state[p + "ffn.w_gate_up.weight"] = torch.cat([rows(up, 0, f),
                                                       rows(up, c.ffn_dim, f)])
        state[p + "ffn.w_down.weight"] = rows(state[p + "ffn.w_down.weight"].T, 0, f).T
    biases = {name: state.pop(name) for name in list(state)
              if name.endswith(("attn.wo.bias", "ffn.w_down.bias"))}
    part.load_state_dict({k: v.contiguous() for k, v in state.items()}, strict=False,
                         assign=True)
    for i, block in enumerate(part.layers):
        p = f"layers.{i}."
        block.attn.wo = AllReduced(_without_bias(block.attn.wo), biases.get(p + "attn.wo.bias"),
                                   group)
        block.ffn.w_down = AllReduced(_without_bias(block.ffn.w_down),
                                      biases.get(p + "ffn.w_down.bias"), group)
    part.kv_dtype = model.kv_dtype
    part.init_rope()
    if missing := [n for n, t in [*part.named_parameters(), *part.named_buffers()]
                   if t.is_meta and n not in ("inv_freq", "inv_freq_local")]:
        raise ValueError(f"tensor parallel: no weights for {missing}")
    return part


def _without_bias(linear: nn.Module) -> nn.Module:
    if not isinstance(linear, Linear):
        raise ValueError(f"tensor parallel splits the float reference model, not {linear}")
    linear.bias = None
    return linear
