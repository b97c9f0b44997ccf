"""The attention kernel of the fast path, one query at a time: against the reference `attend`
in float64 for every head layout, cache dtype, mask, soft cap and sinks, for decode steps and
prompt chunks; the same numbers for a query whatever the batch, the chunk it is in and the
thread count; spans a mask hides are not read; compiled use; and the fast model through it."""

from __future__ import annotations

import pytest
import torch

import ollamapy
from ollamapy.engine.ops import attend
from ollamapy_kernels import native
from ollamapy_kernels.attention import SpanAttention
from ollamapy_kernels.policy import span_attention

pytestmark = pytest.mark.skipif(not native.load(),
                                reason="needs an x86-64 CPU with AVX-512 VNNI and a C++ compiler")


def _inputs(b: int, h: int, h_kv: int, s: int, d: int, dtype: torch.dtype, window: int = 0,
            seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q as the model makes it (a transposed view), k and v as views of a longer cache, each
    row at its own position (row 0 at the last) → q, k, v, mask (B, 1, 1, S)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, 1, h * d, generator=g).view(b, 1, h, d).transpose(1, 2)
    k, v = (torch.randn(b, h_kv, s + 7, d, generator=g).to(dtype)[:, :, :s] for _ in range(2))
    pos = torch.randint(0, s, (b,), generator=g)
    pos[0] = s - 1
    keys = torch.arange(s)
    seen = keys[None, :] <= pos[:, None]
    if window:
        seen &= pos[:, None] - keys[None, :] < window
    return q, k, v, seen.view(b, 1, 1, s)


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
               scale: float, cap: float = 0.0, sinks: torch.Tensor | None = None
               ) -> torch.Tensor:
    return attend(q.double(), k.double(), v.double(), mask, scale, cap,
                  None if sinks is None else sinks.double())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("b", "h", "h_kv", "s", "d"), [
    (1, 9, 3, 640, 64),     # smollm2: 3 query heads per kv head, several spans
    (3, 4, 1, 70, 256),     # gemma3 270m: one kv head, a span and a bit
    (2, 32, 8, 129, 64),    # llama 3.2 1B
    (2, 8, 8, 17, 96),      # no grouping, head_dim 96 (phi3), one short span
    (1, 20, 2, 5, 128),     # 10 heads per kv head: more than the 8 summed at once
])
def test_kernel_is_attention(b: int, h: int, h_kv: int, s: int, d: int,
                             dtype: torch.dtype) -> None:
    q, k, v, mask = _inputs(b, h, h_kv, s, d, dtype)
    out = SpanAttention()(q, k, v, mask, d**-0.5)
    assert out.shape == (b, h, 1, d) and out.dtype == torch.float32
    # a convex mix of the values: fp32 sums over S terms, within ~S * 2^-24 of max |v|
    assert (out.double() - _reference(q, k, v, mask, d**-0.5)).abs().max() <= 1e-5


def test_soft_cap_sinks_and_a_sliding_window() -> None:
    q, k, v, mask = _inputs(3, 8, 2, 300, 128, torch.bfloat16, window=100, seed=3)
    q = q * 4  # large scores, where the cap bends them
    sinks = torch.randn(8, generator=torch.Generator().manual_seed(4))
    for cap, sink in ((50.0, None), (0.0, sinks), (30.0, sinks)):
        out = SpanAttention()(q, k, v, mask, 0.1, cap, sink)
        assert (out.double() - _reference(q, k, v, mask, 0.1, cap, sink)).abs().max() <= 1e-5


def test_spans_the_mask_hides_are_not_read() -> None:
    q, k, v, mask = _inputs(1, 4, 1, 400, 64, torch.float32, window=100, seed=5)
    k[:, :, :256] = float("nan")  # spans 0-3 (positions 0-255), all outside the window
    v[:, :, :256] = float("nan")
    out = SpanAttention()(q, k, v, mask, 0.125)
    visible = slice(299, 400)
    expected = _reference(q, k[:, :, visible], v[:, :, visible], mask[..., visible], 0.125)
    assert (out.double() - expected).abs().max() <= 1e-5


def test_a_row_is_the_same_alone_in_any_batch_and_on_any_thread_count() -> None:
    q, k, v, mask = _inputs(6, 9, 3, 333, 64, torch.float32, seed=6)
    alone = torch.cat([SpanAttention()(q[i:i + 1], k[i:i + 1], v[i:i + 1], mask[i:i + 1],
                                         0.125) for i in range(6)])
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            for b in (2, 5, 6):
                assert torch.equal(SpanAttention()(q[:b], k[:b], v[:b], mask[:b], 0.125),
                                   alone[:b]), (n, b)
    finally:
        torch.set_num_threads(threads)


def test_a_shared_mask_row_and_compiled_use() -> None:
    q, k, v, _ = _inputs(2, 4, 2, 90, 64, torch.float16, seed=7)
    shared = torch.ones(1, 1, 1, 90, dtype=torch.bool)  # every row sees every key
    attention = SpanAttention()
    eager = attention(q, k, v, shared, 0.125)
    assert (eager.double() - _reference(q, k, v, shared.expand(2, 1, 1, 90), 0.125)
            ).abs().max() <= 1e-5
    compiled = torch.compile(lambda *t: attention(*t, 0.125) * 2, fullgraph=True)
    assert torch.equal(compiled(q, k, v, shared), eager * 2)


