"""Reading Hugging Face folders: the real all-minilm folder, sharded folders, and clear errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ollamapy.loading.safetensors import read_hf_folder

CACHE = Path(os.environ.get("OLLAMAPY_CACHE", Path.home() / ".cache" / "ollamapy"))
MINILM = CACHE / "models" / "all-minilm"


def test_reads_the_real_minilm_folder() -> None:
    if not (MINILM / "model.safetensors").is_file():
        pytest.skip(f"{MINILM} is missing: run `make setup` (scripts/fetch_models.py) first")
    folder = read_hf_folder(MINILM)
    assert folder.config["model_type"] == "bert"
    assert folder.config["hidden_size"] == 384
    assert len(folder.tensors) == 104  # 6 layers × 16 + 6 embedding tensors + 2 pooler
    assert folder.tensors.shape("embeddings.word_embeddings.weight") == (30522, 384)
    wq = folder.tensors["encoder.layer.0.attention.self.query.weight"]
    assert wq.shape == (384, 384) and wq.dtype == torch.float32
    assert folder.tokenizer_json == MINILM / "tokenizer.json"
    assert folder.extra["1_Pooling/config.json"]["pooling_mode_mean_tokens"] is True
    assert folder.extra["sentence_bert_config.json"]["max_seq_length"] == 256
    assert folder.extra["tokenizer_config.json"]["do_lower_case"] is True


def _tiny_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "model.embed_tokens.weight": torch.randn(8, 4, generator=g),
        "model.layers.0.mlp.up_proj.weight": torch.randn(6, 4, generator=g),
        "model.layers.1.mlp.up_proj.weight": torch.randn(6, 4, generator=g).to(torch.bfloat16),
        "model.norm.weight": torch.ones(4),
    }


def _write_sharded(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Two shards and the index transformers writes beside them."""
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[:2],
              "model-00002-of-00002.safetensors": names[2:]}  # fmt: skip
    weight_map = {}
    for shard, shard_names in shards.items():
        save_file({n: tensors[n] for n in shard_names}, path / shard)
        weight_map.update(dict.fromkeys(shard_names, shard))
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))


def test_sharded_folder_reads_every_tensor(tmp_path: Path) -> None:
    tensors = _tiny_tensors()
    _write_sharded(tmp_path, tensors)
    # a stray file beside the shards is not part of the checkpoint the index describes
    save_file({"other": torch.zeros(1)}, tmp_path / "consolidated.safetensors")
    folder = read_hf_folder(tmp_path)
    assert folder.config == {"model_type": "llama"}
    assert folder.tokenizer_json is None and folder.extra == {}
    assert sorted(folder.tensors) == sorted(tensors)
    for name, expected in tensors.items():
        got = folder.tensors[name]
        assert got.dtype == expected.dtype  # the reader converts nothing
        assert torch.equal(got, expected)


def test_missing_shard_is_a_clear_error(tmp_path: Path) -> None:
    _write_sharded(tmp_path, _tiny_tensors())
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ValueError, match="missing.*model-00002-of-00002"):
        read_hf_folder(tmp_path)


def test_index_naming_the_wrong_shard_is_an_error(tmp_path: Path) -> None:
    _write_sharded(tmp_path, _tiny_tensors())
    index_path = tmp_path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(ValueError, match="model.norm.weight"):
        read_hf_folder(tmp_path)


def test_unindexed_files_are_all_read_and_must_not_overlap(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    save_file({"a": torch.zeros(2)}, tmp_path / "one.safetensors")
    save_file({"b": torch.ones(3)}, tmp_path / "two.safetensors")
    assert sorted(read_hf_folder(tmp_path).tensors) == ["a", "b"]
    save_file({"a": torch.ones(2)}, tmp_path / "three.safetensors")
    with pytest.raises(ValueError, match="'a' is in both"):
        read_hf_folder(tmp_path)


def test_folder_without_config_is_an_error(tmp_path: Path) -> None:
    save_file({"a": torch.zeros(2)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="no config.json"):
        read_hf_folder(tmp_path)


def test_folder_without_weights_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickles are never read")
    with pytest.raises(ValueError, match="no \\*.safetensors weights"):
        read_hf_folder(tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage",
        (16).to_bytes(8, "little") + b'{"a": not json}',
        (1 << 40).to_bytes(8, "little"),
    ],
    ids=["empty", "garbage", "bad-json-header", "header-too-long"],
)
def test_corrupt_safetensors_header_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(content)
    with pytest.raises(ValueError, match="model.safetensors: not a readable safetensors file"):
        read_hf_folder(tmp_path)


def test_invalid_config_json_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    save_file({"a": torch.zeros(2)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="config.json: invalid json"):
        read_hf_folder(tmp_path)
