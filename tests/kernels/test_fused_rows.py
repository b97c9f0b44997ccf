"""Permuting and concatenating rows before packing: a fused, un-permuted layer holds exactly
the weights of its parts, in the engine's order."""

from __future__ import annotations

import pytest
import torch

from ollamapy.loading.gguf_rows import rows_from_gguf
from ollamapy.loading.weights import unpermute_qk
from ollamapy_kernels.policy import pack, pack_reference
from ollamapy_kernels.requantize import Target, convert_rows
from ollamapy_kernels.rows import concat_rows
from tests.kernels.helpers import linear_bound, random_gguf

# llama-shaped attention: 9 query heads, 3 kv heads, head_dim 64, dim 576 (SmolLM2)
N_HEADS, N_KV_HEADS, HEAD_DIM, DIM = 9, 3, 64, 576


@pytest.mark.parametrize(("type_name", "target"),
                         [("Q4_1", "int4"), ("Q4_K", "int4"), ("Q8_0", "int8"),
                          ("Q5_0", "int4"), ("F16", "bf16")])
def test_fused_qkv_with_llama_unpermutation(type_name: str, target: Target) -> None:
    k_dim = 512 if type_name == "Q4_K" else DIM  # K-quants need K % 256 == 0
    shapes = {"q": (N_HEADS * HEAD_DIM, k_dim), "k": (N_KV_HEADS * HEAD_DIM, k_dim),
              "v": (N_KV_HEADS * HEAD_DIM, k_dim)}
    raws = {n: random_gguf(type_name, s, seed=i) for i, (n, s) in enumerate(shapes.items())}
    rows = {n: rows_from_gguf(raws[n], type_name, shapes[n], target) for n in shapes}
    index = {"q": unpermute_qk(torch.arange(shapes["q"][0]), N_HEADS),
             "k": unpermute_qk(torch.arange(shapes["k"][0]), N_KV_HEADS)}
    fused_rows = concat_rows([rows["q"].permute_rows(index["q"]),
                              rows["k"].permute_rows(index["k"]), rows["v"]])
    layer = pack(fused_rows)
    # what the loader does to the dense weights: unpermute_qk on each, then stack
    parts = {n: pack(rows[n]).dequantize() for n in shapes}  # type: ignore[operator]
    expected = torch.cat([unpermute_qk(parts["q"], N_HEADS),
                          unpermute_qk(parts["k"], N_KV_HEADS), parts["v"]])
    assert torch.equal(layer.dequantize(), expected)  # type: ignore[operator]
    x = torch.randn(4, k_dim)
    ref = pack_reference(fused_rows)
    y, y_ref = layer(x), ref(x)
    assert ((y - y_ref).abs() <= linear_bound(x, ref.weight, y_ref, False)).all()
    q, k, v = y.split([shapes["q"][0], shapes["k"][0], shapes["v"][0]], dim=-1)
    assert q.shape == (4, N_HEADS * HEAD_DIM) and v.shape == (4, N_KV_HEADS * HEAD_DIM)


def test_fused_gate_up_of_mixed_types_after_conversion() -> None:
    """gemma3 mixes types inside one layer (attn_v Q8_0 beside Q5_0 q/k): concatenation asks
    for one form, and `convert_rows` brings the odd one over (a Q4 part stays lossless)."""
    shape = (256, 512)
    gate = rows_from_gguf(random_gguf("Q4_K", shape), "Q4_K", shape, "int4")
    up = rows_from_gguf(random_gguf("Q6_K", shape), "Q6_K", shape, "int8")
    with pytest.raises(TypeError, match="one form"):
        concat_rows([gate, up])
    fused = concat_rows([convert_rows(gate, "int8"), up])
    assert fused.shape == (512, 512)
    assert convert_rows(gate, "int4") is gate


def test_concat_refuses_different_widths() -> None:
    a = rows_from_gguf(random_gguf("Q4_0", (16, 64)), "Q4_0", (16, 64), "int4")
    b = rows_from_gguf(random_gguf("Q4_0", (16, 96)), "Q4_0", (16, 96), "int4")
    with pytest.raises(ValueError, match="input widths"):
        concat_rows([a, b])
