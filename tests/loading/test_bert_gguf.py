"""all-minilm as Ollama ships it: a `bert` GGUF in F16, written here from the real folder by
llama.cpp's own converter (the way Ollama's library file was made), loaded, tokenized with the
file's WordPiece vocabulary and held to the golden transformers embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ollamapy
from ollamapy.engine.bert import BertEncoder, EncoderConfig, pad_batch, truncate
from ollamapy.loading.gguf import read_gguf
from ollamapy.loading.gguf_config import UnsupportedModelError, encoder_config_from_gguf
from tests.conftest import DATA, model_path
from tests.llama_cpp import convert

GOLDEN = json.loads((DATA / "embeddings_minilm.json").read_text())["cases"]
GOLDEN_MAX_TOKENS = 256  # the golden ids were cut there (sentence_bert_config.json)


@pytest.fixture(scope="module")
def minilm_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = model_path("all-minilm")
    return convert(folder, tmp_path_factory.mktemp("minilm") / "all-minilm.gguf", "f16")


def test_the_file_is_laid_out_as_ollamas(minilm_gguf: Path) -> None:
    with read_gguf(minilm_gguf) as gguf:
        meta = gguf.metadata
        assert meta["general.architecture"] == "bert"
        assert meta["tokenizer.ggml.model"] == "bert" and meta["bert.pooling_type"] == 1
        assert gguf.tensors["token_embd.weight"].type_name == "F16"
        assert {"position_embd.weight", "token_types.weight",
                "blk.5.layer_output_norm.bias"} <= gguf.tensors.keys()


def test_tokens_and_embeddings_match_transformers(minilm_gguf: Path) -> None:
    m = ollamapy.load(minilm_gguf, device="cpu")
    assert m.checkpoint.kind == "encoder" and isinstance(m.model, BertEncoder)
    assert m.model.config.pooling == "mean" and m.model.config.max_tokens == 512
    for case in GOLDEN:  # the file's vocabulary gives the ids transformers' tokenizer gave
        assert truncate(m.tokenize(case["text"]), GOLDEN_MAX_TOKENS) == case["input_ids"]
    vectors = m.embed_ids([m.tokenize(c["text"]) for c in GOLDEN], GOLDEN_MAX_TOKENS)
    cosines = [F.cosine_similarity(torch.tensor(v), torch.tensor(c["embedding"]), dim=0).item()
               for v, c in zip(vectors, GOLDEN, strict=True)]
    print(f"F16 GGUF vs transformers fp32: minimum cosine {min(cosines):.7f}")
    assert min(cosines) >= 0.9999, cosines
    assert all(abs(torch.tensor(v).norm().item() - 1) < 1e-5 for v in vectors)


def test_gguf_and_folder_give_the_same_vectors(minilm_gguf: Path) -> None:
    texts = ["Why is the sky blue?", "Äpfel, Birnen und Pflaumen", "日本語のテキスト", "x"]
    a = torch.tensor(ollamapy.load(minilm_gguf, device="cpu").embed(texts))
    b = torch.tensor(ollamapy.load(model_path("all-minilm"), device="cpu").embed(texts))
    assert F.cosine_similarity(a, b).min().item() >= 0.9999


def meta(arch: str = "bert", **overrides) -> dict:
    """A small encoder's GGUF metadata; overrides name keys without the `<arch>.` prefix."""
    base = {"embedding_length": 8, "block_count": 1, "attention.head_count": 2,
            "feed_forward_length": 16, "context_length": 32, "pooling_type": 1,
            "vocab_size": 10, "attention.layer_norm_epsilon": 1e-12}
    return {"general.architecture": arch, "tokenizer.ggml.token_type_count": 2,
            **{f"{arch}.{key}": value for key, value in {**base, **overrides}.items()}}


ARCHS = ["bert", "nomic-bert"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pooling_type,pooling", [(1, "mean"), (2, "cls"), (3, "last")])
def test_pooling_follows_the_file(arch: str, pooling_type: int, pooling: str) -> None:
    config = encoder_config_from_gguf(meta(arch, pooling_type=pooling_type))
    assert (config.pooling, config.max_tokens, config.dim) == (pooling, 32, 8)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pooling_type", [0, 4, 7])
def test_pooling_we_do_not_implement_is_refused(arch: str, pooling_type: int) -> None:
    with pytest.raises(UnsupportedModelError, match=f"{arch}.pooling_type {pooling_type} is"):
        encoder_config_from_gguf(meta(arch, pooling_type=pooling_type))


def test_nomic_bert_is_bert_with_rope_swiglu_and_no_biases() -> None:
    bert = encoder_config_from_gguf(meta("bert"))
    nomic = encoder_config_from_gguf(meta("nomic-bert", **{"rope.freq_base": 1000.0}))
    assert (bert.rope_base, bert.gated_ffn, bert.bias) == (None, False, True)
    assert (nomic.rope_base, nomic.gated_ffn, nomic.bias) == (1000.0, True, False)


def test_last_pooling_takes_each_rows_last_real_token() -> None:
    config = EncoderConfig(dim=8, n_layers=1, n_heads=2, ffn_dim=16, vocab_size=10,
                           max_positions=16, type_vocab_size=2, norm_eps=1e-12,
                           pooling="last", normalize=False)
    torch.manual_seed(0)
    model = BertEncoder(config).eval()
    for p in model.parameters():
        p.copy_(torch.randn_like(p))
    ids, mask = pad_batch([[1, 2, 3, 4], [5, 6]])
    hidden = model(ids, mask)
    torch.testing.assert_close(model.embed(ids, mask), torch.stack([hidden[0, 3], hidden[1, 1]]))
