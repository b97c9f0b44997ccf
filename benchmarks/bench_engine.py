"""Prefill and decode speed of the reference engine vs HF transformers' generate(), same GGUF.

    .venv/bin/python benchmarks/bench_engine.py [--model PATH] [--threads 2] [--prompt-tokens 512]
                                                [--decode-tokens 128] [--repeats 3]

Each engine runs in its own subprocess (so peak RSS is its own), alternating, `--repeats`
times; the best run of each is reported. Prints a table, writes
benchmarks/results/bench_engine.json and bench_engine.png. Decode runs a fixed number of
greedy tokens (end-of-sequence ignored) so both engines do the same work.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = Path(os.environ.get("OLLAMAPY_CACHE", Path.home() / ".cache" / "ollamapy")) / \
    "models" / "smollm2-135m.gguf"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def prompt_ids(vocab_size: int, n: int) -> list[int]:
    # a fixed pseudo-random prompt: no tokenizer differences between engines
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randint(100, vocab_size - 100, (n,), generator=g).tolist()


def run_ollamapy(model_path: str, n_prompt: int, n_decode: int) -> dict:
    import torch

    import ollamapy
    from ollamapy.engine.generate import Done, generate
    from ollamapy.engine.options import Options

    t0 = time.perf_counter()
    m = ollamapy.load(model_path, device="cpu")
    load_s = time.perf_counter() - t0
    ids = prompt_ids(m.model.config.vocab_size, n_prompt)

    class NoText:
        def push(self, token_id: int) -> str:
            return ""

        def flush(self) -> str:
            return ""

    opts = Options(temperature=0.0, num_predict=n_decode, num_ctx=n_prompt + n_decode + 8)
    first_token_ns = None
    t_start = time.perf_counter_ns()
    done = None
    for event in generate(m.model, ids, opts, eos_ids=frozenset(), detokenizer=NoText()):
        if first_token_ns is None:
            first_token_ns = time.perf_counter_ns() - t_start
        if isinstance(event, Done):
            done = event
    assert done is not None and done.eval_count == n_decode
    del torch
    return {
        "engine": "ollamapy (reference, fp32)", "load_s": load_s,
        "prefill_tok_s": done.prompt_eval_count / (done.prompt_eval_duration / 1e9),
        # the first decoded token is sampled from prefill logits; the rest cost a forward each
        "decode_tok_s": (done.eval_count - 1) / (done.eval_duration / 1e9),
        "ttft_ms": (first_token_ns or 0) / 1e6, "peak_rss_mb": peak_rss_mb(),
    }


def run_hf(model_path: str, n_prompt: int, n_decode: int) -> dict:
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    path = Path(model_path)
    t0 = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    load_s = time.perf_counter() - t0
    ids = torch.tensor([prompt_ids(model.config.vocab_size, n_prompt)])
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(ids)
        prefill_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = model.generate(ids, max_new_tokens=1, do_sample=False)
        ttft_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = model.generate(ids, max_new_tokens=n_decode, min_new_tokens=n_decode,
                             do_sample=False)
        total_s = time.perf_counter() - t0
    assert out.shape[1] == n_prompt + n_decode
    return {
        "engine": "HF transformers generate() (fp32)", "load_s": load_s,
        "prefill_tok_s": n_prompt / prefill_s,
        "decode_tok_s": (n_decode - 1) / max(total_s - ttft_s, 1e-9),
        "ttft_ms": ttft_s * 1e3, "peak_rss_mb": peak_rss_mb(),
    }


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    fn = run_ollamapy if args.engine == "ollamapy" else run_hf
    print(json.dumps(fn(args.model, args.prompt_tokens, args.decode_tokens)))


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    names = [r["engine"].replace(" (", "\n(") for r in results]
    for ax, key, label in zip(axes, ("prefill_tok_s", "decode_tok_s", "ttft_ms"),
                              ("prefill tokens/s", "decode tokens/s", "time to first token (ms)"),
                              strict=True):
        ax.bar(names, [r[key] for r in results], color=["#4c72b0", "#dd8452"][: len(results)])
        ax.set_title(label)
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(Path(results[0]["model"]).name + f", {results[0]['threads']} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--engines", default="ollamapy,hf")
    parser.add_argument("--out", default=str(HERE / "results" / "bench_engine.json"))
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # internal: run one in this process
    args = parser.parse_args()
    if args.engine:
        return child(args)

    engines = args.engines.split(",")
    best: dict[str, dict] = {}
    for _ in range(args.repeats):  # alternate engines so machine noise hits both alike
        for engine in engines:
            cmd = [sys.executable, __file__, "--engine", engine, "--model", args.model,
                   "--threads", str(args.threads), "--prompt-tokens", str(args.prompt_tokens),
                   "--decode-tokens", str(args.decode_tokens)]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            line = subprocess.run(cmd, check=True, capture_output=True, text=True,
                                  env=env).stdout.strip().splitlines()[-1]
            r = json.loads(line)
            if engine not in best or r["decode_tok_s"] > best[engine]["decode_tok_s"]:
                best[engine] = r
    results = [{**best[e], "model": args.model, "threads": args.threads,
                "prompt_tokens": args.prompt_tokens, "decode_tokens": args.decode_tokens}
               for e in engines]
    print(f"{'engine':38} {'prefill tok/s':>13} {'decode tok/s':>12} {'TTFT ms':>9} "
          f"{'peak RSS MB':>11} {'load s':>7}")
    for r in results:
        print(f"{r['engine']:38} {r['prefill_tok_s']:13.1f} {r['decode_tok_s']:12.1f} "
              f"{r['ttft_ms']:9.1f} {r['peak_rss_mb']:11.0f} {r['load_s']:7.2f}")
    if len(results) == 2:
        a, b = results
        print(f"ratio ollamapy / HF: prefill {a['prefill_tok_s'] / b['prefill_tok_s']:.2f}x, "
              f"decode {a['decode_tok_s'] / b['decode_tok_s']:.2f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
