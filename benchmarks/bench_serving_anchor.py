"""Serving scenarios against llama.cpp's llama-server in the same run (issue 14's targets):

1. one stream: the decode rate a client sees and its time to first token;
2. the next turn of a chat (the history of a first turn and a short new message): time to
   first token, warm (a slot holds the first turn) and, for ollamapy, cold (after an unload);
3. a ~2,000-token prompt arriving while another request streams: the streaming request's
   p95 time between tokens while the prompt is being prefilled, against its steady p95;
4. resident memory of each server after the scenarios: RSS summed over the server and its
   child processes (ollamapy: the HTTP process, the fork server, the engine), and PSS, which
   counts pages the processes share once;
5. the engine alone: the same decode through a `Runner` in one process, no HTTP (the
   denominator of the issue's "client-seen decode >= 0.95x the engine's own");
6. concurrency: 1 and 8 clients, each sending two 64-token chats one after the other;
   aggregate tokens/s is every streamed token over the wall time of the level.

    .venv/bin/python benchmarks/bench_serving_anchor.py [--llama-server PATH] [--threads 2]
        [--rounds 3] [--num-parallel 4]

Both servers get smollm2-135m's GGUF, the same slots (--num-parallel) and context per slot
(4096), the same threads, and are driven through their OpenAI-compatible streaming
/v1/chat/completions with temperature 0. Scenario rounds alternate between the servers;
figures are medians over rounds. llama-server is the one benchmarks/native_llamacpp.py builds
from the llama-cpp-python 0.3.36 sdist, unless --llama-server names another (on a machine
whose native build dies of illegal AMX instructions, one built with -DGGML_NATIVE=OFF
-DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON). Writes
benchmarks/results/bench_serving_anchor.json and .png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_serving import MODEL_FILE, free_port, start, wait_up  # noqa: E402
from native_llamacpp import tools  # noqa: E402

SLOT_CTX = 4096
SYSTEM = "You are a helpful assistant. Answer briefly and clearly."
LONG = ("The history of the old harbour town goes back many centuries, to the first fishermen "
        "who settled by the river mouth and traded salt with the inland villages. ") * 60


def start_llama_server(binary: str, port: int, slots: int, threads: int, log: Path
                       ) -> subprocess.Popen:
    with open(log, "w") as out:
        proc = subprocess.Popen([binary, "-m", str(MODEL_FILE), "--host", "127.0.0.1",
                                 "--port", str(port), "-c", str(SLOT_CTX * slots), "-np",
                                 str(slots), "-t", str(threads), "-tb", str(threads)],
                                stdout=out, stderr=subprocess.STDOUT)
    wait_up(f"http://127.0.0.1:{port}/health")
    return proc


# requests a server dropped before answering (counted, reported, sent once more), by URL
DISCONNECTS: Counter[str] = Counter()


async def chat(http: httpx.AsyncClient, messages: list[dict], max_tokens: int,
               started: asyncio.Event | None = None) -> dict:
    """One streaming chat completion → its text, time to first token and the times at which
    each content chunk arrived."""
    try:
        return await _chat(http, messages, max_tokens, started)
    except httpx.RemoteProtocolError:
        DISCONNECTS[str(http.base_url).rstrip("/")] += 1
        return await _chat(http, messages, max_tokens, started)


async def _chat(http: httpx.AsyncClient, messages: list[dict], max_tokens: int,
                started: asyncio.Event | None) -> dict:
    body = {"model": "smollm2:135m", "messages": messages, "max_tokens": max_tokens,
            "temperature": 0, "stream": True}
    t0 = time.perf_counter()
    times: list[float] = []
    text = []
    async with http.stream("POST", "/v1/chat/completions", json=body) as r:
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            piece = (choices[0].get("delta") or {}).get("content")
            if piece:
                times.append(time.perf_counter())
                text.append(piece)
                if started is not None:
                    started.set()
    return {"text": "".join(text), "ttft": times[0] - t0 if times else float("nan"),
            "times": times}


def p95(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(0.95 * len(values)))] if values else float("nan")


async def one_stream(url: str) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        r = await chat(http, [{"role": "user", "content": "Tell me a story about a dragon."}],
                       128)
    span = r["times"][-1] - r["times"][0]
    return {"ttft_ms": 1e3 * r["ttft"], "decode_tok_s": (len(r["times"]) - 1) / span}


async def next_turn(url: str, round_: int) -> dict:
    first = [{"role": "system", "content": SYSTEM},
             {"role": "user", "content": f"Describe city number {round_} in a few lines."}]
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        a = await chat(http, first, 64)
        second = [*first, {"role": "assistant", "content": a["text"]},
                  {"role": "user", "content": "And its weather?"}]
        b = await chat(http, second, 16)
    return {"first_ttft_ms": 1e3 * a["ttft"], "second_ttft_ms": 1e3 * b["ttft"],
            "second": second}


async def cold_turn(url: str, second: list[dict]) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        await http.post("/api/generate", json={"model": "smollm2:135m", "keep_alive": 0})
        await chat(http, [{"role": "user", "content": "Hi"}], 1)  # load again
        b = await chat(http, second, 16)
    return 1e3 * b["ttft"]


async def long_prompt_beside_a_stream(url: str, round_: int) -> dict:
    """A new 2k-token prompt each round (its first words differ, so no cache holds it)."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        started = asyncio.Event()
        stream = asyncio.create_task(chat(
            http, [{"role": "user", "content": "Write a long story about the sea."}], 192,
            started))
        await started.wait()
        await asyncio.sleep(1.0)  # steady decoding first
        t_sent = time.perf_counter()
        prompt = f"Chronicle number {round_}. {LONG}\nSummarise."
        long = await chat(http, [{"role": "user", "content": prompt}], 4)
        t_first = long["times"][0] if long["times"] else time.perf_counter()
        s = await stream
    times = s["times"]
    gaps = [(b, b - a) for a, b in zip(times, times[1:], strict=False)]
    steady = [g for t, g in gaps if t < t_sent]
    during = [g for t, g in gaps if t_sent <= t <= t_first + 1e-3]
    return {"steady_p95_ms": 1e3 * p95(steady), "during_prefill_p95_ms": 1e3 * p95(during),
            "during_prefill_max_ms": 1e3 * max(during, default=float("nan")),
            "long_ttft_ms": 1e3 * (t_first - t_sent), "gaps_during": len(during)}


