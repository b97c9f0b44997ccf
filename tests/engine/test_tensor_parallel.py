"""Tensor parallelism (engine/tensor_parallel.py): two gloo ranks on this CPU, each holding half
of a tiny model's heads and feed-forward units, give the whole model's logits, cached decode
steps included, for the layouts that split differently (grouped kv heads; q/k/v biases;
per-head q/k norms, sandwich norms and a sliding window)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ollamapy.engine.kv_cache import KVCache
from ollamapy.engine.tensor_parallel import shard, shard_config
from tests.engine.hf_tiny import VOCAB, tiny_hf_model
from tests.engine.test_model_vs_hf import ours_from_hf

ARCHS = ("llama", "qwen2", "gemma3")
WORLD = 2


def _rank(rank: int, store: str, out: str) -> None:
    """One rank: for each layout, the whole model's logits and its own part's, prompt then
    three cached decode steps → saved to out (rank 0)."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=WORLD)
    torch.set_num_threads(1)
    try:
        results = {}
        for arch in ARCHS:
            whole = ours_from_hf(tiny_hf_model(arch, seed=5))
            part = shard(whole, rank, WORLD)
            ids = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(2))
            got, want = [], []
            for model, logits in ((whole, want), (part, got)):
                cache = KVCache(model.config, 16, dtype=model.kv_dtype)
                logits.append(model(ids, 0, cache))
                for pos in range(12, 15):
                    token = logits[-1].argmax(-1, keepdim=True)  # (1, 1)
                    logits.append(model(token, pos, cache))
            results[arch] = (torch.stack(want), torch.stack(got))
            assert part.config.n_heads == whole.config.n_heads // WORLD
        if rank == 0:
            torch.save(results, out)
        dist.barrier()  # neither leaves the group while the other still talks to it
    finally:
        dist.destroy_process_group()


def test_two_ranks_give_the_whole_models_logits(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "results.pt"
    # the ranks are fresh interpreters that import this module, with the parent's sys.path
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    mp.spawn(_rank, args=(str(tmp_path / "store"), str(out)), nprocs=WORLD)
    for arch, (want, got) in torch.load(out).items():
        # the same sums, split in two and added: float32 rounding apart
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5, msg=arch)
        assert torch.equal(got.argmax(-1), want.argmax(-1)), arch


def test_layouts_that_do_not_split_are_refused() -> None:
    config = ours_from_hf(tiny_hf_model("llama", seed=5)).config  # 4 heads, 2 kv heads
    assert shard_config(config, 2).n_kv_heads == 1
    with pytest.raises(ValueError, match="2 kv heads do not split 4 ways"):
        shard_config(config, 4)
