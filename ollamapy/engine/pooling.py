"""Hidden states → one sentence embedding per text: pooling, shared by encoders and decoders.

An encoder (`ollamapy.engine.bert`) pools its last hidden states over a padded batch. A
decoder embeds as llama.cpp does, and so Ollama's runner: the prompt runs through the model
(in chunks of num_batch through a KV cache, like a prefill) and its final hidden states —
the output of the last norm, before the output head — are pooled as the GGUF's
`<arch>.pooling_type` says. A decoder without one (pooling "none") gives the hidden state of
its last prompt token (llama.cpp's `llama_get_embeddings_ith` of the one output Ollama's
runner asks for), so "last" is what a plain completion model pools.

Whether to L2-normalise is the caller's: Ollama's /api/embed does, /api/embeddings does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch

from ollamapy.engine.kv_cache import KVCache

if TYPE_CHECKING:  # only for the annotation
    from ollamapy.engine.model import Transformer

Pooling = Literal["mean", "cls", "last"]


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """hidden (B, T, dim), mask (B, T) bool, True for real tokens (right padding) → float32
    (B, dim): the mean over real tokens, the first token's state, or the last real token's."""
    hidden = hidden.float()  # pool in float32 whatever the weights' dtype
    if pooling == "cls":
        return hidden[:, 0]  # (B, dim): the first ([CLS]) state
    if pooling == "last":  # the last real token's state (right padding)
        last = mask.sum(1).clamp(min=1) - 1  # (B,)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    weights = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    # clamp as sentence-transformers does, so an all-padding row gives 0, not NaN
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)  # (B, dim)


@torch.no_grad()
def decoder_embedding(model: Transformer, ids: Sequence[int], pooling: Pooling,
                      num_batch: int = 512) -> torch.Tensor:
    """One text's ids → float32 (dim,), not normalised: the decoder's final hidden states,
    computed num_batch positions at a time (a KV cache of len(ids) positions carries the
    earlier chunks), then pooled."""
    if not ids:
        raise ValueError("every sequence needs at least one token")
    num_batch = max(1, num_batch)
    cache = KVCache(model.config, len(ids), device=model.cache_devices, dtype=model.kv_dtype)
    states = []
    for begin in range(0, len(ids), num_batch):
        chunk = torch.tensor([list(ids[begin:begin + num_batch])], device=model.device)
        states.append(model(chunk, begin, cache, all_logits=True, hidden=True))  # (1, t, dim)
    hidden = torch.cat(states, dim=1)  # (1, T, dim)
    mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    return pool(hidden, mask, pooling)[0]
