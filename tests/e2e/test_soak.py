"""A bounded soak: 800 requests mixing every kind of endpoint from 16 concurrent clients,
some of which hang up mid-stream, against a live fast-path server on the real models.

Asserts zero 5xx answers and RSS growth (the server's and its engine processes') under
100 MB from the end of the warm-up to the end (both printed, both measured in the same
settled state: see `settled_rss`), that the
server still answers correctly at the end, that its open file descriptors come back to their
count before the soak (no leaked socket or file), that no temporary file is left in the store,
and that the disk invariant holds (hardening.md §7 item 29).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.e2e.conftest import process_tree, start_server, stop_server
from tests.store.invariant import assert_disk_invariant

REQUESTS = 800  # CI's bounded soak (20-minute suite); hardening.md §7 item 29: 30–60 min locally
CLIENTS = 16
WARM_UP = 150
# the timeouts are hang guards: a request waits at most a few reloads (seconds each)
HANG_GUARD_S = 600


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def tree_rss_mb(pid: int) -> float:
    """The server's RSS and its engine processes' (and their fork server's)."""
    total = 0.0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):  # an unloaded engine that exited meanwhile
            total += rss_mb(p)
    return total


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def request_for(i: int, rng: random.Random) -> tuple[str, str, dict | None, str]:
    """(method, path, body, how): how is "read", "stream" or "abort" (hang up mid-stream)."""
    kind = rng.choices(["generate", "chat", "embed", "tags", "show", "ps", "version",
                        "tokenize", "v1chat", "copy"], weights=[6, 6, 3, 2, 2, 1, 1, 1, 2, 1])[0]
    opts = {"num_predict": rng.randint(1, 8), "seed": i}
    if rng.random() < 0.004:  # now and then a client that wants another window: a reload
        opts["num_ctx"] = 1024  # (a reload there, and one back)
    how = "abort" if rng.random() < 0.15 else "read"
    if kind == "generate":
        return "POST", "/api/generate", {"model": "smollm2:135m", "prompt": f"Count to {i % 9}",
                                         "options": opts}, how
    if kind == "chat":
        return "POST", "/api/chat", {"model": "smollm2:135m", "options": opts, "messages": [
            {"role": "user", "content": f"Say {i}"}]}, how
    if kind == "v1chat":
        return "POST", "/v1/chat/completions", {"model": "smollm2:135m", "max_tokens": 4,
                                                "stream": True, "messages": [
                                                    {"role": "user", "content": "Hi"}]}, how
    if kind == "embed":
        return "POST", "/api/embed", {"model": "all-minilm", "input": [f"text {i}", "other"]}, \
            "read"
    if kind == "show":
        return "POST", "/api/show", {"model": rng.choice(["smollm2:135m", "all-minilm"])}, "read"
    if kind == "tokenize":
        return "POST", "/api/tokenize", {"model": "smollm2:135m", "content": f"hello {i}"}, \
            "read"
    if kind == "copy":
        return "POST", "/api/copy", {"source": "smollm2:135m", "destination": f"soak-{i % 5}"}, \
            "read"
    return "GET", {"tags": "/api/tags", "ps": "/api/ps", "version": "/api/version"}[kind], \
        None, "read"


async def run_plan(url: str, plan: list[tuple[str, str, dict | None, str]], first: int,
                   statuses: Counter) -> None:
    """Requests first … first + len(plan) - 1 of the soak, from CLIENTS clients at once."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(first, first + len(plan)):
        queue.put_nowait(i)

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            method, path, body, how = plan[i - first]
            async with http.stream(method, path, json=body) as r:
                statuses[r.status_code] += 1
                if how == "abort":  # read one line, then hang up
                    async for _ in r.aiter_lines():
                        break
                else:
                    await r.aread()
            if i % 100 == 0:  # copies come and go while everything else runs
                r = await http.request("DELETE", "/api/delete", json={"model": f"soak-{i % 5}"})
                assert r.status_code < 500  # a 404 (not copied yet) is fine

    async with httpx.AsyncClient(base_url=url, timeout=HANG_GUARD_S) as http:
        await asyncio.gather(*(client(http) for _ in range(CLIENTS)))


def settled_rss(url: str, pid: int) -> float:
    """RSS in one and the same state every time: every request answered, both models loaded
    with their default window (a soak request may have reloaded smollm2 with another)."""
    with httpx.Client(base_url=url, timeout=HANG_GUARD_S) as http:
        assert http.post("/api/generate", json={"model": "smollm2:135m", "prompt": "Hi",
                                                "options": {"num_predict": 1}}).status_code == 200
        assert http.post("/api/embed", json={"model": "all-minilm", "input": "x"}
                         ).status_code == 200
    return tree_rss_mb(pid)


def soak(url: str, pid: int) -> tuple[Counter, float, float]:
    """→ (statuses, RSS after the warm-up, RSS at the end), both measured settled."""
    statuses: Counter = Counter()
    rng = random.Random(1234)
    plan = [request_for(i, rng) for i in range(REQUESTS)]
    asyncio.run(run_plan(url, plan[:WARM_UP], 0, statuses))
    warm = settled_rss(url, pid)
    asyncio.run(run_plan(url, plan[WARM_UP:], WARM_UP, statuses))
    return statuses, warm, settled_rss(url, pid)


def test_soak(server) -> None:
    srv = start_server(server.models, OLLAMAPY_FAST="1", OLLAMAPY_COMPILE="0",
                       OLLAMA_NUM_PARALLEL="4")
    try:
        with httpx.Client(base_url=srv.url, timeout=HANG_GUARD_S) as http:  # both loaded
            assert http.post("/api/generate", json={"model": "smollm2:135m"}).status_code == 200
            assert http.post("/api/embed", json={"model": "all-minilm", "input": "x"}
                             ).status_code == 200
        fds_before = open_fds(srv.process.pid)
        t0 = time.monotonic()
        statuses, warm, end = soak(srv.url, srv.process.pid)
        elapsed = time.monotonic() - t0
        print(f"\nsoak: {REQUESTS} requests, {CLIENTS} clients, {elapsed:.0f} s; statuses "
              f"{dict(statuses)}; RSS after warm-up {warm:.0f} MB, at the end {end:.0f} MB "
              f"(growth {end - warm:+.0f} MB)")
        assert sum(statuses.values()) == REQUESTS
        assert not [s for s in statuses if s >= 500], statuses
        assert end - warm < 100
        # still serving, correctly
        r = httpx.post(f"{srv.url}/api/generate", timeout=HANG_GUARD_S, json={
            "model": "smollm2:135m", "prompt": "The capital of France is", "raw": True,
            "stream": False, "options": {"temperature": 0, "num_predict": 3}}).json()
        assert r["done"] and r["eval_count"] == 3
        running = httpx.get(f"{srv.url}/api/ps").json()["models"]
        assert [m["name"] for m in running] == ["smollm2:135m"] or len(running) == 2
        for n in range(5):  # leave the session's store as it was
            httpx.request("DELETE", f"{srv.url}/api/delete", json={"model": f"soak-{n}"})
        # closed connections: their sockets go (in milliseconds: the wait is a hang guard)
        deadline = time.monotonic() + HANG_GUARD_S
        while (fds := open_fds(srv.process.pid)) > fds_before and time.monotonic() < deadline:
            time.sleep(0.1)
        print(f"soak: open file descriptors {fds_before} before, {fds} after")
        assert fds <= fds_before
    finally:
        stop_server(srv)
    leftovers = [p for p in (server.models / "blobs").iterdir() if p.name.startswith(".tmp")]
    assert not leftovers
    assert_disk_invariant(server.models)
