"""`make serve`: start `ollamapy serve`, import the default models if they are missing, keep
serving.

The models are imported the way a user imports a local file: a Modelfile `FROM <path>` and
`ollamapy create NAME -f Modelfile` against the running server (blob upload, then
/api/create). The cached files come from scripts/fetch_models.py. Ctrl-C stops the server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_models import cache_dir  # noqa: E402

from ollamapy.settings import env, parse_host  # noqa: E402

DEFAULT_MODELS = {  # name in the store → file or folder under the model cache
    "smollm2:135m": "smollm2-135m.gguf",
    "gemma3:270m": "gemma3-270m.gguf",
    "all-minilm": "all-minilm",
}


def wait_until_up(url: str, server: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"ollamapy serve exited with {server.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"ollamapy serve did not answer at {url}")


def import_missing(url: str) -> None:
    present = {m["name"] for m in httpx.get(f"{url}/api/tags").json()["models"]}
    models = cache_dir() / "models"
    for name, file in DEFAULT_MODELS.items():
        if name in present or f"{name}:latest" in present:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            modelfile = Path(tmp) / "Modelfile"
            modelfile.write_text(f"FROM {models / file}\n")
            print(f"importing {name} from {models / file}", flush=True)
            subprocess.run([sys.executable, "-m", "ollamapy.cli", "create", name,
                            "-f", str(modelfile)], check=True)


def main() -> int:
    url = parse_host(env("OLLAMA_HOST")).url
    server = subprocess.Popen([sys.executable, "-m", "ollamapy.cli", "serve"])
    try:
        wait_until_up(url, server)
        import_missing(url)
        # load the default model now: on the fast path its decode step compiles at load
        # (about a minute the first time on 2 cores, seconds afterwards from the cache)
        print("loading smollm2:135m ...", flush=True)
        httpx.post(f"{url}/api/generate", json={"model": "smollm2:135m"}, timeout=900)
        print(f"ollamapy is serving on {url} (Ctrl-C stops it)", flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
