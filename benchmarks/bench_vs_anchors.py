"""ollamapy against native llama.cpp on the same GGUF files and thread count, in one run.

    .venv/bin/python benchmarks/bench_vs_anchors.py [--models smollm2,gemma3,llama-1b]
        [--threads 2] [--prompt-tokens 512] [--decode-tokens 128] [--repeats 3]
        [--devices cpu,cuda,mps] [--engines fast,llama-bench] [--no-kl]

Files (`--models`: these names, or paths to GGUF files): smollm2-135m (Q4_1) and gemma3-270m
(Q4_K_M), the default models, and a Llama-3.2-1B-shaped Q4_K_M file with random weights
(benchmarks/native_llamacpp.py makes it with llama.cpp's own converter and quantizer).

Engines (`--engines`), each run in a subprocess of its own (its peak RSS is its own),
alternating, `--repeats` times, the best run of each kept:
- fast: ollamapy as a notebook runs it, `ollamapy.load(path, fast=True)`: quantized weights
  and the compiled decode step (compiled, or loaded from the compile cache, while loading,
  before the clock starts); the prompt in `num_batch` (512) chunks; on every device present;
- llama-bench: native llama.cpp (benchmarks/native_llamacpp.py builds it from the
  llama-cpp-python 0.3.36 sdist, cmake -DGGML_NATIVE=ON): `-p N -n M -r 1` (it warms up
  first); its time to first token is N / its prompt rate;
- reference (ollamapy's float32 eager engine) and hf (transformers generate() on the GGUF
  dequantized): slow on the 1B file, so not run unless named.
Prompt: a fixed pseudo-random one of `--prompt-tokens` ids; decode: `--decode-tokens` greedy
tokens, end-of-sequence ignored.

Fidelity (unless --no-kl): the mean KL divergence to ollamapy's float32 reference (the file
dequantized, computed in float32) over every position of PROMPTS, for the fast path (as
served: each prompt's first half prefilled into its KV cache, the rest decoded one token at a
time, so the cache's type and the decode attention count) and for llama.cpp (its logits
through llama-cpp-python, installed into benchmarks/.venv-anchors over the same native
libraries). Also the memory-bandwidth roofline of each file: the weight bytes
a fast decode step reads ÷ the read bandwidth measured here.

Prints a table with the ratios fast / llama-bench; writes
benchmarks/results/bench_vs_anchors.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_engine import peak_rss_mb, prompt_ids, run_hf  # noqa: E402
from native_llamacpp import llama_1b, native_dir, tools  # noqa: E402

ANCHOR_VENV = HERE / ".venv-anchors"
LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"
MODELS = Path(os.environ.get("OLLAMAPY_CACHE", Path.home() / ".cache" / "ollamapy")) / "models"
FILES = {"smollm2": lambda: MODELS / "smollm2-135m.gguf",
         "gemma3": lambda: MODELS / "gemma3-270m.gguf",
         "llama-1b": llama_1b}
PROMPTS = ["The quick brown fox jumps over the lazy dog. Hello world!",
           "Hello world! How are you today? I am fine, thank you.",
           "Rotary position embeddings rotate pairs of features by an angle.",
           "A short story: the model read the file, and every number came out right.",
           "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) +",
           "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen; "
           "the light reactions happen in the thylakoid membranes, and the Calvin cycle"]


class Silent:
    def push(self, token_id: int) -> str:
        return ""

    def flush(self) -> str:
        return ""


# --- one engine, in its own process ------------------------------------------------------


def run_ollamapy(model_path: str, n_prompt: int, n_decode: int, fast: bool,
                 device: str) -> dict:
    """Load as a notebook does, warm up once, then one timed prefill + decode."""
    import torch

    import ollamapy
    from ollamapy.engine.generate import Done, generate
    from ollamapy.engine.options import Options
    from ollamapy.engine.seq import window

    t0 = time.perf_counter()
    m = ollamapy.load(model_path, device=device, fast=fast)  # compiles when fast
    load_s = time.perf_counter() - t0
    ids = prompt_ids(m.decoder.config.vocab_size, n_prompt)

    def run(ids: list[int], n: int) -> Done:
        opts = Options(temperature=0.0, num_predict=n)
        *_, done = generate(m.decoder, ids, opts, eos_ids=frozenset(), detokenizer=Silent(),
                            decode=m.compiled_decode(window(opts, m.context_length)))
        assert isinstance(done, Done) and done.eval_count == n
        return done

    with torch.no_grad():  # not inference_mode: the compiled step takes no inference tensors
        run(ids[:16], 4)  # warm-up: first-call allocations, as llama-bench warms up
        done = run(ids, n_decode)
    return {
        "engine": f"ollamapy {'fast' if fast else 'reference (fp32)'}"
                  f"{'' if device == 'cpu' else f' [{device}]'}",
        "load_s": load_s,
        "prefill_tok_s": done.prompt_eval_count / (done.prompt_eval_duration / 1e9),
        "decode_tok_s": (done.eval_count - 1) / (done.eval_duration / 1e9),
        "ttft_ms": done.prompt_eval_duration / 1e6, "peak_rss_mb": peak_rss_mb(),
    }


def run_llama_bench(model_path: str, threads: int, n_prompt: int, n_decode: int) -> dict:
    """Native llama-bench's prompt (pp) and generation (tg) rates, and its peak RSS."""
    cmd = [str(tools()["llama-bench"]), "-m", model_path, "-t", str(threads),
           "-p", str(n_prompt), "-n", str(n_decode), "-r", "1", "-o", "json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage: its peak RSS
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}")
    rows = json.loads(out)
    pp = next(r["avg_ts"] for r in rows if r["n_prompt"] and not r["n_gen"])
    tg = next(r["avg_ts"] for r in rows if r["n_gen"] and not r["n_prompt"])
    return {"engine": "llama.cpp (native llama-bench)", "load_s": None, "prefill_tok_s": pp,
            "decode_tok_s": tg, "ttft_ms": n_prompt / pp * 1e3,
            "peak_rss_mb": usage.ru_maxrss / 1024, "build_commit": rows[0].get("build_commit")}


