"""Beyond one process: one server, the same server tensor-parallel over two processes
(OLLAMAPY_TENSOR_PARALLEL=2), the same split launched by torchrun as a job of two hosts (two
torchrun agents on this machine, ollamapy/cluster.py) and two replicas behind Ray Serve
(ollamapy/deploy/ray_serve.py), on one machine, with 1, 2 and 4 concurrent streaming clients.

    .venv/bin/python benchmarks/bench_scale_out.py [--clients 1,2,4] [--requests 2]
        [--num-predict 48] [--threads 2] [--setups one,tp2,torchrun2,ray2]

smollm2:135m imported into a temporary store (`ollamapy create`). Every setup runs the server's
defaults (fast path; compiled steps, which tensor parallelism runs eagerly; 4 slots a server),
on the same cores: one server gets `--threads` threads, each of the two ranks or replicas half
of them. Each client sends `--requests` streaming /api/generate requests one after another,
each its own conversation (Ray routes them by their openings). Per setup and level: aggregate
tokens/s (every generated token over the level's wall time), TTFT p50 and time per output
token, and the resident memory of the whole process tree (the server, its engines and
followers; Ray's own processes for the replicas). Writes benchmarks/results/bench_scale_out.json
and .png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from bench_serving import MODEL_FILE, free_port, level, wait_up

HERE = Path(__file__).resolve().parent
LABELS = {"one": "one server", "tp2": "tensor parallel, 2 ranks",
          "torchrun2": "torchrun, 2 hosts x 1 rank", "ray2": "2 replicas, Ray Serve"}


def import_model(models: Path, port: int) -> None:
    """smollm2:135m into the store, through a plain server (`ollamapy create`)."""
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(models)}
    server = subprocess.Popen([sys.executable, "-m", "ollamapy.cli", "serve"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_up(f"http://127.0.0.1:{port}/")
        modelfile = models / "Modelfile"
        modelfile.write_text(f"FROM {MODEL_FILE}\n")
        subprocess.run([sys.executable, "-m", "ollamapy.cli", "create", "smollm2:135m", "-f",
                        str(modelfile)], env=env, check=True, capture_output=True)
    finally:
        server.terminate()
        server.wait(timeout=60)


def torchrun(node_rank: int, master_port: int) -> list[str]:
    """The README's command for one host of a two-host job (after the interpreter)."""
    return ["-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
            "--node-rank", str(node_rank), "--master-addr", "127.0.0.1", "--master-port",
            str(master_port), "-m", "ollamapy.cli", "serve"]


