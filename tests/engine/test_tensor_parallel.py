"""Tensor parallelism (engine/tensor_parallel.py): two gloo ranks on this CPU, each holding its
share of a model's heads and feed-forward units, give the whole model's logits, cached decode
steps included: tiny models of the layouts that split differently (grouped kv heads; q/k/v
biases; per-head q/k norms, sandwich norms and a sliding window) and the real smollm2 (3 kv
heads: 1 and 2 per rank) and gemma3 (1 kv head, held by both ranks). The fast path's parts
are cut from the quantized rows (whole int4 groups and K-quant blocks) and give the whole
fast model's tokens. all-minilm's BERT encoder splits the same way and gives the whole one's
embeddings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ollamapy.engine.kv_cache import KVCache
from ollamapy.engine.tensor_parallel import (
    Part,
    Share,
    shard,
    shard_config,
    shard_encoder,
    share,
    split_of,
)
from tests.conftest import model_path
from tests.engine.hf_tiny import VOCAB, tiny_hf_model
from tests.engine.test_model_vs_hf import ours_from_hf

ARCHS = ("llama", "qwen2", "gemma3")
REAL = ("smollm2-135m.gguf", "gemma3-270m.gguf")
WORLD = 2


def _models():
    """(name, the whole float reference model) for each case."""
    import ollamapy

    for arch in ARCHS:
        yield arch, ours_from_hf(tiny_hf_model(arch, seed=5))
    for file in REAL:
        yield file, ollamapy.load(model_path(file), device="cpu").decoder


def _logits(model, ids: torch.Tensor, steps: int = 3) -> torch.Tensor:
    """The prompt's last logits, then `steps` cached greedy decode steps' → (1 + steps, 1, V)."""
    cache = KVCache(model.config, ids.shape[1] + steps + 1, dtype=model.kv_dtype)
    logits = [model(ids, 0, cache)]
    for pos in range(ids.shape[1], ids.shape[1] + steps):
        logits.append(model(logits[-1].argmax(-1, keepdim=True), pos, cache))  # (1, 1) token
    return torch.stack(logits)


def _rank(rank: int, store: str, out: str) -> None:
    """One rank: for each layout, the whole model's logits and its own part's, prompt then
    cached decode steps → saved to out (rank 0). For the real files also the fast path's:
    the whole quantized model's, its part's, and the float reference's."""
    from ollamapy.loaded import load

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=WORLD)
    torch.set_num_threads(1)
    try:
        results, fast = {}, {}
        for name, whole in _models():
            part = shard(whole, rank, WORLD)
            ids = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(2))
            results[name] = (_logits(whole, ids), _logits(part, ids))
            assert part.config.n_heads < whole.config.n_heads
            if name in REAL:
                ids = torch.randint(0, 4000, (1, 40), generator=torch.Generator().manual_seed(3))
                quantized = load(model_path(name), fast=True, compile=False).decoder
                quantized_part = load(model_path(name), fast=True, compile=False,
                                      part=Part(rank, WORLD)).decoder
                fast[name] = (_logits(quantized, ids, 8), _logits(quantized_part, ids, 8),
                              _logits(whole, ids, 8))
        encoder = load(model_path("all-minilm")).model
        texts = [[101, 7592, 2088, 102], [101, 2023, 2003, 1037, 2936, 6251, 2055, 1996, 2712,
                                          102]]
        part = shard_encoder(encoder, rank, WORLD)
        assert part.layers[0].attn.n_heads == encoder.config.n_heads // WORLD
        results["all-minilm"] = (encoder.embed_ids(texts), part.embed_ids(texts))
        if rank == 0:
            torch.save((results, fast), out)
        dist.barrier()  # neither leaves the group while the other still talks to it
    finally:
        dist.destroy_process_group()


def test_two_ranks_give_the_whole_models_logits(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "results.pt"
    # the ranks are fresh interpreters that import this module, with the parent's sys.path
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    mp.spawn(_rank, args=(str(tmp_path / "store"), str(out)), nprocs=WORLD)
    results, fast = torch.load(out)
    assert sorted(results) == sorted((*ARCHS, *REAL, "all-minilm"))
    assert sorted(fast) == sorted(REAL)
    for name, (want, got) in results.items():
        # the same sums, split in two and added: float32 rounding apart
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5, msg=name)
        assert torch.equal(got.argmax(-1), want.argmax(-1)), name
    for name, (want, got, reference) in fast.items():
        # the quantized parts hold the whole's codes and scales; the partial sums, added in
        # another order, move the next layer's int8 activation steps now and then: a tenth
        # of what quantizing the model at all moves the logits by, and the same tokens
        split_error = (got - want).abs().max()
        assert 0 < split_error < 0.1 * (want - reference).abs().max(), name
        assert torch.equal(got.argmax(-1), want.argmax(-1)), name


def test_each_weight_is_cut_where_its_layer_splits() -> None:
    config = dataclasses.replace(ours_from_hf(tiny_hf_model("llama", seed=5)).config,
                                 n_heads=9, n_kv_heads=3, ffn_dim=1536, head_dim=64)
    mine = share(config, 1, 2)  # heads 3..8, kv heads 1..2, units 768..1535
    kind, rows = split_of("layers.0.attn.wq.weight", config, mine)
    assert kind == "rows" and torch.equal(rows, torch.arange(3 * 64, 9 * 64))
    kind, rows = split_of("layers.3.attn.wqkv.bias", config, mine)  # q, then k, then v rows
    assert torch.equal(rows, torch.cat([torch.arange(192, 576), 576 + torch.arange(64, 192),
                                        768 + torch.arange(64, 192)]))
    assert split_of("layers.0.attn.wo.weight", config, mine) == ("columns", slice(192, 576))
    assert split_of("layers.0.ffn.w_down.weight", config, mine) == ("columns",
                                                                     slice(768, 1536))
    kind, rows = split_of("layers.0.ffn.w_gate_up.weight", config, mine)
    assert torch.equal(rows, torch.cat([torch.arange(768, 1536), 1536 + torch.arange(768, 1536)]))
    for whole in ("layers.0.attn.wo.bias", "layers.0.ffn.w_down.bias", "tok_embeddings.weight",
                  "layers.0.attn_norm.weight", "layers.0.attn.q_norm.weight", "norm.weight",
                  "output.weight"):
        assert split_of(whole, config, mine) is None, whole


def test_shares_are_as_even_as_the_layout_allows() -> None:
    config = ours_from_hf(tiny_hf_model("llama", seed=5)).config  # 4 heads, 2 kv heads
    smollm2 = dataclasses.replace(config, n_heads=9, n_kv_heads=3, ffn_dim=1536)
    gemma3 = dataclasses.replace(config, n_heads=4, n_kv_heads=1, ffn_dim=2048)
    assert [share(smollm2, r, 2) for r in (0, 1)] == [
        Share(range(0, 3), range(0, 1), range(0, 768)),
        Share(range(3, 9), range(1, 3), range(768, 1536))]
    assert [share(gemma3, r, 2) for r in (0, 1)] == [
        Share(range(0, 2), range(0, 1), range(0, 1024)),
        Share(range(2, 4), range(0, 1), range(1024, 2048))]
    assert [share(config, r, 4).heads for r in range(4)] == [range(i, i + 1) for i in range(4)]
    assert shard_config(smollm2, 1, 2).n_heads == 6
    with pytest.raises(ValueError, match="4 attention heads over 2 kv heads do not split 3"):
        share(config, 0, 3)
    with pytest.raises(ValueError, match="mixture-of-experts"):
        shard_config(dataclasses.replace(config, n_experts=4, n_experts_used=2), 0, 2)