def fidelity(model_path: str, threads: int) -> dict:
    """Mean KL to the float32 reference over PROMPTS, fast path and llama.cpp; and the bytes
    a fast decode step reads."""
    import torch
    from bench_families import find_llama_cpp, first_error, kl_mean, llama_cpp_logits

    import ollamapy

    reference = ollamapy.load(model_path, device="cpu")
    prompts = [reference.tokenize(text) for text in PROMPTS]
    with torch.inference_mode():
        want = [reference.model(torch.tensor([ids]), all_logits=True)[0].float()
                for ids in prompts]
    del reference
    fast = ollamapy.load(model_path, device="cpu", fast=True, compile=False)
    with torch.inference_mode():
        got = [served_logits(fast.model, ids) for ids in prompts]
    result: dict[str, Any] = {
        "kl_fast": sum(kl_mean(w, g) for w, g in zip(want, got, strict=True)) / len(want),
        "decode_step_bytes": decode_bytes(fast), "prompt_tokens": [len(p) for p in prompts]}
    anchor = find_llama_cpp(None, build=False)
    if "reason" in anchor:
        result["kl_llama_cpp"], result["kl_llama_cpp_why_not"] = None, anchor["reason"]
        return result
    try:
        with tempfile.TemporaryDirectory() as tmp:
            theirs, _ = llama_cpp_logits(anchor, Path(model_path), prompts, threads, Path(tmp))
        result["kl_llama_cpp"] = sum(kl_mean(w, t[:, :w.shape[-1]]) for w, t in
                                     zip(want, theirs, strict=True)) / len(want)
    except Exception as e:  # reported, not fatal: the speed figures still stand
        result["kl_llama_cpp"], result["kl_llama_cpp_why_not"] = None, first_error(e)
    return result


def served_logits(model: Any, ids: list[int]) -> Any:
    """float32 logits at every position of ids (T, vocab) as the server computes them: the
    first half prefilled into a KV cache of the served type, the rest decoded one token at a
    time (the decode steps' attention kernel reading that cache)."""
    import torch

    from ollamapy.engine.kv_cache import KVCache

    cache = KVCache(model.config, len(ids), dtype=model.kv_dtype)
    half = len(ids) // 2
    rows = [model(torch.tensor([ids[:half]]), 0, cache, all_logits=True)[0]]
    for pos in range(half, len(ids)):
        rows.append(model(torch.tensor([[ids[pos]]]), pos, cache, all_logits=True)[0])
    return torch.cat(rows).float()


