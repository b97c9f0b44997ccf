"""Measure the linear kernels (kernels/): µs per call and error against the GGUF dequantization.

    .venv/bin/python benchmarks/bench_linear.py            # speed table, 2 threads
    .venv/bin/python benchmarks/bench_linear.py --types    # error of each target, per GGUF type
    .venv/bin/python benchmarks/bench_linear.py --rows     # int8, one row: compiled vs aten
    .venv/bin/python benchmarks/bench_linear.py --vnni     # VNNI kernels vs torch's
    .venv/bin/python benchmarks/bench_linear.py --kquant   # K-quant blocks vs int4/int8

Weights are the real SmolLM2-135M tensors where the file is present (fused ffn gate+up
3072x576 and ffn_down 576x1536, Q4_1; token_embd 49152x576, Q8_0, as a tied head), random
otherwise. Times rotate over enough copies of each layer to overflow the 32 MiB L3, so they
include reading the weight from DRAM, as a decode step does. Errors are relative Frobenius
norms: `w err` of the weight the kernel multiplies by, `y err` of its output for M = 4 random
inputs, both against the exact GGUF dequantization in float32.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ollamapy.loading.gguf import GGUFFile
from ollamapy.loading.gguf_rows import rows_from_gguf
from ollamapy.loading.quants import dequantize
from ollamapy_kernels.policy import pack
from ollamapy_kernels.requantize import TARGETS, Target

MODELS = Path(os.environ.get("OLLAMAPY_CACHE", Path.home() / ".cache" / "ollamapy")) / "models"
_L3_BYTES = 32 << 20


class Float32Linear(nn.Module):
    """The engine's reference path: F.linear with a float32 weight and float32 input."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight.float().contiguous()
        self.nbytes = self.weight.nbytes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)

    def dequantize(self) -> torch.Tensor:
        return self.weight


def _smollm2_weights() -> dict[str, tuple[torch.Tensor, str, tuple[int, int]]]:
    """name → (raw bytes, type, (N, K)) for the three benchmark shapes, or {} without the
    file. The fused gate+up is two Q4_1 tensors' bytes back to back (rows concatenate)."""
    path = MODELS / "smollm2-135m.gguf"
    if not path.exists():
        return {}
    with GGUFFile(path) as f:
        def get(name: str) -> tuple[torch.Tensor, str, tuple[int, int]]:
            info = f.tensors[name]
            return f.raw(name), info.type_name, (info.shape[0], info.shape[1])
        gate, up = get("blk.0.ffn_gate.weight"), get("blk.0.ffn_up.weight")
        return {"w13 3072x576": (torch.cat([gate[0], up[0]]), gate[1], (3072, 576)),
                "w2 576x1536": get("blk.0.ffn_down.weight"),
                "head 49152x576": get("token_embd.weight")}


def _random_weights() -> dict[str, tuple[torch.Tensor, str, tuple[int, int]]]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for name, (n, k) in {"w13 3072x576": (3072, 576), "w2 576x1536": (576, 1536),
                         "head 49152x576": (49152, 576)}.items():
        w = torch.randn(n, k, generator=g) * 0.02
        out[name] = (w.view(torch.uint8).reshape(-1), "F32", (n, k))
    return out


def _layer(raw: torch.Tensor, type_name: str, shape: tuple[int, int], kind: str) -> nn.Module:
    if kind == "fp32":
        return Float32Linear(dequantize(raw, type_name, shape))
    return pack(rows_from_gguf(raw, type_name, shape, kind))  # type: ignore[arg-type]


def time_call(fn: Callable[[int], torch.Tensor], copies: int, rounds: int = 5,
              round_s: float = 0.3) -> float:
    """µs of fn(i), i rotating over the copies: the smallest of `rounds` medians (the box is
    shared, and a round that another process interrupts only raises its own median)."""
    for i in range(copies):  # warm-up
        fn(i)
    medians, i = [], 0
    for _ in range(rounds):
        samples: list[float] = []
        deadline = time.perf_counter() + round_s
        while time.perf_counter() < deadline or len(samples) < 10:
            t0 = time.perf_counter()
            fn(i % copies)
            samples.append(time.perf_counter() - t0)
            i += 1
        medians.append(statistics.median(samples))
    return min(medians) * 1e6


