"""N ollamapy servers behind Ray Serve's HTTP proxy: the same Ollama, /v1 and /v1/messages API,
more users than one server holds.

    python -m ollamapy.deploy.ray_serve --replicas 2 --port 8000   # OLLAMA_MODELS: the store

Each `Replica` is a Ray Serve deployment that runs a whole `ollamapy serve` (its own
scheduler, engine processes, batching and prefix cache) on a loopback port, over the one model
store all replicas share (`OLLAMA_MODELS`: a folder every replica can read, a network file
system across hosts); Ray places them on the cluster's nodes and restarts one that dies.
`Ingress`, behind Ray's proxy, reads each request and forwards it, streamed, to a replica. A
conversation is routed by its opening (the model and the messages up to the first user turn,
or a prompt's first characters: `affinity_key`) with rendezvous hashing (`replica_for`): every
turn of a chat lands on the replica whose KV cache holds the turns before (ollamapy's prefix
reuse), and a replica added or gone moves only the conversations it takes or held. Requests
without a key (listing, pulling) go to the replicas in turn. Each answer says which replica
served it (`x-ollamapy-replica`).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

REPLICA_HEADER = "x-ollamapy-replica"
PR_SET_PDEATHSIG = 1  # prctl(2)
START_TIMEOUT_S = 300.0
SERVER_STOP_S = 15.0  # a replica's server that has not exited by then after SIGTERM is killed
PROMPT_PREFIX_CHARS = 512  # of a bare prompt: its opening, where requests share one
# hop-by-hop and length headers: each side sets its own
_DROPPED = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def affinity_key(path: str, body: bytes) -> str:
    """The conversation a request belongs to, as a short hash ("" when it has none): the
    model and the messages up to the first user turn for chats (/api/chat,
    /v1/chat/completions, /v1/messages, /v1/responses), the model, system prompt and the
    prompt's opening for completions (/api/generate, /v1/completions)."""
    try:
        request = json.loads(body) if body else {}
    except ValueError:
        return ""
    if not isinstance(request, dict) or not isinstance(request.get("model"), str):
        return ""
    opening: Any
    if path in ("/api/chat", "/v1/chat/completions", "/v1/messages"):
        messages = request.get("messages")
        if not isinstance(messages, list):
            return ""
        first_user = next((i for i, m in enumerate(messages)
                           if isinstance(m, dict) and m.get("role") == "user"), len(messages))
        opening = [request.get("system"), messages[:first_user + 1]]
    elif path == "/v1/responses":
        opening = [request.get("instructions"), str(request.get("input"))[:PROMPT_PREFIX_CHARS]]
    elif path in ("/api/generate", "/v1/completions"):
        opening = [request.get("system"), str(request.get("prompt"))[:PROMPT_PREFIX_CHARS]]
    else:
        return ""
    text = json.dumps([request["model"], opening], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def replica_for(key: str, replicas: int) -> int:
    """Rendezvous (highest-random-weight) hashing: the replica a conversation goes to."""
    return max(range(replicas), key=lambda i: hashlib.sha256(f"{key}/{i}".encode()).digest())


def _die_with_parent() -> None:
    """In the server's process before it starts (Linux): SIGTERM when the replica's process
    ends, however it ends (Ray kills replicas it scales down)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@serve.deployment(graceful_shutdown_timeout_s=SERVER_STOP_S)
class Replica:
    """One `ollamapy serve` on a loopback port; requests forwarded to it, streamed back."""

    def __init__(self, name: str, environ: Mapping[str, str]) -> None:
        self.name = name
        self.host = f"127.0.0.1:{_free_port()}"
        env = {**os.environ, **environ, "OLLAMA_HOST": self.host}
        self.process = subprocess.Popen([sys.executable, "-m", "ollamapy.cli", "serve"],
                                        env=env, stdin=subprocess.DEVNULL,
                                        preexec_fn=_die_with_parent)
        self.client = httpx.AsyncClient(base_url=f"http://{self.host}", timeout=None)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"ollamapy serve exited ({self.process.returncode})")
            try:
                if httpx.get(f"http://{self.host}", timeout=5).text == "Ollama is running":
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"ollamapy serve did not start in {START_TIMEOUT_S} s")
            time.sleep(0.2)

    async def forward(self, method: str, target: str, headers: list[tuple[str, str]],
                      body: bytes) -> AsyncIterator[Any]:
        """→ (status, headers) first, then the body's chunks as the server sends them."""
        request = self.client.build_request(method, target, headers=headers, content=body)
        response = await self.client.send(request, stream=True)
        try:
            kept = [(k, v) for k, v in response.headers.items() if k.lower() not in _DROPPED]
            yield response.status_code, [*kept, (REPLICA_HEADER, self.name)]
            async for chunk in response.aiter_raw():
                yield chunk
        finally:
            await response.aclose()

    def __del__(self) -> None:  # Ray Serve's shutdown hook for a replica
        if getattr(self, "process", None) is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(SERVER_STOP_S)
            except subprocess.TimeoutExpired:
                self.process.kill()


@serve.deployment
class Ingress:
    """Behind Ray's HTTP proxy: every request to a replica, a conversation to its own."""

    def __init__(self, replicas: list[DeploymentHandle]) -> None:
        self.replicas = replicas
        self.turn = itertools.count()

    async def __call__(self, request: Request) -> Response:
        body = await request.body()
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _DROPPED]
        key = affinity_key(request.url.path, body)
        n = len(self.replicas)
        replica = self.replicas[replica_for(key, n) if key else next(self.turn) % n]
        chunks = replica.options(stream=True).forward.remote(request.method, target, headers,
                                                             body)
        status, response_headers = await chunks.__anext__()

        async def rest() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                yield chunk

        return StreamingResponse(rest(), status_code=status, headers=dict(response_headers))


def application(replicas: int = 2, environ: Mapping[str, str] | None = None) -> Any:
    """The Ray Serve application: `replicas` servers behind one ingress. environ: what each
    server is started with beyond this process's environment (OLLAMA_MODELS: the shared
    store, OLLAMA_NUM_PARALLEL, ...)."""
    servers = [Replica.options(name=f"Replica{i}", ray_actor_options={"num_cpus": 0})
               .bind(f"replica-{i}", dict(environ or {})) for i in range(replicas)]
    return Ingress.options(ray_actor_options={"num_cpus": 0}).bind(servers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--host", default="127.0.0.1", help="where Ray's proxy listens")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--address", default=None,
                        help="a Ray cluster to join (auto: the one on this node); default: "
                             "a local instance of this process")
    args = parser.parse_args(argv)
    import ray

    ray.init(address=args.address, include_dashboard=False)
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(application(args.replicas), route_prefix="/")
    print(f"ollamapy on Ray Serve: {args.replicas} replicas at http://{args.host}:{args.port}",
          flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop as on Ctrl-C
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
