"""Runtime options (Ollama's `options` object): defaults, types and coercion.

Defaults and coercion rules follow Ollama's `api.DefaultOptions()` and `Options.FromMap`
(see ../shared/reference/ollama-api.md §5): integers accept any JSON number (truncated),
floats accept any JSON number, booleans need a JSON bool, `stop` needs an array of strings,
`null` leaves the default, unknown and deprecated keys are accepted and ignored.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


class OptionsError(ValueError):
    """An option has the wrong JSON type; the message is Ollama's."""


@dataclass(frozen=True, slots=True)
class Options:
    # runner options: changing them means a differently sized cache / reload
    num_ctx: int = 4096
    num_batch: int = 512
    num_gpu: int = -1
    main_gpu: int = 0
    use_mmap: bool | None = None
    num_thread: int = 0
    # prediction options
    num_keep: int = 4
    seed: int = -1
    num_predict: int = -1
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_last_n: int = 64
    temperature: float = 0.8
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()

    def replace(self, **changes: Any) -> Options:
        return dataclasses.replace(self, **changes)


# accepted for compatibility (the ollama Python client still sends some), never used
DEPRECATED_OPTIONS = frozenset({
    "mirostat", "mirostat_tau", "mirostat_eta", "penalize_newline", "tfs_z", "numa",
    "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mlock", "embedding_only",
})

_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(Options)}


def _coerce(key: str, kind: str, value: Any) -> Any:
    # JSON booleans are not numbers in Go; Python's bool is an int, so rule it out first
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "int":
        if not is_number:
            raise OptionsError(f'option "{key}" must be of type integer')
        return int(value)
    if kind == "float":
        if not is_number:
            raise OptionsError(f'option "{key}" must be of type float32')
        return float(value)
    if kind.startswith("bool"):
        if not isinstance(value, bool):
            raise OptionsError(f'option "{key}" must be of type boolean')
        return value
    # stop: tuple[str, ...]
    if not isinstance(value, list | tuple):
        raise OptionsError(f'option "{key}" must be of type array')
    if not all(isinstance(s, str) for s in value):
        raise OptionsError(f'option "{key}" must be of an array of strings')
    return tuple(value)


def parse_options(raw: Mapping[str, Any] | None, base: Options | None = None) -> Options:
    """Overlay a request's `options` on base (defaults, or a model's Modelfile parameters)."""
    base = base or Options()
    if not raw:
        return base
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue
        kind = _FIELD_TYPES.get(key)
        if kind is None:
            if key not in DEPRECATED_OPTIONS:
                log.warning("invalid option provided: %s", key)
            continue
        changes[key] = _coerce(key, kind, value)
    return base.replace(**changes) if changes else base
