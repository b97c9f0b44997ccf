"""Serving throughput: aggregate tokens/s, time to first token and time per output token at
1, 2, 4 and 8 concurrent streaming clients, through a live `ollamapy serve`, with batch
invariance on (the default) and off (OLLAMAPY_BATCH_INVARIANT=0).

    .venv/bin/python benchmarks/bench_serving.py [--clients 1,2,4,8] [--requests 3]
        [--num-predict 64] [--num-parallel 8] [--threads 2] [--long-words 350]
        [--batch-invariant both|on|off]

The server runs in its own process over a temporary store into which smollm2:135m is imported
(`ollamapy create`, as a user would). Each client sends `--requests` streaming /api/generate
requests one after another (different prompts, default sampling, a fixed seed each);
aggregate tokens/s is every generated token over the wall time of the whole level. Two
workloads: short questions, and the same questions after a passage of `--long-words` words
(~1.3 tokens each, different for every request so that no prefix is reused), where prompt
processing, the part batch invariance changes, takes a larger share. Prints a table per mode
and workload, the ratio to one client and on/off; writes benchmarks/results/bench_serving.json
and .png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent

MODEL_FILE = Path(os.environ.get("OLLAMAPY_CACHE", Path.home() / ".cache" / "ollamapy")) / \
    "models" / "smollm2-135m.gguf"
PROMPTS = ["Why is the sky blue?", "Tell me a story about a dragon.", "Explain gravity.",
           "Write a poem about the sea.", "What makes a good friend?", "Describe Paris.",
           "How do plants grow?", "What is music?", "Why do we dream?", "Describe a forest."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WORDS = ["river", "mountain", "window", "garden", "letter", "music", "winter", "station",
         "forest", "candle", "harbor", "silver", "engine", "market", "bridge", "lantern",
         "orchard", "meadow", "compass", "thunder", "library"]


def passage(words: int, seed: int) -> str:
    """`words` words of filler, different for each seed (no two requests share a prefix)."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words)) + ".\n\n" if words else ""


def start(models: Path, port: int, num_parallel: int, threads: int, num_ctx: int = 1024,
          invariant: bool = True) -> subprocess.Popen:
    """`ollamapy serve` on port over models with smollm2:135m imported; invariant:
    OLLAMAPY_BATCH_INVARIANT."""
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(models),
           "OLLAMA_NUM_PARALLEL": str(num_parallel), "OLLAMA_CONTEXT_LENGTH": str(num_ctx),
           "OMP_NUM_THREADS": str(threads), "OLLAMAPY_BATCH_INVARIANT": str(int(invariant))}
    proc = subprocess.Popen([sys.executable, "-m", "ollamapy.cli", "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_up(f"http://127.0.0.1:{port}/")
    modelfile = models / "Modelfile"
    modelfile.write_text(f"FROM {MODEL_FILE}\n")
    subprocess.run([sys.executable, "-m", "ollamapy.cli", "create", "smollm2:135m", "-f",
                    str(modelfile)], env=env, check=True, capture_output=True)
    return proc


def wait_up(url: str) -> None:
    """Until url answers 200 (a server starting: seconds; a hang guard at two minutes)."""
    for _ in range(600):
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} never answered")


async def one_request(http: httpx.AsyncClient, prompt: str, seed: int, n: int) -> dict:
    body = {"model": "smollm2:135m", "prompt": prompt, "options": {"num_predict": n,
                                                                     "seed": seed}}
    t0 = time.perf_counter()
    first = last = None
    final: dict = {}
    async with http.stream("POST", "/api/generate", json=body) as r:
        async for line in r.aiter_lines():
            chunk = json.loads(line)
            now = time.perf_counter()
            if chunk.get("response") and first is None:
                first = now
            if not chunk["done"]:
                last = now
            final = chunk
    tokens = final["eval_count"]
    return {"ttft": (first or t0) - t0, "tokens": tokens,
            "tpot": ((last or t0) - (first or t0)) / max(tokens - 1, 1)}


async def level(url: str, clients: int, requests: int, n: int, words: int = 0) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        async def client(c: int) -> list[dict]:
            return [await one_request(http, passage(words, 1000 * c + i)
                                      + PROMPTS[(c + i) % len(PROMPTS)], 1000 * c + i, n)
                    for i in range(requests)]

        t0 = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(client(c) for c in range(clients)))
                   for r in rs]
        wall = time.perf_counter() - t0
    ttfts = sorted(r["ttft"] for r in results)
    return {"clients": clients, "requests": len(results),
            "tokens": sum(r["tokens"] for r in results), "wall_s": wall,
            "aggregate_tok_s": sum(r["tokens"] for r in results) / wall,
            "ttft_p50_ms": 1e3 * statistics.median(ttfts),
            "ttft_p95_ms": 1e3 * ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))],
            "tpot_ms": 1e3 * statistics.mean(r["tpot"] for r in results)}


