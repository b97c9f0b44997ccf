"""nomic-embed-text as Ollama ships it: a `nomic-bert` GGUF, written here by llama.cpp's own
converter from a tiny random transformers NomicBertModel, loaded, tokenized with the file's
WordPiece vocabulary and held to transformers' mean-pooled, normalised embeddings.

The folder the converter reads is the one transformers saves (it writes nomic-ai's tensor names:
`emb_ln`, `encoder.layers.N.attn.Wqkv`, `mlp.fc11`/`fc12`/`fc2`, `norm1`/`norm2`), with three
additions: bert-base-uncased's tokenizer as nomic-embed-text ships it (taken from all-minilm,
whose vocabulary the converter recognises), sentence-transformers' mean Pooling module as
nomic-embed-text's, and the keys of nomic-ai's remote-code config.json that the converter asserts
on (`activation_function`, `n_positions`, `rotary_emb_*`, `*_bias`, `prenorm`, `causal`).
transformers' keys stay: with transformers >= 5 installed the converter reads config.json through
AutoConfig, whose NomicBertConfig fills the sizes from `hidden_size` & co. and ignores `n_embd`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, NomicBertConfig, NomicBertModel

import ollamapy
from ollamapy.engine.bert import BertEncoder
from ollamapy.loading.gguf import read_gguf
from ollamapy.loading.hf_config import encoder_config_from_hf
from ollamapy.server.describe import gguf_facts
from ollamapy.store.modelinfo import describe_gguf
from tests.conftest import model_path
from tests.llama_cpp import convert

ROPE_BASE = 500.0  # not nomic-embed-text's 1000 nor llama.cpp's default 10000: read, not assumed
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                   "special_tokens_map.json")
# nomic-ai's remote-code config keys (nomic-embed-text-v1.5's values) the converter checks;
# n_positions 8192 with max_trained_positions 2048 is how it recognises v1/v1.5 (context 2048)
NOMIC_AI_KEYS = {"activation_function": "swiglu", "causal": False, "prenorm": False,
                 "n_positions": 8192, "max_trained_positions": 2048, "qkv_proj_bias": False,
                 "mlp_fc1_bias": False, "mlp_fc2_bias": False, "rotary_emb_base": ROPE_BASE,
                 "rotary_emb_fraction": 1.0, "rotary_emb_interleaved": False,
                 "rotary_emb_scale_base": None}
TEXTS = ["search_query: Why is the sky blue?", "Äpfel, Birnen und Pflaumen. " * 12,
         "日本語のテキスト", "x", "search_document: Rayleigh scattering, 1871!"]


@pytest.fixture(scope="module")
def nomic(tmp_path_factory: pytest.TempPathFactory) -> tuple[NomicBertModel, Path]:
    """A 2-layer NomicBertModel with random weights, and the folder it was saved to."""
    tokenizer_folder = model_path("all-minilm")  # skips without `make setup`
    config = NomicBertConfig(vocab_size=30528, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=4, intermediate_size=48,
                             max_position_embeddings=2048,
                             rope_parameters={"rope_type": "default", "rope_theta": ROPE_BASE})
    torch.manual_seed(0)
    model = NomicBertModel(config).eval()
    with torch.no_grad():  # far from the 0.02 init, so a wrong RoPE base or gate shows at 1e-4
        for name, p in model.named_parameters():
            centre = 1.0 if "norm" in name.lower() and name.endswith(".weight") else 0.0
            p.copy_(centre + 0.3 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("nomic") / "tiny-nomic-embed"
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_folder / name, folder / name)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"}]))
    saved = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(saved | NOMIC_AI_KEYS, indent=2))
    return model, folder


@pytest.fixture(scope="module")
def nomic_gguf(nomic: tuple[NomicBertModel, Path]) -> Path:
    return convert(nomic[1], nomic[1].parent / "tiny-nomic-embed.gguf")


def transformers_embeddings(model: NomicBertModel, folder: Path) -> torch.Tensor:
    """What sentence-transformers gives for TEXTS: mean over the real tokens, L2-normalised."""
    batch = AutoTokenizer.from_pretrained(folder)(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (B, T, dim)
    mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
    return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def test_the_file_is_laid_out_as_ollamas(nomic_gguf: Path) -> None:
    with read_gguf(nomic_gguf) as gguf:
        meta, names = gguf.metadata, set(gguf.tensors)
    assert meta["general.architecture"] == "nomic-bert" and meta["tokenizer.ggml.model"] == "bert"
    assert meta["nomic-bert.pooling_type"] == 1 and meta["nomic-bert.rope.freq_base"] == ROPE_BASE
    assert meta["nomic-bert.context_length"] == 2048
    assert {"token_types.weight", "token_embd_norm.bias", "blk.1.attn_qkv.weight",
            "blk.1.ffn_gate.weight", "blk.1.ffn_up.weight"} <= names
    assert "position_embd.weight" not in names  # RoPE instead
    assert all("norm" in n for n in names if n.endswith(".bias"))  # only LayerNorms have biases


@pytest.mark.parametrize("source", ["gguf", "folder"])
def test_tokens_and_embeddings_match_transformers(
        source: str, nomic: tuple[NomicBertModel, Path], nomic_gguf: Path) -> None:
    model, folder = nomic
    m = ollamapy.load(nomic_gguf if source == "gguf" else folder, device="cpu")
    assert m.checkpoint.kind == "encoder" and isinstance(m.model, BertEncoder)
    config = m.model.config
    assert (config.rope_base, config.gated_ffn, config.bias) == (ROPE_BASE, True, False)
    assert (config.pooling, config.max_tokens, config.n_layers) == ("mean", 2048, 2)
    hf_tokenizer = AutoTokenizer.from_pretrained(folder)
    assert [m.tokenize(t) for t in TEXTS] == [hf_tokenizer(t)["input_ids"] for t in TEXTS]
    ours = torch.tensor(m.embed(TEXTS))  # one padded batch, lengths 3 to ~80 tokens
    expected = transformers_embeddings(model, folder)
    print(f"{source} vs transformers: max |diff| {(ours - expected).abs().max().item():.2e}")
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


def test_nomic_ais_own_config_reads_as_transformers_does(
        nomic: tuple[NomicBertModel, Path]) -> None:
    """nomic-embed-text's repository ships nomic-ai's remote-code config.json (`n_embd`, …)."""
    transformers_style = json.loads((nomic[1] / "config.json").read_text())
    nomic_ai_style = {"model_type": "nomic_bert", "vocab_size": 30528, "type_vocab_size": 2,
                      "n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": 48,
                      "layer_norm_epsilon": 1e-12, **NOMIC_AI_KEYS}
    assert (encoder_config_from_hf(nomic_ai_style, None, None)
            == encoder_config_from_hf(transformers_style, None, None))
    with pytest.raises(ValueError, match="nomic-bert variant"):
        encoder_config_from_hf({**nomic_ai_style, "prenorm": True}, None, None)


def test_the_server_calls_it_an_embedding_model(nomic_gguf: Path) -> None:
    info = describe_gguf(nomic_gguf)  # what `ollamapy create` records
    assert (info.family, info.capabilities, info.context_length) == (
        "nomic-bert", ("embedding",), 2048)
    assert gguf_facts(nomic_gguf).embedding  # what /api/show derives its capabilities from
