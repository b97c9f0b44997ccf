"""The KV cache's CPU buffers: zeros that cost resident memory only where written.

A cache is allocated for the whole window and every slot at once; on CPU its pages come
from a private anonymous map, so creating it, and reading positions never written (a
shorter row of a batch inside the attention span), leave RSS where it was. Written
positions become resident, and read back what was written."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch

from ollamapy.engine.config import ModelConfig
from ollamapy.engine.kv_cache import KVCache, zeros

STATUS = Path("/proc/self/status")


def rss_mb() -> float:
    for line in STATUS.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def config(n_layers: int = 8) -> ModelConfig:
    return ModelConfig(arch="llama", vocab_size=32, dim=256, n_layers=n_layers, n_heads=4,
                       n_kv_heads=4, head_dim=64, ffn_dim=512, norm_eps=1e-5,
                       context_length=8192, rope_base=10000.0, rope_dim=64)


def test_zeros_are_zeros_of_the_asked_shape_and_type() -> None:
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        t = zeros((2, 3, 5, 4), "cpu", dtype)
        assert t.shape == (2, 3, 5, 4) and t.dtype == dtype and t.is_contiguous()
        assert not t.any()
        t[1, 2, 4] = 1.5
        assert t.sum().item() == 6.0
    assert zeros((0, 4), "cpu", torch.float32).shape == (0, 4)


def test_the_map_lives_as_long_as_a_view_of_it() -> None:
    view = zeros((4, 1024), "cpu", torch.float32)[2:]
    gc.collect()
    view.fill_(2.0)
    assert view.sum().item() == 2 * 2 * 1024


@pytest.mark.skipif(not STATUS.exists(), reason="needs /proc/self/status (Linux) to read RSS")
def test_a_large_cache_is_resident_only_where_written() -> None:
    cfg = config()
    before = rss_mb()
    cache = KVCache(cfg, max_len=8192, batch=4)  # 8 layers · 2 · 4 slots · 4 heads · 8192 · 64
    capacity_mb = cache.nbytes / 2**20
    assert capacity_mb == 512
    assert rss_mb() - before < 16, "creating the cache made it resident"
    k = torch.randn(4, 4, 100, 64)
    for layer in range(cfg.n_layers):
        keys, values = cache.update(layer, 0, k, -k)
    written_mb = 2 * cfg.n_layers * k.numel() * 4 / 2**20  # 12.5 MB
    assert torch.equal(keys, k) and torch.equal(values, -k)
    # every layer's whole span read, as a batch whose longest row is at 4000 would
    span = sum(float(t[:, :, :4000].abs().sum()) for t in cache.k + cache.v)
    assert span == pytest.approx(2 * cfg.n_layers * float(k.abs().sum()), rel=1e-5)
    grown = rss_mb() - before
    assert grown < written_mb + 24, f"{grown:.0f} MB resident for {written_mb:.1f} MB written"
    del cache, keys, values
