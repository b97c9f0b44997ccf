"""Our decoder against transformers on tiny random models of every supported architecture,
and cached decode against an uncached forward."""

from __future__ import annotations

import pytest
import torch

from ollamapy.engine.kv_cache import KVCache
from ollamapy.engine.model import Transformer
from ollamapy.loading.hf_config import config_from_hf
from ollamapy.loading.weights import build_transformer, fix_hf_tensor, hf_name
from tests.engine.hf_tiny import VOCAB, tiny_hf_model

ARCHS = ["llama", "qwen2", "qwen3", "gemma3"]


def ours_from_hf(hf) -> Transformer:
    config = config_from_hf(hf.config.to_dict(), hf.state_dict().keys())
    tensors = ((hf_name(n, config), t) for n, t in hf.state_dict().items())
    fixed = ((n, fix_hf_tensor(n, t, config)) for n, t in tensors)
    return build_transformer(config, fixed, "cpu", torch.float32)


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_match_transformers(arch: str) -> None:
    hf = tiny_hf_model(arch)
    ours = ours_from_hf(hf)
    ids = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(ids).logits.float()  # (2, 20, vocab)
    got = ours(ids, all_logits=True)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours(ids), expected[:, -1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_decode_equals_uncached_forward(arch: str) -> None:
    model = ours_from_hf(tiny_hf_model(arch, seed=3))
    ids = torch.randint(0, VOCAB, (1, 24), generator=torch.Generator().manual_seed(2))
    cache = KVCache(model.config, max_len=32)
    prefill = 10
    logits = model(ids[:, :prefill], 0, cache)
    torch.testing.assert_close(logits, model(ids[:, :prefill]), atol=1e-5, rtol=1e-5)
    for pos in range(prefill, ids.shape[1]):
        logits = model(ids[:, pos:pos + 1], pos, cache)  # one token at a time
        uncached = model(ids[:, :pos + 1])
        torch.testing.assert_close(logits, uncached, atol=1e-5, rtol=1e-5)
    written = cache.k[0][0].abs().sum(-1).ne(0).all(0)  # (max_len,) per position
    assert written[:ids.shape[1]].all() and not written[ids.shape[1]:].any()


def test_cache_overflow_is_a_clear_error() -> None:
    model = ours_from_hf(tiny_hf_model("llama"))
    cache = KVCache(model.config, max_len=4)
    with pytest.raises(ValueError, match="KV cache overflow"):
        model(torch.zeros(1, 5, dtype=torch.long), 0, cache)


def test_gemma3_sliding_window_changes_distant_attention() -> None:
    """The window is real: with it removed, logits past the window differ."""
    hf = tiny_hf_model("gemma3")
    ours = ours_from_hf(hf)
    ids = torch.randint(0, VOCAB, (1, 16), generator=torch.Generator().manual_seed(4))
    windowed = ours(ids, all_logits=True)
    assert ours.config.sliding_window == 6 and ours.config.sliding_layers == (True, False, True)
    object.__setattr__(ours.config, "sliding_window", 1000)  # test only: widen the window
    full = ours(ids, all_logits=True)
    torch.testing.assert_close(windowed[:, :6], full[:, :6])  # inside the window: identical
    assert not torch.allclose(windowed[:, 6:], full[:, 6:], atol=1e-4)