def decode_bytes(fast: Any) -> int:
    """Bytes a fast decode step reads: every quantized layer (the embedding reads a row) and
    the norms."""
    model = fast.model
    layers = [mod for mod in model.modules() if hasattr(mod, "nbytes")
              and not list(mod.children()) and mod is not model.tok_embeddings]
    norms = sum(p.numel() * p.element_size() for n, p in model.named_parameters()
                if "norm" in n)
    return sum(mod.nbytes for mod in layers) + norms


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.engine == "hf":
        result = run_hf(args.model, args.prompt_tokens, args.decode_tokens)
    elif args.engine == "kl":
        result = fidelity(args.model, args.threads)
    else:
        result = run_ollamapy(args.model, args.prompt_tokens, args.decode_tokens,
                              fast=args.engine == "fast", device=args.device)
    print(json.dumps(result))


def run_one(args: argparse.Namespace, path: Path, engine: str, device: str) -> dict:
    if engine == "llama-bench":
        return run_llama_bench(str(path), args.threads, args.prompt_tokens, args.decode_tokens)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, __file__, "--engine", engine, "--model", str(path),
           "--threads", str(args.threads), "--prompt-tokens", str(args.prompt_tokens),
           "--decode-tokens", str(args.decode_tokens), "--device", device]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"{engine} on {path.name}: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the anchors' environment ------------------------------------------------------------