def speed_table() -> None:
    weights = _smollm2_weights() or _random_weights()
    source = "smollm2-135m.gguf" if (MODELS / "smollm2-135m.gguf").exists() else "random"
    print(f"threads={torch.get_num_threads()}  weights: {source}")
    print(f"{'shape':<16}{'kernel':<7}{'MB':>7}{'M=1 µs':>9}{'M=4 µs':>9}{'GB/s':>7}"
          f"{'w err':>10}{'y err':>10}")
    for name, (raw, type_name, shape) in weights.items():
        exact = dequantize(raw, type_name, shape)  # (N, K) float32
        x4 = torch.randn(4, shape[1], generator=torch.Generator().manual_seed(1))
        y_exact = F.linear(x4, exact)
        for kind in ("fp32", "bf16", "int8", "int4"):
            layers = [_layer(raw, type_name, shape, kind)]
            copies = max(2, min(256, -(-2 * _L3_BYTES // layers[0].nbytes)))
            layers += [_layer(raw, type_name, shape, kind) for _ in range(copies - 1)]
            act = "fp32" if kind == "fp32" else "bf16"  # what the kernel is fed
            xs = {m: torch.randn(m, shape[1]).to(torch.float32 if act == "fp32"
                                                 else torch.bfloat16) for m in (1, 4)}
            us = {m: time_call(lambda i, x=xs[m], ls=layers: ls[i](x), copies) for m in (1, 4)}
            w_err = ((layers[0].dequantize() - exact).norm() / exact.norm()).item()
            y_err = ((layers[0](x4).float() - y_exact).norm() / y_exact.norm()).item()
            mb = layers[0].nbytes / 1e6
            print(f"{name:<16}{kind:<7}{mb:7.1f}{us[1]:9.0f}{us[4]:9.0f}"
                  f"{layers[0].nbytes / us[1] / 1e3:7.1f}{w_err:10.2e}{y_err:10.2e}")
            del layers


def types_table() -> None:
    """For each GGUF type in the real files: the weight error of each target, over every
    linear weight of that type (norm-weighted), and the y error for random inputs."""
    print(f"{'file':<20}{'type':<6}{'tensors':>8}" + "".join(f"{t + ' w err':>14}"
                                                          for t in TARGETS))
    for file in ("smollm2-135m.gguf", "gemma3-270m.gguf"):
        if not (MODELS / file).exists():
            continue
        with GGUFFile(MODELS / file) as f:
            by_type: dict[str, list[str]] = {}
            for info in f.tensors.values():
                if len(info.shape) == 2:
                    by_type.setdefault(info.type_name, []).append(info.name)
            for type_name, names in sorted(by_type.items()):
                errs: dict[Target, list[float]] = {t: [0.0, 0.0] for t in TARGETS}
                for name in names[:12]:  # the first layers are representative
                    info = f.tensors[name]
                    raw, shape = f.raw(name), (info.shape[0], info.shape[1])
                    exact = dequantize(raw, type_name, shape)
                    for t in TARGETS:
                        got = rows_from_gguf(raw, type_name, shape, t).rounded().dequantize()
                        errs[t][0] += (got - exact).norm().item() ** 2
                        errs[t][1] += exact.norm().item() ** 2
                cells = "".join(f"{(e[0] / e[1]) ** 0.5:14.2e}" for e in errs.values())
                print(f"{file:<20}{type_name:<6}{min(len(names), 12):>8}{cells}")


ROW_SHAPES = [(262144, 640), (151936, 896), (128256, 2048), (49152, 576), (14336, 4096),
              (8192, 2048), (4096, 4096), (2048, 8192), (640, 2048)]  # heads, then body shapes


def rows_table() -> None:
    """Int8Linear at M = 1 inside a compiled function (its fused route when K <= ROW_MAX_K)
    against the aten kernel it otherwise calls, on random codes, weights streamed from memory
    (enough copies to overflow the L3), ms per call and GB/s of codes read."""
    from ollamapy_kernels.int8_linear import ROW_MAX_K, Int8Linear
    from ollamapy_kernels.rows import Int8Rows

    print(f"{'N x K':>14}{'route':>8}{'compiled ms':>13}{'GB/s':>7}{'aten ms':>10}{'GB/s':>7}")
    for n, k in ROW_SHAPES:
        codes = [torch.randint(-127, 128, (n, k), dtype=torch.int8)
                 for _ in range(max(2, 600_000_000 // (n * k)))]
        layer = Int8Linear(Int8Rows(codes[0], torch.rand(n) / 100))
        x = torch.randn(1, k)
        torch._dynamo.reset()  # one shape at a time: no recompile limit reached
        compiled = torch.compile(layer, dynamic=False)
        row = f"{f'{n} x {k}':>14}{'fused' if k <= ROW_MAX_K else 'aten':>8}"
        for f in (compiled, layer):
            f(x)
            t0 = time.perf_counter()
            for _ in range(3):
                for q in codes:  # the same layer over other codes: a buffer, not a recompile
                    layer.q = q
                    f(x)
            ms = (time.perf_counter() - t0) * 1e3 / (3 * len(codes))
            row += f"{ms:13.3f}{n * k / ms / 1e6:7.1f}" if f is compiled else \
                f"{ms:10.3f}{n * k / ms / 1e6:7.1f}"
        print(row)


VNNI_SHAPES = {"int4": [(3072, 576), (576, 1536), (3072, 2048), (16384, 2048), (2048, 8192)],
               "int8": [(1024, 640), (640, 2048), (2048, 8192), (262144, 640), (128256, 2048)]}


def vnni_table() -> None:
    """The VNNI layers against torch's kernels (`Int4Linear`, `Int8Linear` eager) on the same
    random rows, weights streamed from memory (copies rotating past the L3): µs per call at
    M = 1, 4, 16 (decode steps) and 512 (a prompt chunk), GB/s of weight read at M = 1, and
    the output's relative error at M = 4 against the float32 product."""
    from ollamapy_kernels import native
    from ollamapy_kernels.int4_linear import Int4Linear
    from ollamapy_kernels.int4_vnni import Int4VnniLinear
    from ollamapy_kernels.int8_linear import Int8Linear
    from ollamapy_kernels.int8_vnni import Int8VnniLinear
    from ollamapy_kernels.rows import Int4Rows, Int8Rows

    if not native.load():
        raise SystemExit("no AVX-512 VNNI kernels here (see kernels/native.py)")
    ms = (1, 4, 16, 512)
    print(f"{'N x K':>16}{'layer':>10}{'MB':>8}" + "".join(f"{f'M={m} µs':>11}" for m in ms)
          + f"{'GB/s':>7}{'y err':>10}")
    layers_of = {"int4": (Int4Linear, Int4VnniLinear), "int8": (Int8Linear, Int8VnniLinear)}
    for form, shapes in VNNI_SHAPES.items():
        for n, k in shapes:
            g = torch.Generator().manual_seed(0)
            rows = Int4Rows(torch.randint(0, 16, (n, k), generator=g, dtype=torch.uint8),
                            torch.rand(n, k // 32, generator=g) * 0.01 + 1e-3,
                            torch.randn(n, k // 32, generator=g) * 0.01) if form == "int4" \
                else Int8Rows(torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8),
                              torch.rand(n, generator=g) * 0.01)
            x4 = torch.randn(4, k, generator=g)
            y_exact = F.linear(x4, rows.rounded().dequantize())
            for cls in layers_of[form]:
                # each copy its own codes (the int8 layers keep the rows' tensor as it is)
                layers = [cls(dataclasses.replace(rows, q=rows.q.clone()))]
                copies = max(2, min(256, -(-2 * _L3_BYTES // layers[0].nbytes)))
                layers += [cls(dataclasses.replace(rows, q=rows.q.clone()))
                           for _ in range(copies - 1)]
                xs = {m: torch.randn(m, k) for m in ms}
                us = {m: time_call(lambda i, x=xs[m], ls=layers: ls[i](x), copies,
                                   rounds=3 if m < 512 else 1) for m in ms}
                err = ((layers[0](x4) - y_exact).norm() / y_exact.norm()).item()
                print(f"{f'{n} x {k}':>16}{cls.__name__.removesuffix('Linear'):>10}"
                      f"{layers[0].nbytes / 1e6:8.1f}" + "".join(f"{us[m]:11.0f}" for m in ms)
                      + f"{layers[0].nbytes / us[1] / 1e3:7.1f}{err:10.2e}")
                del layers


def _llama_1b_weights() -> dict[str, tuple[torch.Tensor, str, tuple[int, int]]]:
    """name → (raw bytes, type, (N, K)) of the Llama-3.2-1B-shaped Q4_K_M file's K-quant
    weights (benchmarks/native_llamacpp.py makes it: random weights in llama.cpp's blocks)."""
    from native_llamacpp import llama_1b

    with GGUFFile(llama_1b()) as f:
        def get(name: str) -> tuple[torch.Tensor, str, tuple[int, int]]:
            info = f.tensors[name]
            return f.raw(name), info.type_name, (info.shape[0], info.shape[1])
        by_type: dict[str, tuple[torch.Tensor, str, tuple[int, int]]] = {}
        for layer in range(2):  # Q4_K_M: Q6_K and Q4_K alternate in attn_v and ffn_down
            for part in ("attn_q", "attn_v", "ffn_gate", "ffn_down"):
                raw, type_name, shape = get(f"blk.{layer}.{part}.weight")
                by_type.setdefault(f"{part} {type_name}", (raw, type_name, shape))
        by_type["head Q6_K"] = get("token_embd.weight")
        return by_type


def kquant_table() -> None:
    """Each K-quant weight of the 1B file read in its own blocks (`KQuantVnniLinear`) against
    the form it had before (Q4_K: int4 groups with bf16 scale and zero, 5 bits; Q6_K: int8
    per row), weights streamed from memory: µs per call at M = 1, 4 and 512, GB/s of weight
    read at M = 1, and the output's relative error at M = 4 against the file's weight."""
    from ollamapy.loading.gguf_rows import block_rows
    from ollamapy_kernels import native

    if not native.load():
        raise SystemExit("no AVX-512 VNNI kernels here (see kernels/native.py)")
    ms = (1, 4, 512)
    print(f"{'weight':>16}{'N x K':>14}{'layer':>10}{'MB':>8}"
          + "".join(f"{f'M={m} µs':>11}" for m in ms) + f"{'GB/s':>7}{'y err':>10}")
    for name, (raw, type_name, (n, k)) in _llama_1b_weights().items():
        g = torch.Generator().manual_seed(0)
        x4 = torch.randn(4, k, generator=g)
        y_exact = F.linear(x4, dequantize(raw, type_name, (n, k)))
        before: Target = "int4" if type_name == "Q4_K" else "int8"
        for label in ("blocks", before):
            def make(r: torch.Tensor, label: str = label, type_name: str = type_name,
                     shape: tuple[int, int] = (n, k)) -> nn.Module:
                if label == "blocks":
                    return pack(block_rows(r, type_name, shape))
                return pack(rows_from_gguf(r, type_name, shape, label))  # type: ignore[arg-type]

            first = make(raw.clone())
            copies = max(2, min(64, -(-2 * _L3_BYTES // first.nbytes)))
            layers = [first, *(make(raw.clone()) for _ in range(copies - 1))]
            xs = {m: torch.randn(m, k, generator=g) for m in ms}
            us = {m: time_call(lambda i, x=xs[m], ls=layers: ls[i](x), copies,
                               rounds=3 if m < 512 else 1) for m in ms}
            err = ((first(x4) - y_exact).norm() / y_exact.norm()).item()
            print(f"{name:>16}{f'{n} x {k}':>14}{label:>10}{first.nbytes / 1e6:8.1f}"
                  + "".join(f"{us[m]:11.0f}" for m in ms)
                  + f"{first.nbytes / us[1] / 1e3:7.1f}{err:10.2e}")
            del layers, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", action="store_true", help="error per GGUF type instead")
    parser.add_argument("--rows", action="store_true", help="int8 at M = 1: compiled vs aten")
    parser.add_argument("--vnni", action="store_true", help="VNNI kernels vs torch's")
    parser.add_argument("--kquant", action="store_true", help="K-quant blocks vs int4/int8")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.rows:
        with torch.no_grad():  # not inference_mode: compiled code takes no inference tensors
            return rows_table()
    with torch.inference_mode():
        if args.vnni:
            return vnni_table()
        if args.kquant:
            return kquant_table()
        types_table() if args.types else speed_table()


if __name__ == "__main__":
    main()
