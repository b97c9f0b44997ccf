"""/api/pull, /api/push and `ollamapy pull|push` against registries: a real one (Debian's
docker-registry, tests/e2e/distribution.py) for the round trip, and the stand-in
(tests/store/standin.py) where a registry must be slow, or stop, on cue."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import ollama
import pytest

from ollamapy.store import Store
from tests.e2e.conftest import Server, start_server, stop_server
from tests.e2e.distribution import Registry, start_registry
from tests.store.standin import partial_records, standin

PROMPT = "Why is the sky blue?"
GREEDY = {"temperature": 0, "num_predict": 16}


@pytest.fixture(scope="session")
def distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    registry = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield registry
    finally:
        registry.stop()


def run_on_a_terminal(server: Server, *args: str, timeout: float = 300) -> str:
    """Run the CLI with stderr on a pseudo-terminal (so it draws progress bars)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "ollamapy.cli", *args], stdin=slave,
                            stdout=slave, stderr=slave, env=server.env())
    os.close(slave)
    out, deadline = b"", time.monotonic() + timeout
    try:
        while proc.poll() is None or select.select([master], [], [], 0)[0]:
            if time.monotonic() > deadline:
                raise TimeoutError(out)
            if select.select([master], [], [], 0.1)[0]:
                try:
                    out += os.read(master, 65536)
                except OSError:  # the terminal closed with the process
                    break
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert proc.wait() == 0, out
    return out.decode("utf-8", "replace")


def test_push_then_pull_back_through_a_real_registry(server: Server, client: ollama.Client,
                                                     distribution: Registry, tmp_path) -> None:
    before = client.generate(model="smollm2:135m", prompt=PROMPT, options=GREEDY).response
    remote = f"{distribution.host}/library/smollm2:135m"
    client.copy("smollm2:135m", remote)
    try:
        # push: a log gets one line per status
        lines = server.cli("push", remote, "--insecure").stderr.splitlines()
        assert lines[0] == "retrieving manifest" and lines[-2:] == ["pushing manifest",
                                                                   "success"]
        assert any(line.startswith("pushing ") and line.endswith(" 98 MB") for line in lines)
        client.delete(remote)
        assert remote not in {m.model for m in client.list().models}

        # pulled back here, every blob is smollm2:135m's: shared, so present at once
        progress = list(client.pull(remote, insecure=True, stream=True))
        assert progress[0].status == "pulling manifest" and progress[-1].status == "success"
        layers = [p for p in progress if p.digest]
        assert layers and all(p.completed == p.total for p in layers)
        assert remote in {m.model for m in client.list().models}
    finally:
        with contextlib.suppress(ollama.ResponseError):
            client.delete(remote)

    # into an empty store everything is downloaded, with a bar per layer on a terminal
    fresh = start_server(tmp_path / "models")
    try:
        shown = run_on_a_terminal(fresh, "pull", remote, "--insecure")
        assert "pulling manifest" in shown and "100% ▕" in shown and "98 MB/98 MB" in shown
        assert "verifying sha256 digest" in shown and shown.rstrip().endswith("success")
        with ollama.Client(host=fresh.url) as other:
            assert [m.model for m in other.list().models] == [remote]
            after = other.generate(model=remote, prompt=PROMPT, options=GREEDY).response
        assert after == before  # the same greedy answer from the model that went round
        pulled, original = Store(fresh.models), Store(server.models)
        assert pulled.manifest(remote) == original.manifest("smollm2:135m")
    finally:
        stop_server(fresh)


def test_run_pulls_a_missing_model_first(server: Server, client: ollama.Client,
                                         distribution: Registry) -> None:
    """As Ollama's `run`: a model that is not here is pulled (progress on stderr), then run."""
    remote = f"{distribution.host}/library/smol-run:1"
    client.copy("smollm2:135m", remote)
    try:
        server.cli("push", remote, "--insecure")
        client.delete(remote)
        r = server.cli("run", remote, "--insecure", "What is the capital of France?")
        lines = r.stderr.splitlines()
        assert lines[0] == "pulling manifest" and "success" in lines
        assert r.stdout.strip()  # the answer
        assert remote in {m.model for m in client.list().models}
        assert remote in {m.model for m in client.ps().models}
        missing = server.cli("run", f"{distribution.host}/library/nope:1", "--insecure", "Hi",
                             check=False)
        assert missing.returncode == 1
        assert "pull model manifest: file does not exist" in missing.stderr
    finally:
        with contextlib.suppress(ollama.ResponseError):
            client.delete(remote)


