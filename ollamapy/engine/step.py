"""The two forwards every generation loop is made of: `prefill` and `decode_step`.

    prefill       one sequence's new tokens (a prompt, or its whole history again after a
                  context shift) at positions [start_pos, start_pos + T), in chunks of
                  num_batch → the last position's logits (vocab,)
    decode_step   B sequences one token each, row i at positions[i], each attending over the
                  cached span key_positions = arange(S) → logits (B, vocab)

The single-sequence loop (generate.py) and continuous batching (batch.py) are both made of
these two; the server's compiled fast path wraps `decode_step` (compiled.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ollamapy.engine.kv_cache import KVCache
from ollamapy.engine.model import Transformer


def prefill(model: Transformer, ids: Sequence[int], cache: KVCache, start_pos: int,
            num_batch: int) -> torch.Tensor:
    """ids (one sequence, cached in row 0 of `cache`) → the last position's logits (vocab,)."""
    logits = torch.empty(0)
    for begin in range(0, len(ids), num_batch):
        chunk = torch.tensor([list(ids[begin:begin + num_batch])], device=model.device)  # (1, T)
        logits = model(chunk, start_pos + begin, cache)[0]  # (vocab,)
    return logits


def decode_step(model: Transformer, tokens: torch.Tensor, positions: torch.Tensor,
                key_positions: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """tokens (B, 1) at positions (B,), attending over key_positions (S,) → logits (B, vocab).
    Positions stay tensors, so a compiled step sees one graph whatever they are."""
    return model(tokens, positions, cache, key_positions=key_positions)