def launch(setup: str, models: Path, port: int, threads: int) -> list[subprocess.Popen]:
    """The setup's processes (a torchrun job: one a host), once it answers on port."""
    env = {**os.environ, "OLLAMA_MODELS": str(models), "OLLAMA_NUM_PARALLEL": "4",
           "OLLAMA_CONTEXT_LENGTH": "1024", "OLLAMAPY_FAST": "1", "OLLAMAPY_COMPILE": "1"}
    commands = [["-m", "ollamapy.cli", "serve"]]
    if setup == "one":
        env |= {"OLLAMA_HOST": f"127.0.0.1:{port}", "OMP_NUM_THREADS": str(threads)}
    elif setup == "tp2":  # each rank takes threads // 2 itself (tensor_group.threads_per_rank)
        env.pop("OMP_NUM_THREADS", None)
        env |= {"OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMAPY_TENSOR_PARALLEL": "2"}
    elif setup == "torchrun2":  # host 1 first: host 0 serves once host 1 stands by
        master = free_port()
        commands = [torchrun(1, master), torchrun(0, master)]
        env |= {"OLLAMA_HOST": f"127.0.0.1:{port}", "OMP_NUM_THREADS": str(max(1, threads // 2))}
    else:
        commands = [["-m", "ollamapy.deploy.ray_serve", "--replicas", "2", "--port", str(port)]]
        env |= {"OMP_NUM_THREADS": str(max(1, threads // 2))}
    processes = [subprocess.Popen([sys.executable, *command], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True) for command in commands]
    wait_up(f"http://127.0.0.1:{port}/")
    return processes


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    root = psutil.Process(pid)
    total = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def stop(processes: list[subprocess.Popen]) -> None:
    """The last started first (a torchrun job's host 0, whose stop stops the others)."""
    for process in reversed(processes):
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _collectives(rank: int, world: int, store: str, dim: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    x, n = torch.randn(1, 1, dim), 2000
    message = [("forward", torch.ones(1, 1, dtype=torch.long), 5, ("batch", None), None)]
    for _ in range(100):
        dist.all_reduce(x)
    began = time.perf_counter()
    for _ in range(n):
        dist.all_reduce(x)
    reduce_s = (time.perf_counter() - began) / n
    began = time.perf_counter()
    for _ in range(n // 4):
        dist.broadcast_object_list(message, src=0)
    announce_s = (time.perf_counter() - began) / (n // 4)
    if rank == 0:
        Path(out).write_text(json.dumps({"all_reduce_us": 1e6 * reduce_s,
                                         "announce_us": 1e6 * announce_s, "dim": dim}))
    dist.barrier()
    dist.destroy_process_group()


def collectives(dim: int = 576) -> dict:
    """What tensor parallelism pays per collective here: one all-reduce of a decode step's
    (1, 1, dim) activations between two gloo ranks on loopback, and one step announcement
    (tensor_group.py's broadcast_object_list), in microseconds."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "collectives.json"
        mp.spawn(_collectives, args=(2, str(Path(tmp) / "store"), dim, str(out)), nprocs=2)
        return json.loads(out.read_text())


def plot(runs: dict[str, list[dict]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for ax, key, label in zip(axes, ("aggregate_tok_s", "ttft_p50_ms", "tpot_ms", "rss_mib"),
                              ("aggregate tokens/s", "TTFT p50 (ms)",
                               "time per output token (ms)", "resident memory (MiB)"),
                              strict=True):
        for setup, rows in runs.items():
            x = [r["clients"] for r in rows]
            ax.plot(x, [r[key] for r in rows], marker="o", label=LABELS[setup])
            ax.set_xticks(x)
        ax.set_xlabel("concurrent clients")
        ax.set_title(label)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,2,4")
    parser.add_argument("--requests", type=int, default=2, help="per client")
    parser.add_argument("--num-predict", type=int, default=48)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--setups", default="one,tp2,torchrun2,ray2")
    parser.add_argument("--out", default=str(HERE / "results" / "bench_scale_out.json"))
    args = parser.parse_args()

    costs = collectives()
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        import_model(models, free_port())
        for setup in args.setups.split(","):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            processes = launch(setup, models, port, args.threads)
            try:
                # load the model (in each replica: eight conversations reach both), warm up
                asyncio.run(level(url, 8, 1, 8))
                rows = []
                for clients in map(int, args.clients.split(",")):
                    row = asyncio.run(level(url, clients, args.requests, args.num_predict))
                    row["rss_mib"] = sum(tree_rss(p.pid) for p in processes) / 2**20
                    rows.append(row)
                runs[setup] = rows
            finally:
                stop(processes)
    print(f"smollm2:135m, {args.threads} threads in all, {args.num_predict} tokens a request, "
          f"{args.requests} requests a client")
    print(f"{'setup':<26} {'clients':>7} {'agg tok/s':>10} {'x one':>6} {'TTFT p50 ms':>11} "
          f"{'TPOT ms':>8} {'RSS MiB':>8}")
    base = {r["clients"]: r["aggregate_tok_s"] for r in runs.get("one", [])}
    for setup, rows in runs.items():
        for r in rows:
            if r["clients"] in base:
                r["ratio_to_one_server"] = r["aggregate_tok_s"] / base[r["clients"]]
            print(f"{LABELS[setup]:<26} {r['clients']:>7} {r['aggregate_tok_s']:>10.1f} "
                  f"{r.get('ratio_to_one_server', float('nan')):>6.2f} "
                  f"{r['ttft_p50_ms']:>11.0f} {r['tpot_ms']:>8.1f} {r['rss_mib']:>8.0f}")
    print(f"gloo on loopback, 2 ranks: all-reduce of (1, 1, {costs['dim']}) "
          f"{costs['all_reduce_us']:.0f} µs, a step's announcement {costs['announce_us']:.0f} µs")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model": "smollm2:135m", "threads": args.threads, "num_predict": args.num_predict,
            "requests_per_client": args.requests, "cpu": os.cpu_count()}
    out.write_text(json.dumps({**meta, "collectives": costs, "runs": runs}, indent=2) + "\n")
    plot(runs, out.with_suffix(".png"),
         f"smollm2:135m: {', '.join(map(LABELS.get, runs))} ({args.threads} threads in all)")
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
