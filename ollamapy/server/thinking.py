"""The request's `think`: checked, defaulted and mapped from the compatible APIs' own fields.

Ollama's rules (../shared/reference/ollama-api.md §3.1, §6.9): `think` is true, false or a
level ("low", "medium", "high", "max"); a model with the "thinking" capability thinks unless
told not to; asking a model without it to think is a 400 (the Anthropic layer relaxes that to
unset, for clients that always ask). /v1 carries it as `reasoning_effort` or
`reasoning.effort`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ollamapy.contract import ModelSpec
from ollamapy.server.errors import bad_request

Think = bool | str | None
LEVELS = ("high", "medium", "low", "max")
# OpenAI's reasoning efforts → think (Ollama's openai.go)
EFFORTS: dict[str, bool | str] = {"none": False, "minimal": "low", "low": "low",
                                   "medium": "medium", "high": "high", "max": "max",
                                   "xhigh": "max", "ultra": "max"}


def think_of(fields: Mapping[str, Any]) -> Think:
    """The native request's `think`, with Ollama's error texts."""
    value = fields.get("think")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value not in LEVELS:
            raise bad_request(f'invalid think value: "{value}" (must be "high", "medium", '
                              '"low", "max", true, or false)')
        return value
    raise bad_request('think must be a boolean or string ("high", "medium", "low", "max", '
                      "true, or false)")


def resolve_think(spec: ModelSpec, name: str, think: Think, *, relax: bool = False) -> Think:
    """What the model is asked: thinking models default to on; for a model that cannot think,
    on is a 400 (or, relax, unset), off is fine."""
    if "thinking" in spec.capabilities:
        return True if think is None else think
    if think is not None and think is not False:
        if relax:
            return None
        raise bad_request(f'"{name}" does not support thinking')
    return think


def think_of_effort(body: Mapping[str, Any]) -> Think:
    """/v1's `reasoning: {effort}`, else `reasoning_effort` → think (None: the model's
    default)."""
    reasoning = body.get("reasoning")
    if isinstance(reasoning, Mapping):
        effort = reasoning.get("effort")
    else:
        effort = body.get("reasoning_effort")
    if effort is None or effort == "":
        return None
    if not isinstance(effort, str) or effort not in EFFORTS:
        raise bad_request(f'invalid reasoning value: "{effort}" (must be "minimal", "low", '
                          '"medium", "high", "xhigh", "ultra", "max", or "none")')
    return EFFORTS[effort]
