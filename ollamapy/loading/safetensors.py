"""Reader for Hugging Face model folders: config.json, *.safetensors weights, tokenizer files.

This module reads and translates nothing: tensors keep their Hugging Face names and dtypes,
json files come back as parsed dicts. Weights are opened with `safetensors.safe_open` (the
header is parsed up front, so a corrupt file fails at read time) and each tensor is read only
when asked for, so a loader can convert a large checkpoint one tensor at a time. Never pickle.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

INDEX_FILE = "model.safetensors.index.json"

# Small json files beside config.json that loaders need (tokenizer settings, generation
# defaults, the sentence-transformers pipeline). Each sentence-transformers module listed in
# modules.json also gets its "<path>/config.json" read (for example 1_Pooling/config.json).
EXTRA_FILES = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "modules.json",
    "sentence_bert_config.json",
)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid json ({e})") from e


class LazyTensors(Mapping[str, torch.Tensor]):
    """name → tensor over one or more safetensors files; a tensor is read on each lookup.

    Files stay open (memory-mapped) for the reader's lifetime, so repeated lookups only pay
    for the copy out of the mapping.
    """

    def __init__(self, files: list[Path]) -> None:
        self._handles: dict[Path, Any] = {}
        self._file_of: dict[str, Path] = {}
        for file in files:
            handle = _open(file)
            self._handles[file] = handle
            for name in handle.keys():  # noqa: SIM118 - a safe_open handle is not a dict
                if name in self._file_of:
                    raise ValueError(
                        f"tensor {name!r} is in both {self._file_of[name].name} and {file.name}"
                    )
                self._file_of[name] = file

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._handles[self._file_of[name]].get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._file_of)

    def __len__(self) -> int:
        return len(self._file_of)

    def shape(self, name: str) -> tuple[int, ...]:
        """The tensor's shape from the file header, without reading its data."""
        return tuple(self._handles[self._file_of[name]].get_slice(name).get_shape())

    def file_of(self, name: str) -> Path:
        return self._file_of[name]


def _open(file: Path) -> Any:
    try:
        return safe_open(str(file), framework="pt")
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{file}: not a readable safetensors file ({e})") from e


@dataclass(frozen=True, slots=True)
class HFFolder:
    path: Path
    config: dict[str, Any]  # config.json as written
    tensors: LazyTensors  # Hugging Face names, dtypes as stored
    tokenizer_json: Path | None
    extra: dict[str, Any] = field(default_factory=dict)  # relative path → parsed json


def _weight_files(path: Path) -> list[Path]:
    """The safetensors files that hold the weights: the shards named by the index when there
    is one (a folder may also hold stray files such as consolidated.safetensors), else every
    *.safetensors file at the top level."""
    index_path = path / INDEX_FILE
    if index_path.is_file():
        weight_map = _read_json(index_path).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index_path}: no weight_map")
        files = [path / name for name in sorted(set(weight_map.values()))]
        if missing := [f.name for f in files if not f.is_file()]:
            raise ValueError(f"{path}: shards named by {INDEX_FILE} are missing: {missing}")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{path}: no *.safetensors weights (pickled .bin files are not read)")
    return files


def _check_index(path: Path, tensors: LazyTensors) -> None:
    """Every tensor the index promises must be in the shard it names."""
    index_path = path / INDEX_FILE
    if not index_path.is_file():
        return
    for name, shard in _read_json(index_path)["weight_map"].items():
        if name not in tensors or tensors.file_of(name).name != shard:
            raise ValueError(f"{index_path}: tensor {name!r} is not in {shard}")


def _read_extra(path: Path) -> dict[str, Any]:
    extra = {name: _read_json(path / name) for name in EXTRA_FILES if (path / name).is_file()}
    for module in extra.get("modules.json") or []:
        module_config = f"{module.get('path')}/config.json"
        if module.get("path") and (path / module_config).is_file():
            extra[module_config] = _read_json(path / module_config)
    return extra


def read_hf_folder(path: str | Path) -> HFFolder:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(f"{path}: not a Hugging Face model folder (no config.json)")
    tensors = LazyTensors(_weight_files(path))
    _check_index(path, tensors)
    tokenizer_json = path / "tokenizer.json"
    return HFFolder(
        path=path,
        config=_read_json(path / "config.json"),
        tensors=tensors,
        tokenizer_json=tokenizer_json if tokenizer_json.is_file() else None,
        extra=_read_extra(path),
    )
