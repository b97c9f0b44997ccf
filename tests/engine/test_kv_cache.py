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
from ollamapy.engine.kv_cache import KVCache, kv_cache_dtype, zeros

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
        keys, values = cache.update(layer, torch.arange(100).expand(4, 100), k, -k, 100)
    written_mb = 2 * cfg.n_layers * k.numel() * 4 / 2**20  # 12.5 MB
    assert torch.equal(keys, k) and torch.equal(values, -k)
    # every layer's whole span read, as a batch whose longest row is at 4000 would
    span = sum(float(t[:, :, :4000].abs().sum()) for t in cache.k + cache.v)
    assert span == pytest.approx(2 * cfg.n_layers * float(k.abs().sum()), rel=1e-5)
    grown = rss_mb() - before
    assert grown < written_mb + 24, f"{grown:.0f} MB resident for {written_mb:.1f} MB written"
    del cache, keys, values


def test_each_row_writes_its_own_positions() -> None:
    """update's one convention: row i's T entries land at positions[i], (B, T), whether a
    prompt chunk (one row, T positions) or a batched step (rows at different positions)."""
    cache = KVCache(config(n_layers=1), max_len=16, batch=3)
    k = torch.randn(3, 4, 2, 64)  # (B, n_kv_heads, T, head_dim)
    positions = torch.tensor([[0, 1], [5, 6], [13, 14]])
    keys, values = cache.update(0, positions, k, -k, length=15)
    assert keys.shape == (3, 4, 15, 64) and values.shape == (3, 4, 15, 64)
    for row, (a, b) in enumerate(positions.tolist()):
        assert torch.equal(keys[row, :, a:b + 1], k[row])
        assert torch.equal(values[row, :, a:b + 1], -k[row])
        others = [p for p in range(15) if p not in (a, b)]
        assert not keys[row, :, others].any()


def test_writing_past_the_window_is_refused() -> None:
    cache = KVCache(config(n_layers=1), max_len=8)
    cache.check(8)
    with pytest.raises(ValueError, match="KV cache overflow: position 9 > num_ctx 8"):
        cache.check(9)


def test_swap_exchanges_what_two_slots_hold_and_copy_shares_a_prefix() -> None:
    cache = KVCache(config(n_layers=2), max_len=8, batch=3)
    for t in cache.k + cache.v:
        t[0, :, :5] = 1.0  # slot 0 holds 5 positions, slot 1 holds 3
        t[1, :, :3] = 2.0
    cache.swap(0, 1, 5, 3)
    for t in cache.k + cache.v:
        assert (t[1, :, :5] == 1).all() and (t[0, :, :3] == 2).all()
    cache.copy(1, 2, 4)
    for t in cache.k + cache.v:
        assert (t[2, :, :4] == 1).all() and not t[2, :, 4:].any()


def test_the_cache_type_names_a_dtype_as_ollama_names_it(caplog) -> None:
    assert kv_cache_dtype("f16", torch.float32) == torch.float16  # Ollama's default
    assert kv_cache_dtype(" F16 ", torch.float32) == torch.float16
    assert kv_cache_dtype("", torch.float32) == torch.float16
    assert kv_cache_dtype("f16", torch.bfloat16) == torch.bfloat16  # 16 bits already
    assert kv_cache_dtype("f32", torch.float32) == torch.float32  # ollamapy's: the model's own
    assert kv_cache_dtype("f32", torch.bfloat16) == torch.bfloat16
    with caplog.at_level("WARNING"):
        assert kv_cache_dtype("q8_0", torch.float32) == torch.float16
    assert "kv cache type q8_0 is not supported here: using f16" in caplog.text


def test_a_float16_cache_stores_float32_keys_rounded() -> None:
    cache = KVCache(config(n_layers=1), max_len=8, dtype=torch.float16)
    k = torch.randn(1, 4, 3, 64) * 100
    keys, values = cache.update(0, torch.arange(3)[None], k, -k, length=3)
    assert keys.dtype == torch.float16 and values.dtype == torch.float16
    assert torch.equal(keys, k.half()) and torch.equal(values, (-k).half())
