"""ollamapy against its anchors on the same GGUF and thread count, in one run.

    .venv/bin/python benchmarks/bench_vs_anchors.py [--model PATH] [--threads 2]
        [--prompt-tokens 512] [--decode-tokens 128] [--repeats 3] [--devices cpu,cuda,mps]
        [--engines fast,reference,llama.cpp,hf]

Engines, each in a subprocess of its own (so peak RSS is its own), alternating, `--repeats`
times, the best run of each kept:
- ollamapy fast: quantized weights (kernels/) and the compiled decode step (compiled before
  the clock starts, as the server does at load);
- ollamapy reference: the float32 eager engine;
- llama.cpp through llama-cpp-python, built from source into benchmarks/.venv-anchors the
  first time (never a test dependency; ~5 minutes on 2 cores);
- HF transformers generate() on the same GGUF (dequantized to float32).
Prefill tokens/s over a 512-token prompt, decode tokens/s over 128 greedy tokens
(end-of-sequence ignored), time to first token, peak RSS. Also the memory-bandwidth roofline
of the file: the weight bytes a decode step reads ÷ the read bandwidth measured here.
`--devices` repeats the ollamapy engines on every device present. Prints a table with the
ratios to llama.cpp and HF; writes benchmarks/results/bench_vs_anchors.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_engine import DEFAULT_MODEL, peak_rss_mb, prompt_ids, run_hf  # noqa: E402

ANCHOR_VENV = HERE / ".venv-anchors"
LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"


class Silent:
    def push(self, token_id: int) -> str:
        return ""

    def flush(self) -> str:
        return ""


def run_ollamapy(model_path: str, n_prompt: int, n_decode: int, fast: bool,
                 device: str) -> dict:
    import torch

    import ollamapy
    from ollamapy.engine.batch import Batch
    from ollamapy.engine.compiled import CompiledDecode
    from ollamapy.engine.options import Options
    from ollamapy.engine.seq import Seq

    t0 = time.perf_counter()
    m = ollamapy.load(model_path, device=device, fast=fast)
    num_ctx = n_prompt + n_decode + 8
    batch = Batch(m.model, slots=1, num_ctx=num_ctx)
    if fast:
        batch.decode = CompiledDecode(m.model, 1, m.device)
        batch.decode.warm_up(batch.cache)
    load_s = time.perf_counter() - t0
    ids = prompt_ids(m.model.config.vocab_size, n_prompt)
    opts = Options(temperature=0.0, num_predict=n_decode, num_ctx=num_ctx)
    seq = Seq(ids, opts, num_ctx=num_ctx, eos_ids=frozenset(), detokenizer=Silent(),
              device=m.device)
    batch.add(seq)  # prefill and the first token
    while batch.active:
        batch.step()
    if m.device.type == "cuda":
        torch.cuda.synchronize()
    done = seq.result()
    assert done.eval_count == n_decode
    return {
        "engine": f"ollamapy {'fast (int4/int8, compiled)' if fast else 'reference (fp32)'}"
                  f"{'' if device == 'cpu' else f' [{device}]'}",
        "load_s": load_s,
        "prefill_tok_s": done.prompt_eval_count / (done.prompt_eval_duration / 1e9),
        "decode_tok_s": (done.eval_count - 1) / (done.eval_duration / 1e9),
        "ttft_ms": done.prompt_eval_duration / 1e6, "peak_rss_mb": peak_rss_mb(),
    }


def ensure_llama_cpp() -> Path:
    """The anchor environment, built once: llama-cpp-python compiled from its sdist here."""
    python = ANCHOR_VENV / "bin" / "python"
    check = [str(python), "-c", "import llama_cpp"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"building {LLAMA_CPP_PYTHON} into {ANCHOR_VENV} (first run only) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(ANCHOR_VENV)], check=True)
    env = {**os.environ, "CMAKE_ARGS": "-DGGML_NATIVE=ON", "CMAKE_BUILD_PARALLEL_LEVEL": "2"}
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-binary",
                    "llama-cpp-python", LLAMA_CPP_PYTHON], check=True, env=env)
    return python


def read_bandwidth_gb_s(threads: int) -> float:
    """Best of a few sums over a 512 MB tensor: bytes read per second."""
    import torch

    torch.set_num_threads(threads)
    x = torch.ones(128 * 1024 * 1024, dtype=torch.float32)
    best = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        x.sum()
        best = max(best, x.nbytes / (time.perf_counter() - t0))
    return best / 1e9


def decode_bytes(model_path: str) -> int:
    """Bytes a fast decode step reads: every quantized layer (the embedding reads a row)."""
    import ollamapy

    m = ollamapy.load(model_path, device="cpu", fast=True)
    layers = [mod for mod in m.model.modules() if hasattr(mod, "nbytes")
              and not list(mod.children()) and mod is not m.model.tok_embeddings]
    norms = sum(p.numel() * p.element_size() for n, p in m.model.named_parameters()
                if "norm" in n)
    return sum(mod.nbytes for mod in layers) + norms


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.engine == "hf":
        result = run_hf(args.model, args.prompt_tokens, args.decode_tokens)
    else:
        result = run_ollamapy(args.model, args.prompt_tokens, args.decode_tokens,
                              fast=args.engine == "fast", device=args.device)
    print(json.dumps(result))


def run_one(args: argparse.Namespace, engine: str, device: str, anchor_python: Path | None
            ) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if engine == "llama.cpp":
        assert anchor_python is not None
        ids = prompt_ids(_vocab_size(args.model), args.prompt_tokens)  # ollamapy's prompt
        cmd = [str(anchor_python), str(HERE / "anchors_llamacpp.py"), args.model,
               str(args.threads), json.dumps(ids), str(args.decode_tokens)]
    else:
        cmd = [sys.executable, __file__, "--engine", engine, "--model", args.model,
               "--threads", str(args.threads), "--prompt-tokens", str(args.prompt_tokens),
               "--decode-tokens", str(args.decode_tokens), "--device", device]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _vocab_size(model_path: str) -> int:
    from ollamapy.loading.gguf import read_gguf

    with read_gguf(model_path) as f:
        return len(f.metadata["tokenizer.ggml.tokens"])


def present_devices(wanted: list[str]) -> list[str]:
    import torch

    have = {"cpu": True, "cuda": torch.cuda.is_available(),
            "mps": bool(getattr(torch.backends, "mps", None)
                        and torch.backends.mps.is_available())}
    return [d for d in wanted if have.get(d)]


def plot(results: list[dict], roofline: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    names = [r["engine"].replace(" (", "\n(").replace(" [", "\n[") for r in results]
    colors = ["#4c72b0", "#55a868", "#c44e52", "#dd8452", "#8172b2", "#937860"]
    for ax, key, label in zip(axes, ("decode_tok_s", "prefill_tok_s", "ttft_ms", "peak_rss_mb"),
                              ("decode tokens/s", "prefill tokens/s", "time to first token (ms)",
                               "peak RSS (MB)"), strict=True):
        ax.bar(names, [r[key] for r in results], color=colors[: len(results)])
        if key == "decode_tok_s":
            ax.axhline(roofline, linestyle="--", color="gray", label="bandwidth roofline")
            ax.legend(fontsize=7)
        ax.set_title(label)
        ax.tick_params(axis="x", labelsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", default="cpu,cuda,mps")
    parser.add_argument("--engines", default="fast,reference,llama.cpp,hf")
    parser.add_argument("--out", default=str(HERE / "results" / "bench_vs_anchors.json"))
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # internal: run one here
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        return child(args)

    engines = args.engines.split(",")
    anchor = ensure_llama_cpp() if "llama.cpp" in engines else None
    runs = [(e, "cpu") for e in engines]
    for device in present_devices(args.devices.split(",")):
        if device != "cpu":
            runs += [(e, device) for e in engines if e in ("fast", "reference")]
    best: dict[tuple[str, str], dict] = {}
    for _ in range(args.repeats):  # alternate so machine noise hits every engine alike
        for engine, device in runs:
            r = run_one(args, engine, device, anchor)
            key = (engine, device)
            if key not in best or r["decode_tok_s"] > best[key]["decode_tok_s"]:
                best[key] = r
    results = [{**best[k], "model": args.model, "threads": args.threads} for k in runs]

    bandwidth = read_bandwidth_gb_s(args.threads)
    step_bytes = decode_bytes(args.model)
    roofline = bandwidth * 1e9 / step_bytes
    by_engine = {e: best[(e, "cpu")] for e in engines}
    print(f"{Path(args.model).name}, {args.threads} threads, prompt {args.prompt_tokens}, "
          f"decode {args.decode_tokens}, best of {args.repeats}")
    print(f"{'engine':42} {'decode tok/s':>12} {'prefill tok/s':>13} {'TTFT ms':>8} "
          f"{'peak RSS MB':>11}")
    for r in results:
        print(f"{r['engine']:42} {r['decode_tok_s']:12.1f} {r['prefill_tok_s']:13.1f} "
              f"{r['ttft_ms']:8.1f} {r['peak_rss_mb']:11.0f}")
    ratios = {}
    if "fast" in by_engine:
        fast = by_engine["fast"]
        for anchor_name in ("llama.cpp", "hf", "reference"):
            if anchor_name in by_engine:
                a = by_engine[anchor_name]
                ratios[anchor_name] = {"decode": fast["decode_tok_s"] / a["decode_tok_s"],
                                       "prefill": fast["prefill_tok_s"] / a["prefill_tok_s"]}
                print(f"fast / {anchor_name}: decode {ratios[anchor_name]['decode']:.2f}x, "
                      f"prefill {ratios[anchor_name]['prefill']:.2f}x")
    print(f"roofline: {step_bytes / 1e6:.1f} MB a decode step at {bandwidth:.1f} GB/s read "
          f"= {roofline:.0f} tok/s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results, "ratios_fast_to": ratios,
                               "read_bandwidth_gb_s": bandwidth,
                               "decode_step_bytes": step_bytes,
                               "roofline_tok_s": roofline}, indent=2) + "\n")
    plot(results, roofline, out.with_suffix(".png"),
         f"{Path(args.model).name}, {args.threads} threads")
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
