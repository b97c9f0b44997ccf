"""Prompt truncation and context shift keep the head, drop the middle, keep the tail."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ollamapy.engine.truncate import context_shift, keep_count, shift_discard, truncate_prompt


def test_keep_count() -> None:
    assert keep_count(4, 100, 50, add_bos=False) == 4
    assert keep_count(4, 100, 50, add_bos=True) == 5  # the BOS is not one of the four
    assert keep_count(-1, 100, 50, add_bos=False) == 50  # -1: the whole prompt
    assert keep_count(-1, 10, 50, add_bos=False) == 8  # room for the newest token
    assert keep_count(4, 100, 2, add_bos=False) == 2


def test_short_prompt_is_untouched() -> None:
    ids = list(range(63))
    assert truncate_prompt(ids, 64, 4) == ids


def test_long_prompt_keeps_head_and_tail() -> None:
    ids = list(range(1000))
    out = truncate_prompt(ids, 64, 4)
    assert len(out) == 64 - shift_discard(64, 4) == 34
    assert out[:4] == [0, 1, 2, 3]
    assert out[4:] == list(range(1000 - 30, 1000))


def test_context_shift_drops_half_of_the_unkept_window() -> None:
    ids = list(range(65))  # a full 64-token window plus the token that did not fit
    out = context_shift(ids, 64, 4)
    assert out == [0, 1, 2, 3] + list(range(4 + 30, 65))


@given(n=st.integers(1, 400), num_ctx=st.integers(4, 128), num_keep=st.integers(-1, 200),
       add_bos=st.booleans())
def test_truncated_prompt_always_leaves_room(n: int, num_ctx: int, num_keep: int,
                                             add_bos: bool) -> None:
    ids = list(range(n))
    keep = keep_count(num_keep, num_ctx, n, add_bos)
    out = truncate_prompt(ids, num_ctx, keep)
    assert len(out) <= num_ctx - 1 and out
    assert out[:keep] == ids[:keep]
    assert out == sorted(out) and out[-1] == n - 1  # order kept, the newest token kept
    shifted = context_shift(out + [n, n + 1][: max(0, num_ctx + 1 - len(out))], num_ctx, keep)
    assert len(shifted) <= num_ctx
