"""Cold start (issue 14 item 5): how soon `ollamapy serve` answers, and what a load costs.

    .venv/bin/python benchmarks/bench_cold_start.py [--starts 3] [--threads 2]

Over a temporary store into which smollm2:135m and gemma3:270m are imported, each start of
`python -m ollamapy.cli serve` (the server `make serve` runs, its defaults: fast path,
compiled decode, 4 slots, 4096 positions) is timed from the process's spawn to:

- `/` answering;
- the first smollm2 answer (one token), and its `load_duration`;
- gemma3's first answer after it, and its `load_duration`;
- a reload: smollm2 unloaded (keep_alive 0) and asked again, its `load_duration`.

The first start may compile (a cold compile cache); the ones after it load the saved decode
steps (engine/compiled.py). Prints a table of medians over the starts after the first, writes
benchmarks/results/bench_cold_start.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_serving import free_port, wait_up  # noqa: E402

CACHE = Path(os.environ.get("OLLAMAPY_CACHE", Path.home() / ".cache" / "ollamapy")) / "models"
MODELS = {"smollm2:135m": CACHE / "smollm2-135m.gguf", "gemma3:270m": CACHE / "gemma3-270m.gguf"}


def serve(models: Path, port: int, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(models),
           "OMP_NUM_THREADS": str(threads)}
    return subprocess.Popen([sys.executable, "-m", "ollamapy.cli", "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=60)


def first_answer(http: httpx.Client, model: str, keep_alive: str | int = "5m") -> dict:
    return http.post("/api/generate", json={
        "model": model, "prompt": "Hi", "stream": False, "keep_alive": keep_alive,
        "options": {"num_predict": 1, "temperature": 0}}).json()


def one_start(models: Path, threads: int) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = serve(models, port, threads)
    try:
        wait_up(url + "/")
        up = time.perf_counter() - t0
        with httpx.Client(base_url=url, timeout=900) as http:
            smollm2 = first_answer(http, "smollm2:135m")
            smollm2_at = time.perf_counter() - t0
            gemma3 = first_answer(http, "gemma3:270m")
            gemma3_at = time.perf_counter() - t0
            http.post("/api/generate", json={"model": "smollm2:135m", "keep_alive": 0})
            reload = first_answer(http, "smollm2:135m")
    finally:
        stop(proc)
    return {"up_s": up, "smollm2_first_answer_s": smollm2_at,
            "smollm2_load_s": smollm2["load_duration"] / 1e9,
            "gemma3_first_answer_s": gemma3_at, "gemma3_load_s": gemma3["load_duration"] / 1e9,
            "smollm2_reload_s": reload["load_duration"] / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results" / "bench_cold_start.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        port = free_port()
        proc = serve(models, port, args.threads)
        try:
            wait_up(f"http://127.0.0.1:{port}/")
            env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}"}
            for name, path in MODELS.items():
                modelfile = Path(tmp) / "Modelfile"
                modelfile.write_text(f"FROM {path}\n")
                subprocess.run([sys.executable, "-m", "ollamapy.cli", "create", name, "-f",
                                str(modelfile)], env=env, check=True, capture_output=True)
        finally:
            stop(proc)
        starts = [one_start(models, args.threads) for _ in range(args.starts)]
    keys = list(starts[0])
    later = starts[1:] or starts
    summary = {k: statistics.median(s[k] for s in later) for k in keys}
    print(f"seconds; first start (compile cache as found) and the median of {len(later)} "
          "restarts")
    print(f"{'':28} {'first':>8} {'restarts':>9}")
    for k in keys:
        print(f"{k:28} {starts[0][k]:>8.2f} {summary[k]:>9.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "starts": starts,
                               "restart_medians": summary}, indent=2) + "\n")
    plot(starts, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


def plot(starts: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(starts[0])
    fig, ax = plt.subplots(figsize=(9, 3.6))
    width = 0.8 / len(starts)
    for i, s in enumerate(starts):
        ax.bar([k + i * width for k in range(len(keys))], [s[k] for k in keys], width,
               label="first start" if i == 0 else f"restart {i}")
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(keys))],
                  [k.removesuffix("_s").replace("_", " ") for k in keys], fontsize=7)
    ax.set_ylabel("seconds")
    ax.legend(fontsize=7)
    ax.set_title("ollamapy serve: time to answer and load_duration (smollm2, gemma3)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
