"""Ollama's num_gpu as a device map (engine/placement.py): which layers go to the accelerator,
and a model run through accelerate's hooks giving its own logits. On this CPU the hooks run
with every layer on the CPU (the path is the same, the moves are no-ops); the split across a
GPU and the CPU is checked where a GPU is present."""

from __future__ import annotations

import pytest
import torch

from ollamapy.engine.batch import Batch
from ollamapy.engine.kv_cache import KVCache
from ollamapy.engine.placement import device_map, offloaded, place
from tests.engine.hf_tiny import VOCAB, tiny_hf_model
from tests.engine.test_model_vs_hf import ours_from_hf


def test_num_gpu_counts_the_last_layers_first_then_the_head() -> None:
    assert [offloaded(n, 30) for n in (-1, 0, 1, 30, 31, 99)] == [31, 0, 1, 30, 31, 31]
    plan = device_map(30, 10, "cuda")
    assert [plan[f"layers.{i}"] for i in range(30)] == ["cpu"] * 20 + ["cuda"] * 10
    assert plan["tok_embeddings"] == plan["norm"] == plan["output"] == "cpu"
    everything = device_map(30, -1, "cuda:1")
    assert {everything[f"layers.{i}"] for i in range(30)} == {"cuda:1"}
    assert everything["norm"] == everything["output"] == "cuda:1"
    assert everything["tok_embeddings"] == everything[""] == "cpu"  # as llama.cpp
    assert set(device_map(30, 0, "mps").values()) == {"cpu"}


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    """A prompt, then three greedy decode steps through a batch's cache → (4, vocab)."""
    batch = Batch(model, slots=2, num_ctx=32)
    cache = batch.cache.slot(0)
    rows = [model(ids, 0, cache)[0]]
    for pos in range(ids.shape[1], ids.shape[1] + 3):
        token = rows[-1].argmax().view(1, 1)
        rows.append(batch.decode(token, torch.tensor([pos]), torch.arange(pos + 1),
                                 batch.cache)[0])
    return torch.stack(rows)


def test_a_placed_model_runs_through_the_hooks_and_gives_its_own_logits() -> None:
    model = ours_from_hf(tiny_hf_model("llama", seed=5))
    ids = torch.randint(0, VOCAB, (1, 9), generator=torch.Generator().manual_seed(4))
    want = _logits(model, ids)
    placed = place(model, 1, "cpu")  # every layer "offloaded" to the CPU: hooks, no moves
    assert hasattr(placed.layers[-1], "_hf_hook") and hasattr(placed, "_hf_hook")
    assert torch.equal(_logits(placed, ids), want)


def test_a_cache_keeps_each_layer_on_its_device() -> None:
    config = ours_from_hf(tiny_hf_model("llama", seed=5)).config
    cache = KVCache(config, 8, batch=2, device=[torch.device("cpu")] * config.n_layers)
    assert len(cache.k) == config.n_layers and cache.slot(1).k[0].shape[0] == 1
    with pytest.raises(ValueError):
        KVCache(config, 8, device=[torch.device("cpu")] * (config.n_layers + 1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none present)")
def test_half_the_layers_on_the_gpu_give_the_cpu_models_logits() -> None:
    model = ours_from_hf(tiny_hf_model("llama", seed=5))
    ids = torch.randint(0, VOCAB, (1, 9), generator=torch.Generator().manual_seed(4))
    want = _logits(model, ids)
    n = len(model.layers)
    placed = place(model, n // 2, "cuda")
    assert placed.cache_devices == [torch.device("cpu")] * (n - n // 2) + \
        [torch.device("cuda", 0)] * (n // 2)
    torch.testing.assert_close(_logits(placed, ids), want, atol=1e-4, rtol=1e-4)
