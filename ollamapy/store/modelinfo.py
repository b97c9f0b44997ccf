"""What `create` learns from uploaded weights to fill the config blob: family, parameter size,
quantization level, capabilities, context and embedding length.

Only headers are read, never tensors: a GGUF through `ollamapy.loading.gguf` (whose header
parse is bounds-checked and imports no torch), a safetensors file through its 8-byte length
and JSON header (capped), a Hugging Face folder through its config.json. Names and formats
follow Ollama: `format.HumanNumber` for the parameter size, the llama.cpp file-type names
Ollama prints for `general.file_type`, and `<arch>.pooling_type` marking an embedding model.
"""

from __future__ import annotations

import json
import math
import struct
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ollamapy.loading.families import unsupported_folder, unsupported_gguf
from ollamapy.loading.gguf import read_gguf
from ollamapy.store.errors import CreateError

GGUF_MAGIC = b"GGUF"
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit

# llama.cpp's LLAMA_FTYPE values, spelled as Ollama prints them (fs/ggml FileType.String)
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4",
}
# a Hugging Face architecture with one of these suffixes generates text; the rest embed
_GENERATIVE = ("ForCausalLM", "ForConditionalGeneration", "LMHeadModel")


@dataclass(frozen=True, slots=True)
class WeightsInfo:
    format: str  # "gguf" or "safetensors"
    kind: str  # "model", "projector" or "adapter"
    family: str  # general.architecture, or config.json's model_type
    parameter_count: int
    file_type: str
    capabilities: tuple[str, ...]
    context_length: int = 0
    embedding_length: int = 0
    unsupported: str | None = None  # why this model cannot run here, if it cannot

    @property
    def parameter_size(self) -> str:
        return human_number(self.parameter_count)


def human_number(n: int) -> str:
    """Ollama's format.HumanNumber: 134515008 → "134.52M", 8030261248 → "8.0B", 125e6 → "125M"."""
    for scale, suffix, decimals in ((1_000_000_000, "B", 1), (1_000_000, "M", 2)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f}{suffix}" if value == math.floor(value) else \
                f"{value:.{decimals}f}{suffix}"
    if n >= 1000:
        return f"{n / 1000:.0f}K"
    return str(n)


def file_type_name(file_type: Any) -> str:
    if isinstance(file_type, bool) or not isinstance(file_type, int):
        return "unknown"
    return FILE_TYPES.get(file_type, "unknown")


def is_gguf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == GGUF_MAGIC


def _int(meta: Mapping[str, Any], key: str) -> int:
    value = meta.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def describe_gguf(path: Path) -> WeightsInfo:
    """Raises GGUFError (a ValueError naming the defect) for a malformed file."""
    with read_gguf(path) as gguf:
        meta = gguf.metadata
        # Ollama overwrites general.parameter_count with the tensor element sum when decoding
        parameters = sum(math.prod(t.shape) for t in gguf.tensors.values())
        types = {name: t.type_name for name, t in gguf.tensors.items()}
    arch = meta.get("general.architecture")
    arch = arch if isinstance(arch, str) else ""
    general_type = meta.get("general.type")
    if general_type == "adapter":
        kind = "adapter"
    elif general_type in ("projector", "mmproj") or arch == "clip":
        kind = "projector"
    else:
        kind = "model"
    embedding = f"{arch}.pooling_type" in meta
    return WeightsInfo(format="gguf", kind=kind, family=arch, parameter_count=parameters,
                       file_type=file_type_name(meta.get("general.file_type")),
                       capabilities=("embedding",) if embedding else ("completion",),
                       context_length=_int(meta, f"{arch}.context_length"),
                       embedding_length=_int(meta, f"{arch}.embedding_length"),
                       unsupported=unsupported_gguf(arch, types) if kind == "model" else None)


def safetensors_header(path: Path, what: str) -> dict[str, Any]:
    """The JSON header of a .safetensors file: tensor name → {dtype, shape, data_offsets}."""
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CreateError(f"{what} is not a safetensors file: too short")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_SAFETENSORS_HEADER:
            raise CreateError(f"{what} is not a safetensors file: header of {length} bytes")
        raw = f.read(length)
    try:
        header = json.loads(raw) if len(raw) == length else None
    except (ValueError, RecursionError):
        header = None
    if not isinstance(header, dict):
        raise CreateError(f"{what} is not a safetensors file: bad header")
    for name, info in header.items():
        if name == "__metadata__":
            continue
        shape = info.get("shape") if isinstance(info, dict) else None
        if (not isinstance(shape, list) or not isinstance(info.get("dtype"), str)
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                           for d in shape)):
            raise CreateError(f"{what} is not a safetensors file: bad entry for {name!r}")
    return header


def describe_safetensors(config: Mapping[str, Any],
                         headers: Iterable[Mapping[str, Any]]) -> WeightsInfo:
    """From config.json and the headers of every .safetensors file of the folder."""
    elements: Counter[str] = Counter()
    for header in headers:
        for name, info in header.items():
            if name != "__metadata__":
                elements[info["dtype"]] += math.prod(info["shape"])
    floats = {k: v for k, v in elements.items() if k in ("F64", "F32", "F16", "BF16")}
    file_type = max(floats, key=floats.__getitem__) if floats else "unknown"
    architectures = config.get("architectures")
    architectures = architectures if isinstance(architectures, list) else []
    generative = any(isinstance(a, str) and a.endswith(_GENERATIVE) for a in architectures)
    family = config.get("model_type")
    family = family if isinstance(family, str) else ""
    return WeightsInfo(format="safetensors", kind="model", family=family,
                       parameter_count=sum(elements.values()), file_type=file_type,
                       capabilities=("completion",) if generative else ("embedding",),
                       context_length=_int(config, "max_position_embeddings"),
                       embedding_length=_int(config, "hidden_size"),
                       unsupported=unsupported_folder(family))