def test_pull_and_push_errors_over_http(server: Server, distribution: Registry) -> None:
    missing = f"{distribution.host}/library/nope:1"
    r = httpx.post(f"{server.url}/api/pull", json={"model": missing, "insecure": True,
                                                   "stream": False})
    assert (r.status_code, r.json()) == (404, {"error": "pull model manifest: file does not "
                                                        "exist"})  # Ollama: 500
    r = httpx.post(f"{server.url}/api/pull", json={"model": missing, "insecure": True})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line) for line in r.text.splitlines()] == [
        {"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}]
    for body, status, error in [
            ({"model": ""}, 400, "invalid model name"),
            ({"model": "../../etc/passwd"}, 400, "invalid model name"),
            ({"model": f"http://{missing}"}, 400, "insecure protocol http"),  # Ollama: 500
            ({"model": 5}, 400, "json: cannot unmarshal number into Go struct field "
                                "PullRequest.model of type string")]:
        r = httpx.post(f"{server.url}/api/pull", json=body)
        assert (r.status_code, r.json()) == (status, {"error": error}), body

    r = httpx.post(f"{server.url}/api/push", json={"model": ""})
    assert (r.status_code, r.json()) == (400, {"error": "model is required"})
    r = httpx.post(f"{server.url}/api/push", json={"model": missing, "insecure": True})
    assert [json.loads(line) for line in r.text.splitlines()] == [
        {"status": "retrieving manifest"}, {"status": "couldn't retrieve manifest"},
        {"error": f'model "{distribution.host}/library/nope:1" not found'}]
    r = server.cli("pull", missing, "--insecure", check=False)
    assert r.returncode == 1 and "Error: pull model manifest: file does not exist" in r.stderr


def test_create_from_a_model_that_is_not_local_pulls_it(server: Server,
                                                        distribution: Registry) -> None:
    """Ollama's /api/create pulls a missing `from` over https; this registry speaks http,
    so the pull starts and fails: proof the create went to the registry."""
    r = httpx.post(f"{server.url}/api/create", json={
        "model": "from-remote", "from": f"{distribution.host}/library/smollm2:135m"})
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert lines[0] == {"status": "pulling manifest"}
    assert lines[-1]["error"].startswith("pull model manifest: ")
    assert "from-remote:latest" not in httpx.get(f"{server.url}/api/tags").text


def test_an_interrupted_pull_resumes_without_fetching_twice(server: Server, tmp_path) -> None:
    """The client goes away, then the server is killed mid-blob: each time the partial files
    stay, and the next pull asks only for the bytes it does not have."""
    source = Store(server.models)
    manifest = source.manifest("smollm2:135m")
    weights = manifest.layers[0]
    with standin() as registry:
        registry.manifests["library/smollm2:135m"] = manifest.to_json()
        for digest in manifest.digests:
            registry.blobs[digest] = source.blobs.path(digest).read_bytes()
        registry.delay_s = 0.02  # ~3 MB/s a part: slow enough to interrupt
        name = f"{registry.url.removeprefix('http://')}/library/smollm2:135m"
        models = tmp_path / "models"
        blobs = models / "blobs"

        def have() -> int:
            return sum(r["Completed"] for r in partial_records(blobs, weights.digest))

        def listed(srv: Server) -> bool:
            return name in {m["name"] for m in httpx.get(f"{srv.url}/api/tags").json()["models"]}

        srv = start_server(models)
        try:
            # 1. the client reads a little, then disconnects: the download stops
            with httpx.stream("POST", f"{srv.url}/api/pull",
                              json={"model": name, "insecure": True}) as r:
                for line in r.iter_lines():
                    if json.loads(line).get("completed", 0) > weights.size // 10:
                        break
            sent = -1
            while sent != registry.blob_bytes_sent:  # quiet for half a second: stopped
                sent = registry.blob_bytes_sent
                time.sleep(0.5)
            first = partial_records(blobs, weights.digest)
            assert weights.size // 10 < have() < weights.size and not listed(srv)

            # 2. pull again: it resumes; kill -9 the server half way through the blob
            registry.log.clear()
            puller = threading.Thread(target=_pull_ignoring_errors, args=(srv, name),
                                      daemon=True)
            puller.start()
            deadline = time.monotonic() + 300  # a hang guard: half the blob takes seconds
            while have() < weights.size // 2:
                assert not listed(srv)  # /api/tags never shows a half-pulled model
                if time.monotonic() > deadline:
                    srv.process.kill()
                    raise AssertionError(f"hang guard: stuck at {have()} for 300 s: "
                                         f"{registry.log}\n"
                                         f"{srv.process.stderr.read()[-4000:]}")
                time.sleep(0.1)
            stop_server(srv, signal.SIGKILL)
            puller.join(120)
            assert _ranges(registry, weights.digest) == _expected_ranges(first)
            kept = partial_records(blobs, weights.digest)
            assert weights.size // 2 <= have() < weights.size

            # 3. restarted, the server keeps the partial files and fetches only the rest
            srv = start_server(models)
            assert partial_records(blobs, weights.digest) == kept
            registry.delay_s = 0
            registry.log.clear()
            r = httpx.post(f"{srv.url}/api/pull", json={"model": name, "insecure": True,
                                                        "stream": False}, timeout=300)
            assert r.json() == {"status": "success"}
            assert _ranges(registry, weights.digest) == _expected_ranges(kept)
            sent_again = sum(e.sent for e in registry.requests_for(weights.digest))
            assert sent_again == weights.size - sum(r["Completed"] for r in kept)
            assert listed(srv) and partial_records(blobs, weights.digest) == []
            assert Store(models).blobs.path(weights.digest).read_bytes() == \
                registry.blobs[weights.digest]
        finally:
            stop_server(srv)


def _pull_ignoring_errors(srv: Server, name: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(f"{srv.url}/api/pull", json={"model": name, "insecure": True,
                                                "stream": False}, timeout=300)


def _ranges(registry, digest: str) -> list[str]:
    return sorted(e.headers["range"] for e in registry.requests_for(digest) if e.method == "GET")


def _expected_ranges(records: list[dict]) -> list[str]:
    """What a resumed pull must ask for: each unfinished part from its recorded count on."""
    return sorted(f"bytes={r['Offset'] + r['Completed']}-{r['Offset'] + r['Size'] - 1}"
                  for r in records if r["Completed"] < r["Size"])
