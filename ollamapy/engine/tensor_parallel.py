"""Tensor parallelism over torch.distributed (Megatron-LM's split): one decoder across the W
ranks of a process group, each holding about 1/W of every layer.

A rank keeps its share of the attention heads (the q rows of its heads, the k and v rows of
its kv heads, the matching columns of the output projection) and of the feed-forward's hidden
units (its rows of gate and up, its columns of down). Embeddings, norms and the output head
are whole on every rank. Attention and the feed-forward then each give a rank a partial sum
of the residual update, and one all-reduce completes it:

    x ─ norm ─ attention (its heads) ─ wo (its columns) ─ all-reduce ─ + ─ norm ─
      ─ gate/up (its units) ─ down (its columns) ─ all-reduce ─ +

Every rank runs the same forward on the same tokens, so each samples the same logits; its KV
cache holds its own kv heads (`part.config` is the config to build it from). Shares are as
even as the layout allows (`share`): whole kv groups per rank, or, with fewer kv heads than
ranks, a kv head held by several ranks that split its query heads. gloo runs the all-reduce
on CPU, NCCL on CUDA; nothing here depends on which.

    part = shard(model, rank, world)     # after dist.init_process_group(...)
    logits = part(tokens, 0, KVCache(part.config, num_ctx))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class Share:
    """What one rank holds: ranges of the query heads, the kv heads they read and the
    feed-forward's hidden units."""

    heads: range
    kv_heads: range
    units: range


def share(config: ModelConfig, rank: int, world: int) -> Share:
    """Rank `rank`'s share of the layers, as even as the layout allows.

    With at least as many kv heads as ranks, each rank takes whole kv groups (a kv head and
    the query heads it serves), one more on some ranks when they do not divide (smollm2's 3
    over 2 ranks: 1 and 2). With fewer, each kv head is held by world / n_kv_heads ranks,
    which split its query heads (gemma3's one kv head and 4 heads over 2 ranks: 2 heads and
    the kv head each). Hidden units split as evenly as they divide."""
    h, kv, f = config.n_heads, config.n_kv_heads, config.ffn_dim
    group = h // kv
    if kv >= world:
        kv_heads = range(rank * kv // world, (rank + 1) * kv // world)
        heads = range(kv_heads.start * group, kv_heads.stop * group)
    elif world % kv == 0 and group % (world // kv) == 0:
        holders = world // kv  # ranks that hold each kv head
        k, per = rank // holders, group // holders
        kv_heads = range(k, k + 1)
        heads = range(k * group + rank % holders * per, k * group + (rank % holders + 1) * per)
    else:
        raise ValueError(f"tensor parallel: {h} attention heads over {kv} kv heads do not "
                         f"split {world} ways")
    return Share(heads, kv_heads, range(rank * f // world, (rank + 1) * f // world))


def shard_config(config: ModelConfig, rank: int, world: int) -> ModelConfig:
    """The config of one rank's part: its heads, kv heads and hidden units."""
    if config.n_experts:
        raise ValueError("tensor parallel: mixture-of-experts layers are not split yet")
    if config.qk_norm == "all":  # one norm over every head's q (olmo2): it needs them all
        raise ValueError("tensor parallel: a q/k norm over the whole projection cannot split")
    mine = share(config, rank, world)
    return dataclasses.replace(config, n_heads=len(mine.heads), n_kv_heads=len(mine.kv_heads),
                               ffn_dim=len(mine.units))


@torch.no_grad()
def shard(model: Transformer, rank: int, world: int,
          group: dist.ProcessGroup | None = None) -> Transformer:
    """Rank `rank`'s part of `model` (the float reference model, its weights whole): a
    Transformer of `shard_config(model.config, rank, world)` whose wo and w_down sum over
    group."""
    c, mine = model.config, share(model.config, rank, world)
    with torch.device("meta"):
        part = Transformer(shard_config(c, rank, world))
    state = dict(model.state_dict())
    hd, q_all, kv_all = c.head_dim, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim

    def rows(t: torch.Tensor, start: int, taken: range, size: int = 1) -> torch.Tensor:
        return t[start + taken.start * size:start + taken.stop * size]

    for i in range(c.n_layers):
        p = f"layers.{i}."
        for name in ("attn.wqkv.weight", "attn.wqkv.bias"):  # rows: q, then k, then v
            if p + name in state:
                t = state[p + name]
                state[p + name] = torch.cat([rows(t, 0, mine.heads, hd),
                                             rows(t, q_all, mine.kv_heads, hd),
                                             rows(t, q_all + kv_all, mine.kv_heads, hd)])
        state[p + "attn.wo.weight"] = rows(state[p + "attn.wo.weight"].T, 0, mine.heads, hd).T
        if p + "attn.sinks.weight" in state:
            state[p + "attn.sinks.weight"] = rows(state[p + "attn.sinks.weight"], 0, mine.heads)
        up = state[p + "ffn.w_gate_up.weight"]  # rows: gate, then up
        state[p + "ffn.w_gate_up.weight"] = torch.cat([rows(up, 0, mine.units),
                                                       rows(up, c.ffn_dim, mine.units)])
        state[p + "ffn.w_down.weight"] = rows(state[p + "ffn.w_down.weight"].T, 0, mine.units).T
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
                   if t.is_meta]:
        raise ValueError(f"tensor parallel: no weights for {missing}")
    return part


def _without_bias(linear: nn.Module) -> nn.Module:
    if not isinstance(linear, Linear):
        raise ValueError(f"tensor parallel splits the float reference model, not {linear}")
    linear.bias = None
    return linear
