"""A live `ollamapy serve` on a free loopback port, over a fresh model store into which the
real models (../shared/MODELS.md) are imported the way a user imports them: a Modelfile
`FROM <file>` and `ollamapy create` against the running server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import model_path

IMPORTS = {"smollm2:135m": "smollm2-135m.gguf", "gemma3:270m": "gemma3-270m.gguf",
           "all-minilm": "all-minilm"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    host: str  # OLLAMA_HOST for clients
    models: Path
    process: subprocess.Popen

    def env(self) -> dict[str, str]:
        return {**os.environ, "OLLAMA_HOST": self.host, "OLLAMA_MODELS": str(self.models)}

    def cli(self, *args: str, input: str | None = None, check: bool = True
            ) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ollamapy.cli", *args], env=self.env(),
                              capture_output=True, text=True, input=input, check=check,
                              timeout=600)


START_HANG_GUARD_S = 300  # a start takes ~2-5 s on two busy cores


def start_server(models: Path, port: int | None = None, command: list[str] | None = None,
                 **env: str) -> Server:
    """command: what runs the server (`ollamapy serve`, or a launcher that runs it)."""
    port = port or free_port()
    host = f"127.0.0.1:{port}"
    server_env = {**os.environ, "OLLAMA_HOST": host, "OLLAMA_MODELS": str(models), **env}
    process = subprocess.Popen(command or [sys.executable, "-m", "ollamapy.cli", "serve"],
                               env=server_env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    server = Server(f"http://{host}", host, models, process)
    deadline = time.monotonic() + START_HANG_GUARD_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stderr.read()}")
        try:
            if httpx.get(server.url, timeout=10).text == "Ollama is running":
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"hang guard: the server did not start in {START_HANG_GUARD_S} s")


def stop_server(server: Server, sig: int = signal.SIGTERM) -> None:
    if server.process.poll() is None:
        server.process.send_signal(sig)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    if server.process.stderr:
        server.process.stderr.close()


def processes() -> dict[int, tuple[int, str]]:
    """Linux's /proc: every process → (its parent, its name)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it exited while we looked
            continue
        name, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:]
        found[int(stat.parent.name)] = (int(rest.split()[1]), name)
    return found


def process_tree(pid: int) -> dict[int, str]:
    """pid and its descendants (a server's fork server and engine processes) → name."""
    table = processes()

    def descends(p: int) -> bool:
        while p > 1 and p != pid:
            p = table.get(p, (0, ""))[0]
        return p == pid

    return {p: name for p, (_, name) in table.items() if descends(p)}


def gone(pid: int) -> bool:
    """The process has exited (reaped, or a zombie not yet reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def import_model(server: Server, name: str, source: Path, tmp: Path) -> None:
    modelfile = tmp / f"Modelfile.{name.replace(':', '_')}"
    modelfile.write_text(f"FROM {source}\n")
    server.cli("create", name, "-f", str(modelfile))


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    sources = {name: model_path(file) for name, file in IMPORTS.items()}
    models = tmp_path_factory.mktemp("ollama-models")
    srv = start_server(models)
    try:
        for name, source in sources.items():
            import_model(srv, name, source, tmp_path_factory.mktemp("modelfiles"))
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture(scope="session")
def fast_server(server: Server) -> Iterator[Server]:
    """The product's default path as `make serve` runs it: quantized weights and the compiled
    batched decode step (OLLAMAPY_FAST=1, OLLAMAPY_COMPILE=1), four slots, over the same store;
    smollm2 loaded (and its steps compiled) once for every module that drives it."""
    import ollama

    srv = start_server(server.models, OLLAMAPY_FAST="1", OLLAMAPY_COMPILE="1",
                       OLLAMA_NUM_PARALLEL="4")
    try:
        with ollama.Client(host=srv.url, timeout=600) as client:
            client.generate(model="smollm2:135m", prompt="")
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture()
def client(server: Server):
    import ollama

    c = ollama.Client(host=server.url)
    yield c
    c.close()