def _chunk(b: int, h: int, h_kv: int, s: int, t: int, d: int, dtype: torch.dtype,
           window: int = 0, seed: int = 0
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A prompt chunk: T queries per row at positions [S - T, S), seeing the keys before
    them (and within the window) → q (B, H, T, D), k, v (B, H_kv, S, D), mask (B, 1, T, S)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, t, h * d, generator=g).view(b, t, h, d).transpose(1, 2)
    k, v = (torch.randn(b, h_kv, s, d, generator=g).to(dtype) for _ in range(2))
    queries, keys = torch.arange(s - t, s)[:, None], torch.arange(s)[None, :]
    seen = keys <= queries
    if window:
        seen &= queries - keys < window
    return q, k, v, seen.expand(b, t, s).reshape(b, 1, t, s)


@pytest.mark.parametrize(("b", "h", "h_kv", "s", "t", "d", "window"), [
    (1, 9, 3, 300, 300, 64, 0),     # a whole prompt, smollm2's heads
    (2, 4, 1, 700, 37, 256, 512),   # a chunk past gemma3's sliding window
    (1, 8, 2, 100, 1, 128, 0),      # one query: a decode step
])
def test_prompt_chunks_are_attention(b: int, h: int, h_kv: int, s: int, t: int, d: int,
                                     window: int) -> None:
    q, k, v, mask = _chunk(b, h, h_kv, s, t, d, torch.float16, window, seed=9)
    out = SpanAttention()(q, k, v, mask, d**-0.5)
    assert out.shape == (b, h, t, d) and out.dtype == torch.float32
    assert (out.double() - _reference(q, k, v, mask, d**-0.5)).abs().max() <= 1e-5


def test_a_query_is_the_same_in_any_chunk_as_in_a_decode_step() -> None:
    """Each query of a 200-query chunk over 4100 keys (more span records than the kernel holds
    at once: the queries go in groups) equals the same query alone over the keys up to its
    own (a decode step), and within chunks cut anywhere; on any thread count."""
    q, k, v, mask = _chunk(1, 9, 3, 4100, 200, 64, torch.float16, seed=10)
    whole = SpanAttention()(q, k, v, mask, 0.125)
    threads = torch.get_num_threads()
    try:
        for n, cuts in ((1, (0, 7, 100, 200)), (2, (0, 1, 64, 65, 199, 200))):
            torch.set_num_threads(n)
            parts = [SpanAttention()(q[:, :, a:z], k, v, mask[:, :, a:z], 0.125)
                     for a, z in zip(cuts, cuts[1:], strict=False)]
            assert torch.equal(torch.cat(parts, dim=2), whole), n
    finally:
        torch.set_num_threads(threads)
    for i in (0, 63, 64, 199):  # a decode step: the cache up to the query, nothing beyond
        p = 4100 - 200 + i + 1
        step = SpanAttention()(q[:, :, i:i + 1], k[:, :, :p], v[:, :, :p],
                               mask[:, :, i:i + 1, :p], 0.125)
        assert torch.equal(step, whole[:, :, i:i + 1]), i


def test_the_policy_gives_it_for_heads_it_takes() -> None:
    assert isinstance(span_attention("cpu", 9, 3, 64), SpanAttention)
    assert span_attention("cpu", 9, 3, 72) is None  # head_dim not a multiple of 16
    assert span_attention("meta", 9, 3, 64) is None
    with pytest.raises(RuntimeError, match="multiple of 16"):
        SpanAttention()(*_inputs(1, 2, 1, 8, 24, torch.float32)[:4], 0.2)


def test_gemma3_decodes_past_its_sliding_window_as_with_torchs_attention() -> None:
    """The real file (head_dim 256, one kv head, 512-position windows on 5 of 6 layers),
    decoding at positions 600+ through the kernel and through torch's fused attention, on
    one cache: each step writes the same keys whichever attends."""
    from ollamapy.engine.kv_cache import KVCache
    from ollamapy.engine.step import prefill
    from tests.conftest import model_path

    model = ollamapy.load(model_path("gemma3-270m.gguf"), device="cpu", fast=True,
                           compile=False).decoder
    kernel = model.layers[0].attn.kernel
    assert isinstance(kernel, SpanAttention)
    ids = torch.randint(10, 20000, (600,), generator=torch.Generator().manual_seed(8)).tolist()
    cache = KVCache(model.config, 620, dtype=model.kv_dtype)  # float16, as served
    prefill(model, ids, cache, 0, 256)
    token = torch.tensor([[ids[-1]]])
    for pos in range(600, 604):
        logits = {}
        for name, attention in (("torch", None), ("kernel", kernel)):
            for layer in model.layers:
                layer.attn.kernel = attention
            logits[name] = model(token, pos, cache)[0]
        diff = (logits["kernel"] - logits["torch"]).abs().max()
        # fp32 rounding differences in attention, which may move an activation of a later
        # layer across one of its int8 rounding steps (d / 256): measured up to 2.6e-4 of
        # the largest logit
        assert diff <= 1e-3 * logits["torch"].abs().max(), (pos, diff)
        assert logits["kernel"].argmax() == logits["torch"].argmax()
        token = logits["kernel"].argmax().view(1, 1)
