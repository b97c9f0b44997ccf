"""`make serve`: import the default models if they are missing, then start `ollamapy serve` on
`OLLAMA_HOST` and keep serving.

The models are imported the way a user imports a local file: a Modelfile `FROM <path>` and
`ollamapy create NAME -f Modelfile`, against a private server on a free loopback port over the
same store. Only when the store holds all three does the server on `OLLAMA_HOST` start, so the
first `/api/tags` answer any client can get lists them. The cached files come from
scripts/fetch_models.py. Ctrl-C stops the server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_models import cache_dir  # noqa: E402

from ollamapy.settings import Settings, env, parse_host  # noqa: E402
from ollamapy.store import Store  # noqa: E402

DEFAULT_MODELS = {  # name in the store → file or folder under the model cache
    "smollm2:135m": "smollm2-135m.gguf",
    "gemma3:270m": "gemma3-270m.gguf",
    "all-minilm": "all-minilm",
}


def start_server(host: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ollamapy.cli", "serve"],
                            env={**os.environ, "OLLAMA_HOST": host})


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


def wait_until_up(url: str, server: subprocess.Popen, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout  # a hang guard: it starts in seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"ollamapy serve exited with {server.returncode}")
        try:
            if httpx.get(url, timeout=10).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"ollamapy serve did not answer at {url}")


def missing_models() -> list[str]:
    store = Store(Settings.from_env().models)  # the store reads no torch and needs no server
    return [name for name in DEFAULT_MODELS if store.find(name) is None]


def free_loopback_host() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def import_models(names: list[str]) -> None:
    """`ollamapy create` each model against a private server, stopped once they are stored."""
    host = free_loopback_host()
    server = start_server(host)
    try:
        wait_until_up(f"http://{host}", server)
        models = cache_dir() / "models"
        for name in names:
            with tempfile.TemporaryDirectory() as tmp:
                modelfile = Path(tmp) / "Modelfile"
                modelfile.write_text(f"FROM {models / DEFAULT_MODELS[name]}\n")
                print(f"importing {name} from {models / DEFAULT_MODELS[name]}", flush=True)
                subprocess.run([sys.executable, "-m", "ollamapy.cli", "create", name,
                                "-f", str(modelfile)], env={**os.environ, "OLLAMA_HOST": host},
                               check=True)
    finally:
        stop_server(server)


def stop_cleanly(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM: the same clean stop as Ctrl-C


def main() -> int:
    # a background job starts with SIGINT ignored; Ctrl-C, SIGINT and SIGTERM all stop the
    # server (and a private one mid-import) before this script exits
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, stop_cleanly)
    url = parse_host(env("OLLAMA_HOST")).url
    server = None
    try:
        if missing := missing_models():
            import_models(missing)
        server = start_server(env("OLLAMA_HOST"))
        wait_until_up(url, server)
        # load the default model now: on the fast path its decode step compiles at load
        # (about a minute the first time on 2 cores, seconds afterwards from the cache)
        print("loading smollm2:135m ...", flush=True)
        httpx.post(f"{url}/api/generate", json={"model": "smollm2:135m"}, timeout=900)
        print(f"ollamapy is serving on {url} (Ctrl-C stops it)", flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if server is not None:
            stop_server(server)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
