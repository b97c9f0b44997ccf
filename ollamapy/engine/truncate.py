"""Fitting a token sequence into num_ctx: prompt truncation and context shift.

Both keep the first `keep` tokens (Ollama's num_keep), drop from the middle, and keep the
most recent tail, as Ollama's runner does (../shared/reference/ollama-api.md §5.2).
"""

from __future__ import annotations

from collections.abc import Sequence


def keep_count(num_keep: int, num_ctx: int, prompt_len: int, add_bos: bool) -> int:
    """Tokens protected at the start: num_keep (-1 = whole prompt), +1 for a BOS the
    tokenizer adds; at most num_ctx - 2, so a truncated prompt still ends with its newest
    token and a context shift always has something to drop."""
    keep = prompt_len if num_keep < 0 else num_keep + int(add_bos)
    return max(0, min(keep, prompt_len, num_ctx - 2))


def shift_discard(num_ctx: int, keep: int) -> int:
    """How many tokens one context shift drops: half of what is not kept, at least one."""
    return max((num_ctx - keep) // 2, 1)


def truncate_prompt(ids: Sequence[int], num_ctx: int, keep: int) -> list[int]:
    """A prompt longer than num_ctx - 1 loses middle tokens as one context shift would,
    leaving num_ctx - discard tokens and so room to generate."""
    if len(ids) <= num_ctx - 1:
        return list(ids)
    target = num_ctx - shift_discard(num_ctx, keep)
    return list(ids[:keep]) + list(ids[len(ids) - (target - keep):])


def context_shift(ids: Sequence[int], num_ctx: int, keep: int) -> list[int]:
    """A full window (len(ids) >= num_ctx) after dropping the oldest unkept tokens."""
    discard = shift_discard(num_ctx, keep)
    return list(ids[:keep]) + list(ids[keep + discard:])