def ensure_llama_cpp() -> Path:
    """benchmarks/.venv-anchors: llama-cpp-python 0.3.36's Python package (built with
    -DLLAMA_BUILD=OFF: no compiler run) over the native libraries tools() built, so its
    logits come from the same llama.cpp that llama-bench times."""
    python = ANCHOR_VENV / "bin" / "python"
    check = [str(python), "-c", "import llama_cpp"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    tools()
    print(f"installing {LLAMA_CPP_PYTHON} into {ANCHOR_VENV} over the native build ...",
          flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(ANCHOR_VENV)], check=True)
    env = {**os.environ, "CMAKE_ARGS": "-DLLAMA_BUILD=OFF"}
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-binary",
                    "llama-cpp-python", LLAMA_CPP_PYTHON], check=True, env=env)
    package = subprocess.run([str(python), "-c", "import importlib.util as u; "
                              "print(u.find_spec('llama_cpp').submodule_search_locations[0])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    lib = Path(package) / "lib"
    lib.mkdir(exist_ok=True)
    for so in (native_dir() / "build" / "bin").glob("lib*.so*"):
        shutil.copy2(so, lib / so.name)
    subprocess.run(check, check=True)
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


def present_devices(wanted: list[str]) -> list[str]:
    import torch

    have = {"cpu": True, "cuda": torch.cuda.is_available(),
            "mps": bool(getattr(torch.backends, "mps", None)
                        and torch.backends.mps.is_available())}
    return [d for d in wanted if have.get(d)]


# --- output ------------------------------------------------------------------------------


def ratios(results: list[dict]) -> dict[str, float]:
    """fast (CPU) / llama-bench, where both ran."""
    fast = next((r for r in results if r["engine"] == "ollamapy fast"), None)
    native = next((r for r in results if r["engine"].startswith("llama.cpp")), None)
    if not fast or not native:
        return {}
    return {"decode": fast["decode_tok_s"] / native["decode_tok_s"],
            "prefill": fast["prefill_tok_s"] / native["prefill_tok_s"],
            "peak_rss": fast["peak_rss_mb"] / native["peak_rss_mb"]}


def markdown(files: dict[str, dict]) -> str:
    def num(v: float | None, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    lines = ["| file | fast decode | llama-bench tg | ratio | fast prefill | llama-bench pp "
             "| ratio | peak RSS fast / llama.cpp MB | ratio | KL fast | KL llama.cpp |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, f in files.items():
        by = {r["engine"]: r for r in f["results"]}
        fast, native = by.get("ollamapy fast", {}), by.get("llama.cpp (native llama-bench)", {})
        r, kl = f["ratios"], f.get("fidelity", {})
        lines.append(
            f"| {name} | {num(fast.get('decode_tok_s'), '.1f')} "
            f"| {num(native.get('decode_tok_s'), '.1f')} | {num(r.get('decode'), '.2f')} "
            f"| {num(fast.get('prefill_tok_s'), '.0f')} "
            f"| {num(native.get('prefill_tok_s'), '.0f')} | {num(r.get('prefill'), '.2f')} "
            f"| {num(fast.get('peak_rss_mb'), '.0f')} / {num(native.get('peak_rss_mb'), '.0f')} "
            f"| {num(r.get('peak_rss'), '.2f')} | {num(kl.get('kl_fast'), '.2e')} "
            f"| {num(kl.get('kl_llama_cpp'), '.2e')} |")
    return "\n".join(lines)


def plot(files: dict[str, dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = sorted({r["engine"] for f in files.values() for r in f["results"]})
    panels = [("decode_tok_s", "decode tokens/s"), ("prefill_tok_s", "prefill tokens/s"),
              ("peak_rss_mb", "peak RSS (MB)")]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.5))
    width = 0.8 / max(1, len(engines))
    names = list(files)
    for ax, (key, label) in zip(axes, panels, strict=False):
        for i, engine in enumerate(engines):
            values = [next((r[key] for r in files[n]["results"] if r["engine"] == engine), 0)
                      for n in names]
            ax.bar([x + i * width for x in range(len(names))], values, width, label=engine)
        ax.set_xticks([x + width * (len(engines) - 1) / 2 for x in range(len(names))], names)
        ax.set_title(label)
    axes[0].legend(fontsize=7)
    ax = axes[3]
    for i, (key, label) in enumerate((("kl_llama_cpp", "llama.cpp"),  # colours as above
                                      ("kl_fast", "ollamapy fast"))):
        values = [files[n].get("fidelity", {}).get(key) or 0 for n in names]
        ax.bar([x + i * 0.4 for x in range(len(names))], values, 0.4, label=label)
    ax.set_xticks([x + 0.2 for x in range(len(names))], names)
    ax.set_title("mean KL to the fp32 reference (lower is better)")
    ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="smollm2,gemma3,llama-1b")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", default="cpu,cuda,mps")
    parser.add_argument("--engines", default="fast,llama-bench")
    parser.add_argument("--no-kl", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results" / "bench_vs_anchors.json"))
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # internal: run one here
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        return child(args)

    engines = args.engines.split(",")
    paths = {name: FILES[name]() if name in FILES else Path(name)
             for name in args.models.split(",")}
    if "llama-bench" in engines:
        tools()
    if not args.no_kl:
        ensure_llama_cpp()
    runs = [(e, "cpu") for e in engines]
    for device in present_devices(args.devices.split(",")):
        if device != "cpu":
            runs += [(e, device) for e in engines if e in ("fast", "reference")]
    files: dict[str, dict] = {}
    for name, path in paths.items():
        best: dict[tuple[str, str], dict] = {}
        for _ in range(args.repeats):  # alternate so machine noise hits every engine alike
            for engine, device in runs:
                r = run_one(args, path, engine, device)
                print(f"  {name} {engine} [{device}]: decode {r['decode_tok_s']:.1f}, "
                      f"prefill {r['prefill_tok_s']:.0f} tok/s", flush=True)
                key = (engine, device)
                if key not in best or r["decode_tok_s"] > best[key]["decode_tok_s"]:
                    best[key] = r
        results = [best[k] for k in runs]
        files[name] = {"path": str(path), "size_bytes": path.stat().st_size,
                       "results": results, "ratios": ratios(results)}
        if not args.no_kl:
            files[name]["fidelity"] = run_one(args, path, "kl", "cpu")

    bandwidth = read_bandwidth_gb_s(args.threads)
    for f in files.values():
        if step := f.get("fidelity", {}).get("decode_step_bytes"):
            f["roofline_tok_s"] = bandwidth * 1e9 / step
    print(f"\n{args.threads} threads, prompt {args.prompt_tokens}, decode "
          f"{args.decode_tokens}, best of {args.repeats}; read bandwidth {bandwidth:.1f} GB/s")
    for name, f in files.items():
        for r in f["results"]:
            print(f"{name:10} {r['engine']:34} decode {r['decode_tok_s']:7.1f}  prefill "
                  f"{r['prefill_tok_s']:7.1f}  TTFT {r['ttft_ms']:7.1f} ms  peak RSS "
                  f"{r['peak_rss_mb']:6.0f} MB")
        if "roofline_tok_s" in f:
            print(f"{name:10} roofline: {f['fidelity']['decode_step_bytes'] / 1e6:.1f} MB a "
                  f"fast decode step = {f['roofline_tok_s']:.0f} tok/s")
    table = markdown(files)
    print("\n" + table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "prompt_tokens": args.prompt_tokens,
                               "decode_tokens": args.decode_tokens, "repeats": args.repeats,
                               "read_bandwidth_gb_s": bandwidth, "files": files,
                               "table": table}, indent=2) + "\n")
    plot(files, out.with_suffix(".png"), f"ollamapy vs native llama.cpp, {args.threads} "
         f"threads, prompt {args.prompt_tokens}, decode {args.decode_tokens}")
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
