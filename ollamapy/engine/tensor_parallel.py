"""Tensor parallelism over torch.distributed (Megatron-LM's split): one model across the W
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
ranks, a kv head held by several ranks that split its query heads. The fast loader cuts the
same shares from the quantized rows (`split_of` says where each weight is cut); a BERT
encoder splits the same way (`shard_encoder`). gloo runs the all-reduce on CPU, NCCL on CUDA;
nothing here depends on which.

    part = shard(model, rank, world)     # after dist.init_process_group(...)
    logits = part(tokens, 0, KVCache(part.config, num_ctx))
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ollamapy.engine.bert import BertEncoder
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


@dataclass(frozen=True)
class Part:
    """Which part of a model a process holds: rank `rank` of `world`, its all-reduces over
    `group` (None: the default group)."""

    rank: int
    world: int
    group: dist.ProcessGroup | None = None


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


Split = tuple[str, torch.Tensor | slice]  # ("rows", index) or ("columns", slice)


def split_tensor(t: torch.Tensor, split: Split | None) -> torch.Tensor:
    """A whole (N, K) weight or (N,) vector → this rank's share of it, as `split_of` says."""
    if split is None:
        return t
    return t[split[1]] if split[0] == "rows" else t[:, split[1]]


def split_of(name: str, config: ModelConfig, mine: Share) -> Split | None:
    """How one weight of a decoder (our name: the reference model's fused ones, or their
    parts as a file stores them) is split: ("rows", the rank's output rows), ("columns", its
    inputs) or None, whole on every rank (embeddings, norms, the head, the biases that
    AllReduced adds once)."""
    parts = name.split(".")  # layers.<i>.attn.wq.weight, layers.<i>.ffn.w_down.bias, ...
    if len(parts) != 5 or parts[2] not in ("attn", "ffn"):
        return None
    block, kind, what = parts[2:]
    hd, f = config.head_dim, config.ffn_dim
    q_all, kv_all = config.n_heads * hd, config.n_kv_heads * hd
    heads = torch.arange(mine.heads.start * hd, mine.heads.stop * hd)
    kv = torch.arange(mine.kv_heads.start * hd, mine.kv_heads.stop * hd)
    units = torch.arange(mine.units.start, mine.units.stop)
    if block == "attn":
        if kind == "wo":
            return ("columns", slice(mine.heads.start * hd, mine.heads.stop * hd)) \
                if what == "weight" else None
        rows = {"wq": heads, "wk": kv, "wv": kv,
                "wqkv": torch.cat([heads, q_all + kv, q_all + kv_all + kv]),
                "sinks": torch.arange(mine.heads.start, mine.heads.stop)}.get(kind)
    else:
        if kind == "w_down":
            return ("columns", slice(mine.units.start, mine.units.stop)) \
                if what == "weight" else None
        rows = {"w_gate": units, "w_up": units,
                "w_gate_up": torch.cat([units, f + units])}.get(kind)
    return None if rows is None else ("rows", rows)


@torch.no_grad()
def shard(model: Transformer, rank: int, world: int,
          group: dist.ProcessGroup | None = None) -> Transformer:
    """Rank `rank`'s part of `model` (the float reference model, its weights whole): a
    Transformer of `shard_config(model.config, rank, world)` whose wo and w_down sum over
    group."""
    c, mine = model.config, share(model.config, rank, world)
    with torch.device("meta"):
        part = Transformer(shard_config(c, rank, world))
    state = {name: split_tensor(t, split_of(name, c, mine))
             for name, t in model.state_dict().items()}
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


@torch.no_grad()
def shard_encoder(model: BertEncoder, rank: int, world: int,
                  group: dist.ProcessGroup | None = None) -> BertEncoder:
    """Rank `rank`'s part of a BERT encoder: its heads' q, k and v rows and wo columns, its
    feed-forward units' rows of up (and gate) and columns of down, as in a decoder; the
    embeddings and LayerNorms whole. (The whole model is copied first: encoders are small.)"""
    c = model.config
    heads = range(rank * c.n_heads // world, (rank + 1) * c.n_heads // world)
    units = range(rank * c.ffn_dim // world, (rank + 1) * c.ffn_dim // world)
    if not heads or not units:
        raise ValueError(f"tensor parallel: {c.n_heads} heads do not split {world} ways")
    cols = slice(heads.start * c.head_dim, heads.stop * c.head_dim)
    hidden = slice(units.start, units.stop)
    part = copy.deepcopy(model)
    for layer in part.layers:
        attn, ffn = layer.attn, layer.ffn
        for linear in (attn.wq, attn.wk, attn.wv):
            _keep(linear, rows=cols)
        for linear in (ffn.w_gate, ffn.w_up):
            if linear is not None:
                _keep(linear, rows=hidden)
        attn.n_heads = len(heads)
        attn.wo = AllReduced(*_keep(attn.wo, columns=cols), group)
        ffn.w_down = AllReduced(*_keep(ffn.w_down, columns=hidden), group)
    return part


def _keep(linear: nn.Module, *, rows: slice | None = None, columns: slice | None = None
          ) -> tuple[nn.Module, torch.Tensor | None]:
    """A float Linear cut to these output rows (its bias with them) or input columns (its
    bias, whole, taken out and returned for AllReduced to add once)."""
    if not isinstance(linear, Linear):
        raise ValueError(f"tensor parallel splits float layers, not {linear}")
    bias = linear.bias
    if rows is not None:
        linear.weight = nn.Parameter(linear.weight[rows].contiguous(), requires_grad=False)
        if bias is not None:
            linear.bias = nn.Parameter(bias[rows].contiguous(), requires_grad=False)
        return linear, None
    linear.weight = nn.Parameter(linear.weight[:, columns].contiguous(), requires_grad=False)
    linear.bias = None
    return linear, None if bias is None else bias.detach()


def _without_bias(linear: nn.Module) -> nn.Module:
    if not isinstance(linear, Linear):
        raise ValueError(f"tensor parallel splits the float reference model, not {linear}")
    linear.bias = None
    return linear