async def clients(url: str, n: int, round_: int) -> float:
    """Aggregate tokens/s of n concurrent clients, two 64-token chats each."""
    async def client(http: httpx.AsyncClient, c: int) -> int:
        tokens = 0
        for r in range(2):
            out = await chat(http, [{"role": "user", "content": (
                f"Client {c}, request {r}, round {round_}: tell me a story about a dragon.")}],
                64)
            tokens += len(out["times"])
        return tokens

    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        t0 = time.perf_counter()
        tokens = await asyncio.gather(*(client(http, c) for c in range(n)))
        return sum(tokens) / (time.perf_counter() - t0)


def memory_mb(proc: subprocess.Popen) -> tuple[float, float]:
    """(RSS, PSS) of the process and its descendants."""
    p = psutil.Process(proc.pid)
    infos = [q.memory_full_info() for q in [p, *p.children(recursive=True)]]
    return sum(i.rss for i in infos) / 2**20, sum(i.pss for i in infos) / 2**20


# the engine's own decode: a Runner (fast path, compiled, the server's slots and window) fed
# one streaming chat in this process's event loop, timed as a client times its chunks
ENGINE_ALONE = """
import asyncio, statistics, sys, time
from pathlib import Path
from ollamapy.contract import ModelSpec
from ollamapy.runner import Runner

path, slots, ctx, rounds = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
runner = Runner(ModelSpec("smollm2:135m", path), ctx, num_parallel=slots, fast=True, compile=True)
messages = [{"role": "user", "content": "Tell me a story about a dragon."}]

async def one():
    times = []
    async for event in runner.chat(messages, runner.options({"temperature": 0,
                                                            "num_predict": 128})):
        if getattr(event, "text", ""):
            times.append(time.perf_counter())
    return (len(times) - 1) / (times[-1] - times[0])

asyncio.run(one())  # warm up
print(statistics.median(asyncio.run(one()) for _ in range(rounds)))
runner.close()
"""


