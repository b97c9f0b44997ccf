"""Peak memory of a serving process: `ollamapy serve` with smollm2:135m loaded, against the
issue's bound of twice the GGUF plus the KV cache.

    .venv/bin/python benchmarks/bench_memory.py [--clients 4] [--num-predict 64] [--label NAME]
        [--prompt-words 4000]   # the worst case: every slot's window nearly full

The server is `python -m ollamapy.cli serve`, which imports ollamapy from the current
directory first: run this script from another checkout's root (a git worktree) to measure
that checkout, e.g. `cd /tmp/before && /path/to/.venv/bin/python /path/to/bench_memory.py
--label before --out /path/to/benchmarks/results/bench_memory.json`.

The server runs with the settings `make serve` uses (fast path and compile on,
OLLAMA_NUM_PARALLEL=4, OLLAMA_CONTEXT_LENGTH=4096) over a temporary store into which the model
is imported. Measured from /proc over the server and its descendants (the engine process and
the fork server): RSS before any model, after the first request (model loaded, decode step
compiled), and the peak (VmHWM, summed) after `--clients` concurrent streaming requests.
The KV cache's size is its capacity (slots x window x layers x 2 x kv heads x head dim x 4
bytes), whatever part of it is resident. Prints a table; merges the row into
benchmarks/results/bench_memory.json (one row per label) and plots them to its .png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import MODEL_FILE, PROMPTS, free_port, one_request, start  # noqa: E402

HERE = Path(__file__).resolve().parent
NUM_PARALLEL, NUM_CTX = 4, 4096


def proc_mb(pid: int, field: str) -> float:
    """field (VmRSS, VmHWM) summed over the server and its descendants: its engine processes
    and the fork server they come from. A sum of peaks bounds the peak of the sum."""
    total = 0.0
    for p in [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                total += int(line.split()[1]) / 1024
    return total


def kv_capacity_mb() -> float:
    from ollamapy.loading.gguf import read_gguf  # the header only: no weights are read

    with read_gguf(MODEL_FILE) as f:
        meta = f.metadata
    arch = meta["general.architecture"]
    layers, heads = meta[f"{arch}.block_count"], meta[f"{arch}.attention.head_count"]
    kv_heads = meta.get(f"{arch}.attention.head_count_kv", heads)
    head_dim = meta[f"{arch}.embedding_length"] // heads
    return NUM_PARALLEL * NUM_CTX * layers * 2 * kv_heads * head_dim * 4 / 2**20


async def burst(url: str, clients: int, n: int, prompt_words: int = 0) -> int:
    """`clients` concurrent requests of n tokens; with prompt_words, each prompt is that many
    words (about a token each: the way to fill every slot's window)."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        rows = await asyncio.gather(*(one_request(
            http, f"{c} " + " ".join(["apple"] * prompt_words) if prompt_words
            else PROMPTS[c % len(PROMPTS)], c, n) for c in range(clients)))
    return sum(r["tokens"] for r in rows)


def measure(args: argparse.Namespace) -> dict:
    os.environ.update({"OLLAMAPY_FAST": "1", "OLLAMAPY_COMPILE": "1"})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        server = start(Path(tmp), port, NUM_PARALLEL, args.threads, NUM_CTX)
        try:
            idle = proc_mb(server.pid, "VmRSS")
            asyncio.run(burst(url, 1, 8))  # load, compile, warm up
            loaded = proc_mb(server.pid, "VmRSS")
            tokens = asyncio.run(burst(url, args.clients, args.num_predict,
                                       args.prompt_words))
            peak = proc_mb(server.pid, "VmHWM")
            end = proc_mb(server.pid, "VmRSS")
        finally:
            server.terminate()
            server.wait(timeout=60)
    gguf_mb = MODEL_FILE.stat().st_size / 2**20
    kv_mb = kv_capacity_mb()
    bound = 2 * gguf_mb + kv_mb
    return {"label": args.label, "clients": args.clients, "tokens": tokens,
            "prompt_words": args.prompt_words,
            "rss_no_model_mb": idle, "rss_loaded_mb": loaded, "rss_end_mb": end,
            "peak_rss_mb": peak, "gguf_mb": gguf_mb, "kv_capacity_mb": kv_mb,
            "bound_mb": bound, "peak_to_bound": peak / bound}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    labels = [r["label"] for r in rows]
    for i, key in enumerate(("rss_no_model_mb", "rss_loaded_mb", "peak_rss_mb")):
        ax.bar([j + 0.27 * (i - 1) for j in range(len(rows))], [r[key] for r in rows],
               width=0.27, label=key.removesuffix("_mb").replace("_", " "))
    ax.axhline(rows[0]["bound_mb"], color="k", linestyle="--", label="2 x GGUF + KV cache")
    ax.set_xticks(range(len(rows)), labels)
    ax.set_ylabel("MB")
    ax.set_title(f"ollamapy serve, smollm2:135m, {NUM_PARALLEL} slots x {NUM_CTX}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--num-predict", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-words", type=int, default=0,
                        help="long prompts (e.g. 4000: every slot's window nearly full)")
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--out", default=str(HERE / "results" / "bench_memory.json"))
    args = parser.parse_args()

    row = measure(args)
    out = Path(args.out)
    rows = [r for r in (json.loads(out.read_text())["rows"] if out.exists() else [])
            if r["label"] != row["label"]] + [row]
    print(f"{'label':<30} {'no model':>9} {'loaded':>8} {'peak':>8} {'bound':>8} {'peak/bound':>10}"
          "   (MB; bound = 2 x GGUF + KV capacity)")
    for r in rows:
        print(f"{r['label']:<30} {r['rss_no_model_mb']:>9.0f} {r['rss_loaded_mb']:>8.0f} "
              f"{r['peak_rss_mb']:>8.0f} {r['bound_mb']:>8.0f} {r['peak_to_bound']:>10.2f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": "smollm2:135m", "num_parallel": NUM_PARALLEL,
                               "num_ctx": NUM_CTX, "rows": rows}, indent=2) + "\n")
    plot(rows, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
