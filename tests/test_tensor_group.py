"""The device-independent parts of serving a split model (ollamapy/tensor_group.py): which
backend and device each rank gets (NCCL and a GPU a rank on CUDA hosts, gloo on CPU), how
the cores are shared, and how rank 0 names the cache a forward runs on so that a follower
finds its twin. The processes, the group and the mirroring run for real in
tests/e2e/test_tensor_parallel.py and tests/engine/test_tensor_parallel.py."""

from __future__ import annotations

import dataclasses

import torch

from ollamapy.engine.kv_cache import KVCache
from ollamapy.tensor_group import (
    Group,
    Launch,
    _device,
    _local,
    backend_for,
    rank_device,
    threads_per_rank,
)
from tests.engine.hf_tiny import tiny_hf_model
from tests.engine.test_model_vs_hf import ours_from_hf


def test_cuda_ranks_take_nccl_and_a_gpu_each_cpu_ranks_gloo() -> None:
    assert backend_for(torch.device("cuda")) == "nccl"
    assert backend_for(torch.device("cpu")) == "gloo"
    assert [rank_device(torch.device("cuda"), r) for r in range(4)] == [
        torch.device("cuda", r) for r in range(4)]
    assert rank_device(torch.device("cpu"), 3) == torch.device("cpu")
    assert rank_device(torch.device("mps"), 1) == torch.device("mps")


def test_a_rank_takes_its_hosts_gpu_under_torchrun(monkeypatch) -> None:
    """Rank 3 of a job of two hosts with two GPUs each computes on its host's GPU 1 (torchrun's
    LOCAL_RANK), not on GPU 3; one host's followers, started by rank 0, on GPU `rank`."""
    launch = Launch("m.gguf", 4, "store://h:1/p", "cuda", True, "f16", 64, 4, True)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert _device(launch, 3) == torch.device("cuda", 3)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert _device(launch, 3) == torch.device("cuda", 1)
    assert _local() == (1, 2)  # two ranks share this host's cores


def test_one_hosts_cores_are_shared_out() -> None:
    assert threads_per_rank(2, cores=2) == 1
    assert threads_per_rank(2, cores=16) == 8
    assert threads_per_rank(4, cores=2) == 1  # never none


def test_a_forward_names_its_cache_for_the_followers(tmp_path) -> None:
    config = ours_from_hf(tiny_hf_model("llama", seed=5)).config
    launch = Launch("m.gguf", 2, "file:///x", "cpu", True, "f16", 64, 4, True)
    group = Group(launch, tmp_path)
    batch = group.mirrored(KVCache(config, 64, batch=4))
    assert group._cache_key(None) is None  # an uncached forward
    assert group._cache_key(batch) == ("batch", None)  # a decode step over every slot
    assert group._cache_key(batch.slot(2)) == ("batch", 2)  # a prompt chunk in slot 2
    scratch, other = KVCache(config, 10), KVCache(config, 12, batch=2)  # embeddings' own
    first = group._cache_key(scratch)
    assert first[0] == "scratch" and first[2:] == (10, 1)
    assert group._cache_key(scratch) == first  # the same cache: the follower's twin goes on
    assert group._cache_key(other)[1] != first[1] and group._cache_key(other)[2:] == (12, 2)
    assert dataclasses.asdict(launch)["num_ctx"] == 64  # what a follower is started with