def plot(runs: dict[str, dict[str, list[dict]]], path: Path, title: str) -> None:
    """runs: mode ("on"/"off") → workload → levels; one line per (mode, workload)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, label in zip(axes, ("aggregate_tok_s", "ttft_p50_ms", "tpot_ms"),
                              ("aggregate tokens/s", "TTFT p50 (ms)",
                               "time per output token (ms)"), strict=True):
        for mode, workloads in runs.items():
            for workload, rows in workloads.items():
                x = [r["clients"] for r in rows]
                ax.plot(x, [r[key] for r in rows], marker="o",
                        linestyle="-" if mode == "on" else "--",
                        label=f"{workload} prompts, invariance {mode}")
                ax.set_xticks(x)
        ax.set_xlabel("concurrent clients")
        ax.set_title(label)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(rows: list[dict]) -> None:
    base = rows[0]["aggregate_tok_s"]
    print(f"{'clients':>7} {'agg tok/s':>10} {'x 1 client':>10} {'TTFT p50 ms':>11} "
          f"{'TTFT p95 ms':>11} {'TPOT ms':>8}")
    for r in rows:
        r["ratio_to_one_client"] = r["aggregate_tok_s"] / base
        print(f"{r['clients']:>7} {r['aggregate_tok_s']:>10.1f} {r['ratio_to_one_client']:>10.2f}"
              f" {r['ttft_p50_ms']:>11.0f} {r['ttft_p95_ms']:>11.0f} {r['tpot_ms']:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,2,4,8")
    parser.add_argument("--requests", type=int, default=3, help="per client")
    parser.add_argument("--num-predict", type=int, default=64)
    parser.add_argument("--num-parallel", type=int, default=8, help="OLLAMA_NUM_PARALLEL")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--long-words", type=int, default=350,
                        help="words of passage before each long prompt's question")
    parser.add_argument("--batch-invariant", choices=("both", "on", "off"), default="both",
                        help="OLLAMAPY_BATCH_INVARIANT: the default (on), off, or both")
    parser.add_argument("--out", default=str(HERE / "results" / "bench_serving.json"))
    args = parser.parse_args()

    modes = ["on", "off"] if args.batch_invariant == "both" else [args.batch_invariant]
    workloads = {"short": 0, "long": args.long_words}
    runs: dict[str, dict[str, list[dict]]] = {}
    for mode in modes:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as tmp:
            server = start(Path(tmp), port, args.num_parallel, args.threads,
                           invariant=mode == "on")
            try:
                asyncio.run(level(url, 1, 1, 8))  # load the model and warm up
                runs[mode] = {name: [asyncio.run(level(url, int(c), args.requests,
                                                       args.num_predict, words))
                                     for c in args.clients.split(",")]
                              for name, words in workloads.items()}
            finally:
                server.terminate()
                server.wait(timeout=60)
    print(f"smollm2:135m, OLLAMA_NUM_PARALLEL={args.num_parallel}, {args.threads} threads, "
          f"{args.num_predict} tokens a request, {args.requests} requests a client")
    for mode, by_workload in runs.items():
        for name, rows in by_workload.items():
            print(f"\nbatch invariance {mode}, {name} prompts"
                  + (f" ({args.long_words} words before the question)" if workloads[name]
                     else ""))
            table(rows)
    ratios = {}
    if len(runs) == 2:
        print("\naggregate tokens/s and TTFT p50, invariance on / off")
        for name in workloads:
            for on, off in zip(runs["on"][name], runs["off"][name], strict=True):
                key = f"{name}:{on['clients']}"
                ratios[key] = {"aggregate": on["aggregate_tok_s"] / off["aggregate_tok_s"],
                               "ttft_p50": on["ttft_p50_ms"] / off["ttft_p50_ms"]}
                print(f"{name:>6} prompts, {on['clients']} clients: aggregate "
                      f"{ratios[key]['aggregate']:.3f}x, TTFT p50 {ratios[key]['ttft_p50']:.3f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model": "smollm2:135m", "num_parallel": args.num_parallel,
            "threads": args.threads, "num_predict": args.num_predict,
            "requests_per_client": args.requests, "long_words": args.long_words}
    out.write_text(json.dumps({**meta, "runs": runs, "on_over_off": ratios}, indent=2) + "\n")
    plot(runs, out.with_suffix(".png"),
         f"smollm2:135m serving, OLLAMA_NUM_PARALLEL={args.num_parallel}, "
         f"{args.threads} threads")
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
