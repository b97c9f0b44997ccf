"""Every architecture end to end through GGUF: a tiny random transformers model is written
to a .gguf with gguf-py the way llama.cpp's converter lays it out, loaded back with
`ollamapy.load`, and its logits compared with the transformers model's."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

import ollamapy
from ollamapy.loading.gguf import read_gguf
from ollamapy.loading.load import VOCABULARY_ARRAYS, trim_heap
from tests.engine.hf_tiny import VOCAB, tiny_hf_model

ARCHS = ["llama", "qwen2", "qwen3", "gemma3"]

# GGUF name for each HF tensor suffix (llama.cpp's tensor map for these architectures)
BLOCK_NAMES = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm",
}


def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's converter stores llama q/k rows as interleaved RoPE pairs."""
    return (w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def gguf_tensor_name(hf: str, arch: str) -> str:
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
           "output_norm.weight", "lm_head.weight": "output.weight"}
    if hf in top:
        return top[hf]
    _, _, layer, rest = hf.split(".", 3)
    stem, kind = rest.rsplit(".", 1)
    if stem == "post_attention_layernorm":
        stem_gguf = "post_attention_norm" if arch == "gemma3" else "ffn_norm"
    else:
        stem_gguf = BLOCK_NAMES[stem]
    return f"blk.{layer}.{stem_gguf}.{kind}"


def write_tiny_gguf(hf, arch: str, path: Path, extra: dict[str, np.ndarray] | None = None,
                    chat_template: str | None = None) -> None:
    """extra: more tensors to store after the model's (a vision tower's, say)."""
    cfg = hf.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    theta = (cfg.rope_parameters["full_attention"]["rope_theta"] if arch == "gemma3"
             else cfg.rope_parameters["rope_theta"])
    w.add_rope_freq_base(theta)
    if arch == "gemma3":
        w.add_sliding_window(cfg.sliding_window)
        w.add_array(f"{arch}.attention.sliding_window_pattern",
                    [t == "sliding_attention" for t in cfg.layer_types])
    # a byte-level BPE vocabulary of single characters: two control tokens, then "Ġ" (space)
    # and printable ASCII, enough to tokenize simple text
    tokens = ["<s>", "</s>", "Ġ"] + [chr(c) for c in range(33, 33 + VOCAB - 3)]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL] * 2 + [gguf.TokenType.NORMAL] * (VOCAB - 2))
    w.add_token_merges([])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.add_add_bos_token(True)
    if chat_template is not None:
        w.add_chat_template(chat_template)
    for name, t in hf.state_dict().items():
        data = t.detach().float().numpy()
        if arch == "llama" and name.endswith("q_proj.weight"):
            data = llama_cpp_permute(data, cfg.num_attention_heads)
        elif arch == "llama" and name.endswith("k_proj.weight"):
            data = llama_cpp_permute(data, cfg.num_key_value_heads)
        if arch == "gemma3" and name.endswith("norm.weight"):
            data = data + 1.0  # gemma's RMSNorm scales by 1 + w; the converter stores 1 + w
        if arch in ("qwen2", "qwen3", "gemma3") and name == "lm_head.weight":
            continue  # tied to the embeddings
        w.add_tensor(gguf_tensor_name(name, arch), np.ascontiguousarray(data))
    for name, data in (extra or {}).items():
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_gguf_logits_match_transformers(arch: str, tmp_path: Path) -> None:
    # gemma3's GGUF has no query_pre_attn_scalar: llama.cpp scales by 1/sqrt(head_dim)
    overrides = {"query_pre_attn_scalar": 32} if arch == "gemma3" else {}
    hf = tiny_hf_model(arch, seed=5, **overrides)
    path = tmp_path / f"tiny-{arch}.gguf"
    write_tiny_gguf(hf, arch, path)

    m = ollamapy.load(path, device="cpu")
    assert m.model.config.arch == arch
    ids = torch.randint(0, VOCAB, (1, 16), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = hf(ids).logits[0, -1].float()  # (vocab,)
    torch.testing.assert_close(m.logits(ids[0].tolist()), expected, atol=1e-4, rtol=1e-4)


def test_tiny_gguf_generates_through_the_public_api(tmp_path: Path) -> None:
    hf = tiny_hf_model("llama", seed=6)
    path = tmp_path / "tiny-llama.gguf"
    write_tiny_gguf(hf, "llama", path)
    m = ollamapy.load(path, device="cpu")
    ids = m.tokenize("hi there")
    assert ids[0] == 0 and len(ids) == 1 + len("hi there")  # BOS, then one token a character
    chunks = list(m.generate("hi there", raw=True, temperature=0, num_predict=6))
    final = chunks[-1]
    # greedy through generate equals argmax over our uncached logits, token by token
    expected: list[int] = []
    while len(expected) < 6:
        token = int(torch.argmax(m.logits(ids + expected)))
        if token == 1:  # EOS
            break
        expected.append(token)
    assert final["done"] and final["eval_count"] == len(expected)
    assert final["done_reason"] == ("length" if len(expected) == 6 else "stop")
    assert "".join(c["response"] for c in chunks) == m.detokenize(expected)


def test_the_checkpoint_leaves_the_vocabulary_arrays_to_the_tokenizer(tmp_path: Path) -> None:
    """The loaded model's metadata keeps the file's keys but the vocabulary's arrays (a 262k
    vocabulary's are ~48 MB of Python objects, held by the tokenizer already)."""
    hf = tiny_hf_model("llama", seed=6)
    path = tmp_path / "tiny-llama.gguf"
    write_tiny_gguf(hf, "llama", path)
    with read_gguf(path) as f:
        stored = dict(f.metadata)
    kept = ollamapy.load(path, device="cpu").checkpoint.metadata
    assert VOCABULARY_ARRAYS & stored.keys()  # the file has them
    assert not VOCABULARY_ARRAYS & kept.keys()
    assert kept == {k: v for k, v in stored.items() if k not in VOCABULARY_ARRAYS}
    trim_heap()  # and giving the heap back is harmless at any time
