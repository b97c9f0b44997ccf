"""The BERT sentence encoder: golden all-minilm embeddings, batching, and last hidden states
against transformers' BertModel on a tiny random checkpoint read through our loader."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ollamapy.engine.bert import BertEncoder, pad_batch, truncate
from ollamapy.loading.encoder_weights import encoder_from_hf
from ollamapy.loading.hf_config import encoder_config_from_hf
from ollamapy.loading.safetensors import read_hf_folder

CACHE = Path(os.environ.get("OLLAMAPY_CACHE", Path.home() / ".cache" / "ollamapy"))
MINILM = CACHE / "models" / "all-minilm"
GOLDEN = Path(__file__).parents[1] / "data" / "embeddings_minilm.json"


@pytest.fixture(scope="module")
def minilm() -> BertEncoder:
    if not (MINILM / "model.safetensors").is_file():
        pytest.skip(f"{MINILM} is missing: run `make setup` (scripts/fetch_models.py) first")
    return encoder_from_hf(read_hf_folder(MINILM), device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def cases() -> list[dict]:
    return json.loads(GOLDEN.read_text())["cases"]


# -- the real model against golden embeddings ---------------------------------------------------


def test_config_comes_from_the_folder(minilm: BertEncoder) -> None:
    c = minilm.config
    assert (c.dim, c.n_layers, c.n_heads, c.ffn_dim, c.vocab_size) == (384, 6, 12, 1536, 30522)
    assert (c.pooling, c.normalize, c.max_tokens, c.max_positions) == ("mean", True, 256, 512)


def test_golden_embeddings(minilm: BertEncoder, cases: list[dict]) -> None:
    cosines = []
    for case in cases:
        ids, mask = pad_batch([case["input_ids"]])
        got = minilm.embed(ids, mask)[0]  # (dim,)
        expected = torch.tensor(case["embedding"])
        cosine = F.cosine_similarity(got, expected, dim=0).item()
        cosines.append(cosine)
        assert cosine >= 0.9999, f"{case['text'][:40]!r}: cosine {cosine:.6f}"
        assert got.norm().item() == pytest.approx(1.0, abs=1e-5)
    print(f"minimum cosine over {len(cases)} cases: {min(cosines):.9f}")


def test_batched_equals_one_by_one(minilm: BertEncoder, cases: list[dict]) -> None:
    batch = [case["input_ids"] for case in cases]
    assert len({len(ids) for ids in batch}) > 1  # really padded
    together = minilm.embed_ids(batch)  # (B, dim), one padded forward
    alone = torch.cat([minilm.embed_ids([ids]) for ids in batch])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together.norm(dim=-1), torch.ones(len(batch)))


def test_long_input_is_truncated_like_hf(minilm: BertEncoder, cases: list[dict]) -> None:
    # the golden long case was truncated by HF to [CLS] + 254 ids + [SEP]; give ours more
    golden = max(cases, key=lambda c: len(c["input_ids"]))
    assert len(golden["input_ids"]) == minilm.config.max_tokens
    longer = golden["input_ids"][:-1] + [1037] * 100 + golden["input_ids"][-1:]
    assert truncate(longer, minilm.config.max_tokens) == golden["input_ids"]
    got = minilm.embed_ids([longer])[0]
    cosine = F.cosine_similarity(got, torch.tensor(golden["embedding"]), dim=0).item()
    assert cosine >= 0.9999


def test_bfloat16_weights_stay_close(cases: list[dict]) -> None:
    if not (MINILM / "model.safetensors").is_file():
        pytest.skip(f"{MINILM} is missing")
    model = encoder_from_hf(read_hf_folder(MINILM), device="cpu", dtype=torch.bfloat16)
    got = model.embed_ids([case["input_ids"] for case in cases])
    assert got.dtype == torch.float32
    expected = torch.tensor([case["embedding"] for case in cases])
    assert F.cosine_similarity(got, expected).min().item() > 0.99


# -- a tiny random BertModel saved by transformers, read by our loader --------------------------


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=24, type_vocab_size=2,
        hidden_act="gelu", layer_norm_eps=1e-12,
    )  # fmt: skip
    torch.manual_seed(0)
    hf = transformers.BertModel(config).eval()
    with torch.no_grad():  # random norms and biases too, so no weight is trivially 0 or 1
        for name, p in hf.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.2)
    folder = tmp_path_factory.mktemp("tiny-bert")
    hf.save_pretrained(folder)
    ours = encoder_from_hf(read_hf_folder(folder), device="cpu", dtype=torch.float32)
    return hf, ours


def test_hidden_states_match_transformers(tiny_bert) -> None:
    hf, ours = tiny_bert
    ids = torch.randint(0, 64, (2, 20), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 20, dtype=torch.bool)
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    torch.testing.assert_close(ours(ids, mask), expected, atol=1e-5, rtol=1e-5)


def test_hidden_states_match_transformers_with_padding(tiny_bert) -> None:
    hf, ours = tiny_bert
    lengths = [20, 7, 13]
    seqs = [torch.randint(1, 64, (n,), generator=torch.Generator().manual_seed(n)).tolist()
            for n in lengths]  # fmt: skip
    ids, mask = pad_batch(seqs)  # (3, 20) each
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    got = ours(ids, mask)
    # only real tokens have defined states; padded positions are never pooled
    torch.testing.assert_close(got[mask], expected[mask], atol=1e-5, rtol=1e-5)
    # and a padded row equals the same sequence run alone
    for row, seq in enumerate(seqs):
        alone = ours(torch.tensor([seq]), torch.ones(1, len(seq), dtype=torch.bool))[0]
        torch.testing.assert_close(got[row, : len(seq)], alone, atol=1e-5, rtol=1e-5)


def test_tiny_embeddings_are_masked_means(tiny_bert) -> None:
    hf, ours = tiny_bert
    ids, mask = pad_batch([[2, 5, 9, 3], [2, 7, 3]])
    with torch.no_grad():
        hidden = hf(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    m = mask.unsqueeze(-1).float()  # (B, T, 1)
    expected = F.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)
    got = ours.embed(ids, mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(2))


# -- config and batching rules ------------------------------------------------------------------

HF_CONFIG = {
    "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
    "intermediate_size": 1536, "vocab_size": 30522, "max_position_embeddings": 512,
    "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
}  # fmt: skip


def test_config_defaults_without_sentence_transformers_files() -> None:
    c = encoder_config_from_hf(HF_CONFIG, None, None)
    assert (c.pooling, c.normalize, c.max_tokens, c.head_dim) == ("mean", True, 512, 32)


def test_config_reads_pooling_normalize_and_length() -> None:
    modules = [
        {"type": "sentence_transformers.models.Transformer"},
        {"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"},
    ]
    c = encoder_config_from_hf(
        HF_CONFIG, {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False},
        {"max_seq_length": 128}, modules=modules,
    )  # fmt: skip
    assert (c.pooling, c.normalize, c.max_tokens) == ("cls", False, 128)
    # a sentence length beyond the position table is clamped to it
    c = encoder_config_from_hf(HF_CONFIG, None, {"max_seq_length": 4096})
    assert c.max_tokens == 512


@pytest.mark.parametrize(
    ("config", "pooling", "message"),
    [
        ({**HF_CONFIG, "hidden_act": "relu"}, None, "activation"),
        ({**HF_CONFIG, "position_embedding_type": "relative_key"}, None, "position"),
        (HF_CONFIG, {"pooling_mode_max_tokens": True, "pooling_mode_mean_tokens": False},
         "pooling"),
    ],
)  # fmt: skip
def test_config_rejects_what_we_do_not_implement(config, pooling, message) -> None:
    with pytest.raises(ValueError, match=message):
        encoder_config_from_hf(config, pooling, None)


def test_truncate_keeps_cls_and_sep() -> None:
    assert truncate([101, 1, 2, 3, 4, 102], 4) == [101, 1, 2, 102]
    assert truncate([101, 1, 102], 4) == [101, 1, 102]


def test_pad_batch_pads_right_with_a_mask() -> None:
    ids, mask = pad_batch([[5, 6, 7], [8]])
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[True, True, True], [True, False, False]]
    with pytest.raises(ValueError, match="at least one token"):
        pad_batch([[1], []])