def engine_alone(threads: int, slots: int, rounds: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", ENGINE_ALONE, str(MODEL_FILE), str(slots),
                          str(SLOT_CTX), str(rounds)], env=env, check=True,
                         capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-server", help="default: the native build (built if missing)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-parallel", type=int, default=4)
    parser.add_argument("--out", default=str(HERE / "results" / "bench_serving_anchor.json"))
    args = parser.parse_args()
    args.llama_server = args.llama_server or str(tools()["llama-server"])

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ports = {"ollamapy": free_port(), "llama-server": free_port()}
        procs = {"ollamapy": start(Path(tmp), ports["ollamapy"], args.num_parallel,
                                   args.threads, num_ctx=SLOT_CTX),
                 "llama-server": start_llama_server(args.llama_server, ports["llama-server"],
                                                    args.num_parallel, args.threads,
                                                    Path(tmp) / "llama-server.log")}
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        try:
            for name, url in urls.items():  # load and warm up
                asyncio.run(one_stream(url))
                results[name] = {"one_stream": [], "next_turn": [], "long_prompt": [],
                                 "clients_1": [], "clients_8": []}
            for round_ in range(args.rounds):
                for name, url in urls.items():
                    r = results[name]
                    r["one_stream"].append(asyncio.run(one_stream(url)))
                    r["next_turn"].append(asyncio.run(next_turn(url, round_)))
                    r["long_prompt"].append(asyncio.run(long_prompt_beside_a_stream(url,
                                                                                    round_)))
                    for n in (1, 8):
                        r[f"clients_{n}"].append(asyncio.run(clients(url, n, round_)))
            for name, proc in procs.items():
                results[name]["rss_mb"], results[name]["pss_mb"] = memory_mb(proc)
            cold = [asyncio.run(cold_turn(urls["ollamapy"], t["second"]))
                    for t in results["ollamapy"]["next_turn"]]
        finally:
            for proc in procs.values():
                proc.terminate()
                proc.wait(timeout=60)
            log = (Path(tmp) / "llama-server.log").read_text().splitlines(True)
            print("llama-server's log, last lines:", "".join(log[-12:]), sep="\n")

    summary = {}
    for name, r in results.items():
        summary[name] = {
            "decode_tok_s": median(r["one_stream"], "decode_tok_s"),
            "ttft_ms": median(r["one_stream"], "ttft_ms"),
            "second_turn_ttft_ms": median(r["next_turn"], "second_ttft_ms"),
            "first_turn_ttft_ms": median(r["next_turn"], "first_ttft_ms"),
            "steady_gap_p95_ms": median(r["long_prompt"], "steady_p95_ms"),
            "gap_p95_during_long_prefill_ms": median(r["long_prompt"], "during_prefill_p95_ms"),
            "gap_max_during_long_prefill_ms": median(r["long_prompt"], "during_prefill_max_ms"),
            "long_prompt_ttft_ms": median(r["long_prompt"], "long_ttft_ms"),
            "clients_1_tok_s": statistics.median(r["clients_1"]),
            "clients_8_tok_s": statistics.median(r["clients_8"]),
            "rss_mb": r["rss_mb"], "pss_mb": r["pss_mb"],
            "dropped_requests": DISCONNECTS[urls[name]]}
        for t in r["next_turn"]:
            t.pop("second")
    summary["ollamapy"]["second_turn_ttft_cold_ms"] = statistics.median(cold)
    summary["ollamapy"]["engine_alone_decode_tok_s"] = engine_alone(
        args.threads, args.num_parallel, args.rounds)
    ours, anchor = summary["ollamapy"], summary["llama-server"]
    print(f"smollm2-135m, {args.num_parallel} slots of {SLOT_CTX}, {args.threads} threads, "
          f"{args.rounds} rounds, medians")
    print(f"{'':34} {'ollamapy':>10} {'llama-server':>12} {'ratio':>6}")
    for key in ("decode_tok_s", "ttft_ms", "first_turn_ttft_ms", "second_turn_ttft_ms",
                "steady_gap_p95_ms", "gap_p95_during_long_prefill_ms",
                "gap_max_during_long_prefill_ms", "long_prompt_ttft_ms", "clients_1_tok_s",
                "clients_8_tok_s", "rss_mb", "pss_mb"):
        print(f"{key:34} {ours[key]:>10.1f} {anchor[key]:>12.1f} "
              f"{ours[key] / anchor[key]:>6.2f}")
    print(f"{'second_turn_ttft_cold_ms':34} {ours['second_turn_ttft_cold_ms']:>10.1f}")
    print(f"{'requests dropped (sent again)':34} {ours['dropped_requests']:>10} "
          f"{anchor['dropped_requests']:>12}")
    print(f"{'8 clients / 1 client':34} {ours['clients_8_tok_s'] / ours['clients_1_tok_s']:>10.2f} "
          f"{anchor['clients_8_tok_s'] / anchor['clients_1_tok_s']:>12.2f}")
    alone = ours["engine_alone_decode_tok_s"]
    print(f"{'engine_alone_decode_tok_s':34} {alone:>10.1f}   client-seen / engine alone: "
          f"{ours['decode_tok_s'] / alone:.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "slots": args.num_parallel,
                               "slot_ctx": SLOT_CTX, "rounds": args.rounds,
                               "summary": summary, "runs": results}, indent=2) + "\n")
    plot(summary, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("decode_tok_s", "one stream: decode tok/s"),
              ("second_turn_ttft_ms", "next chat turn: TTFT (ms)"),
              ("gap_p95_during_long_prefill_ms", "stream gap p95 while a\n2k prompt prefills (ms)"),
              ("clients_8_tok_s", "8 clients: aggregate tok/s"),
              ("rss_mb", "resident memory (MB)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(16, 3.4))
    names = list(summary)
    for ax, (key, title) in zip(axes, panels, strict=True):
        ax.bar(names, [summary[n][key] for n in names], color=["tab:blue", "tab:gray"])
        ax.set_title(title, fontsize=9)
    fig.suptitle("smollm2-135m: ollamapy and llama-server, same slots, threads and file")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
