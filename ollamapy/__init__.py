"""ollamapy: a readable pure-Python/PyTorch implementation of Ollama.

`ollamapy.load(path)` gives the engine directly (see `ollamapy.loaded`); the package tree is
the table of contents: `loading/` (files → config and weights), `engine/` (ids → logits →
tokens), `text/` (strings ↔ ids, chat templates).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ollamapy.loaded import LoadedModel


def load(path: Any, device: Any = None, dtype: Any = None, *, fast: bool = False,
         compile: bool | None = None, kv_cache_type: str = "f16") -> LoadedModel:
    """Load a .gguf file or a Hugging Face safetensors folder; see `ollamapy.loaded.load`."""
    from ollamapy.loaded import load as _load  # torch is imported on first use, not on import

    return _load(path, device=device, dtype=dtype, fast=fast, compile=compile,
                 kv_cache_type=kv_cache_type)


__all__ = ["load", "__version__"]
