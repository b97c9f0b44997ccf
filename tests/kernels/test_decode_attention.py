"""The one-query attention kernel of decode steps: against the reference `attend` in float64
for every head layout, cache dtype, mask, soft cap and sinks; the same numbers for a row
whatever the batch and the thread count; spans a sliding window hides are not read; compiled
use; and the fast model decoding through it."""

from __future__ import annotations

import pytest
import torch

import ollamapy
from ollamapy.engine.ops import attend
from ollamapy_kernels import native
from ollamapy_kernels.attention import DecodeAttention
from ollamapy_kernels.policy import decode_attention

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
    out = DecodeAttention()(q, k, v, mask, d**-0.5)
    assert out.shape == (b, h, 1, d) and out.dtype == torch.float32
    # a convex mix of the values: fp32 sums over S terms, within ~S * 2^-24 of max |v|
    assert (out.double() - _reference(q, k, v, mask, d**-0.5)).abs().max() <= 1e-5


def test_soft_cap_sinks_and_a_sliding_window() -> None:
    q, k, v, mask = _inputs(3, 8, 2, 300, 128, torch.bfloat16, window=100, seed=3)
    q = q * 4  # large scores, where the cap bends them
    sinks = torch.randn(8, generator=torch.Generator().manual_seed(4))
    for cap, sink in ((50.0, None), (0.0, sinks), (30.0, sinks)):
        out = DecodeAttention()(q, k, v, mask, 0.1, cap, sink)
        assert (out.double() - _reference(q, k, v, mask, 0.1, cap, sink)).abs().max() <= 1e-5


def test_spans_the_mask_hides_are_not_read() -> None:
    q, k, v, mask = _inputs(1, 4, 1, 400, 64, torch.float32, window=100, seed=5)
    k[:, :, :256] = float("nan")  # spans 0-3 (positions 0-255), all outside the window
    v[:, :, :256] = float("nan")
    out = DecodeAttention()(q, k, v, mask, 0.125)
    visible = slice(299, 400)
    expected = _reference(q, k[:, :, visible], v[:, :, visible], mask[..., visible], 0.125)
    assert (out.double() - expected).abs().max() <= 1e-5


def test_a_row_is_the_same_alone_in_any_batch_and_on_any_thread_count() -> None:
    q, k, v, mask = _inputs(6, 9, 3, 333, 64, torch.float32, seed=6)
    alone = torch.cat([DecodeAttention()(q[i:i + 1], k[i:i + 1], v[i:i + 1], mask[i:i + 1],
                                         0.125) for i in range(6)])
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            for b in (2, 5, 6):
                assert torch.equal(DecodeAttention()(q[:b], k[:b], v[:b], mask[:b], 0.125),
                                   alone[:b]), (n, b)
    finally:
        torch.set_num_threads(threads)


def test_a_shared_mask_row_and_compiled_use() -> None:
    q, k, v, _ = _inputs(2, 4, 2, 90, 64, torch.float16, seed=7)
    shared = torch.ones(1, 1, 1, 90, dtype=torch.bool)  # every row sees every key
    attention = DecodeAttention()
    eager = attention(q, k, v, shared, 0.125)
    assert (eager.double() - _reference(q, k, v, shared.expand(2, 1, 1, 90), 0.125)
            ).abs().max() <= 1e-5
    compiled = torch.compile(lambda *t: attention(*t, 0.125) * 2, fullgraph=True)
    assert torch.equal(compiled(q, k, v, shared), eager * 2)


def test_the_policy_gives_it_for_heads_it_takes() -> None:
    assert isinstance(decode_attention("cpu", 9, 3, 64), DecodeAttention)
    assert decode_attention("cpu", 9, 3, 72) is None  # head_dim not a multiple of 16
    assert decode_attention("meta", 9, 3, 64) is None
    with pytest.raises(RuntimeError, match="multiple of 16"):
        DecodeAttention()(*_inputs(1, 2, 1, 8, 24, torch.float32)[:4], 0.2)


def test_gemma3_decodes_past_its_sliding_window_as_with_torchs_attention() -> None:
    """The real file (head_dim 256, one kv head, 512-position windows on 5 of 6 layers),
    decoding at positions 600+ through the kernel and through torch's fused attention, on
    one cache: each step writes the same keys whichever attends."""
    from ollamapy.engine.kv_cache import KVCache
    from ollamapy.engine.step import prefill
    from tests.conftest import model_path

    model = ollamapy.load(model_path("gemma3-270m.gguf"), device="cpu", fast=True,
                           compile=False).decoder
    kernel = model.layers[0].attn.decode
    assert isinstance(kernel, DecodeAttention)
    ids = torch.randint(10, 20000, (600,), generator=torch.Generator().manual_seed(8)).tolist()
    cache = KVCache(model.config, 620, dtype=model.kv_dtype)  # float16, as served
    prefill(model, ids, cache, 0, 256)
    token = torch.tensor([[ids[-1]]])
    for pos in range(600, 604):
        logits = {}
        for name, decode in (("torch", None), ("kernel", kernel)):
            for layer in model.layers:
                layer.attn.decode = decode
            logits[name] = model(token, pos, cache)[0]
        diff = (logits["kernel"] - logits["torch"]).abs().max()
        # fp32 rounding differences in attention, which may move an activation of a later
        # layer across one of its int8 rounding steps (d / 256): measured up to 2.6e-4 of
        # the largest logit
        assert diff <= 1e-3 * logits["torch"].abs().max(), (pos, diff)
        assert logits["kernel"].argmax() == logits["torch"].argmax()
        token = logits["kernel"].argmax().view(1, 1)
