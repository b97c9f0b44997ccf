"""What a stored model is, as /api/show, /api/tags and /api/ps describe it.

Read from the manifest's config blob and the weights' headers only (the GGUF header parse
imports no torch; nothing is loaded). Ollama's rules (../shared/reference/ollama-api.md §9):
`model_info` is every GGUF key but `general.name` and `tokenizer.chat_template`, plus
`general.parameter_count`, with arrays longer than 5 emptied unless verbose; capabilities are
`completion` or `embedding` (a `<arch>.pooling_type` key), `tools` when the template uses
tools, `insert` when it uses `.Suffix`, `thinking` when it wraps `.Thinking` in tags (a Jinja
template: writes `<think>` and `</think>`, or harmony messages) or the family is gpt-oss.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ollamapy.loading.gguf import read_gguf
from ollamapy.store import Model
from ollamapy.store.modelinfo import safetensors_header
from ollamapy.text.gotemplate import template_vars
from ollamapy.text.harmony import harmony_template
from ollamapy.text.thinking import jinja_thinks, thinking_tags

DEFAULT_TEMPLATE = "{{ .Prompt }}"
SHORT_ARRAY = 5  # longer arrays are emptied in model_info unless verbose


@dataclass(frozen=True, slots=True)
class WeightsFacts:
    model_info: dict[str, Any]
    chat_template: str | None  # the checkpoint's Jinja template
    tensors: tuple[dict[str, Any], ...] = ()
    embedding: bool = False


@dataclass(frozen=True, slots=True)
class ModelFacts:
    details: dict[str, Any]
    capabilities: tuple[str, ...]
    template: str  # what /api/show prints: TEMPLATE layer, else the Jinja one, else {{ .Prompt }}
    weights: WeightsFacts = field(repr=False)


@lru_cache(maxsize=32)
def gguf_facts(path: Path, verbose: bool = False) -> WeightsFacts:
    with read_gguf(path) as gguf:
        meta = gguf.metadata
        tensors = gguf.tensors.values()
        count = sum(math.prod(t.shape) for t in tensors)
        listed = tuple({"name": t.name, "type": t.type_name, "shape": list(reversed(t.shape))}
                       for t in tensors) if verbose else ()
    info = {k: ([] if isinstance(v, list) and len(v) > SHORT_ARRAY and not verbose else v)
            for k, v in meta.items() if k not in ("general.name", "tokenizer.chat_template")}
    info["general.parameter_count"] = count
    arch = meta.get("general.architecture", "")
    template = meta.get("tokenizer.chat_template")
    return WeightsFacts(dict(sorted(info.items())), template if isinstance(template, str) else None,
                        listed, embedding=f"{arch}.pooling_type" in meta)


def folder_facts(files: dict[str, Path], parameter_count: int) -> WeightsFacts:
    """A Hugging Face folder: model_info in GGUF's spelling from its config.json."""
    config = json.loads(files["config.json"].read_text()) if "config.json" in files else {}
    arch = str(config.get("model_type", ""))
    keys = {"context_length": "max_position_embeddings", "embedding_length": "hidden_size",
            "block_count": "num_hidden_layers", "feed_forward_length": "intermediate_size",
            "attention.head_count": "num_attention_heads", "vocab_size": "vocab_size"}
    info: dict[str, Any] = {"general.architecture": arch,
                            "general.parameter_count": parameter_count}
    info |= {f"{arch}.{ours}": config[theirs] for ours, theirs in keys.items() if theirs in config}
    template = None
    if "tokenizer_config.json" in files:
        template = json.loads(files["tokenizer_config.json"].read_text()).get("chat_template")
    architectures = config.get("architectures") or []
    generative = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    return WeightsFacts(dict(sorted(info.items())),
                        template if isinstance(template, str) else None, (),
                        embedding=not generative)


def weights_facts(model: Model, verbose: bool = False) -> WeightsFacts:
    if model.model_path is not None:
        return gguf_facts(model.model_path, verbose)
    return folder_facts(dict(model.files), _safetensors_parameters(model))


def _safetensors_parameters(model: Model) -> int:
    total = 0
    for rel, path in model.files.items():
        if rel.endswith(".safetensors"):
            for name, entry in safetensors_header(path, rel).items():
                if name != "__metadata__":
                    total += math.prod(entry["shape"])
    return total


def model_facts(model: Model, verbose: bool = False) -> ModelFacts:
    weights = weights_facts(model, verbose)
    config = model.config
    caps = list(config.capabilities or ())
    if not caps:
        caps = ["embedding" if weights.embedding else "completion"]
    if model.template is not None:
        used = template_vars(model.template)
        caps += [cap for cap, var in (("tools", "tools"), ("insert", "suffix")) if var in used]
        if all(thinking_tags(model.template)):
            caps.append("thinking")
    elif weights.chat_template:
        if "tools" in weights.chat_template or "tool_call" in weights.chat_template:
            caps.append("tools")
        if jinja_thinks(weights.chat_template) or harmony_template(weights.chat_template):
            caps.append("thinking")
    family = config.model_family or str(weights.model_info.get("general.architecture", ""))
    if family in ("gptoss", "gpt-oss"):
        caps.append("thinking")
    details = {"parent_model": model.parent_model, "format": model.format, "family": family,
               "families": list(config.model_families or ([family] if family else [])),
               "parameter_size": config.model_type, "quantization_level": config.file_type}
    template = model.template if model.template is not None else (
        weights.chat_template or DEFAULT_TEMPLATE)
    return ModelFacts(details, tuple(dict.fromkeys(caps)), template, weights)
