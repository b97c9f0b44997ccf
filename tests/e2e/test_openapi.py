"""The OpenAPI description of the API (`ollamapy/server/openapi.py`) against the server it
describes.

What is proved:

* the document served at `GET /openapi.json` is the one `openapi.build()` makes and the one
  kept in the repository (`ollamapy/server/openapi.json`, byte for byte as
  `python -m ollamapy.server.openapi` writes it);
* it is a valid OpenAPI 3.1 document (the 3.1 meta-schema, as schemathesis checks it, and every
  schema in it against the JSON Schema 2020-12 meta-schema);
* it describes every route of the app, method by method, and nothing the app does not serve
  (no drift either way), with every path parameter declared;
* schemathesis, generating requests from it against a live server over a copy of the real
  models (smollm2:135m, all-minilm), never gets a 5xx: the document's examples, the coverage
  phase's negative cases (each field missing, of the wrong type, out of its range; unexpected
  methods) and property-based fuzzing of every operation, with a fixed seed. The hooks in
  tests/security/fuzz_hooks.py steer two requests in three to the real models (so fuzzed
  fields reach the runner), keep generation short, protect the real models and log every
  answer; pulls and pushes go to a stand-in registry on loopback (tests/store/standin.py).
  Every operation is exercised, real models answer 200s, every status is one the document
  lists for its operation, and the server still serves afterwards.

The run is bounded by its number of examples (MAX_EXAMPLES, the phases it runs), never by the
clock: it takes ~2 minutes on two idle cores and ~3.5 with both busy, longer on a slower
machine, and passes there too. Its timeouts are hang guards: a request that gets no answer
(REQUEST_TIMEOUT_S), a run that makes no progress at all (STALL_S).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import schemathesis

from ollamapy.server import openapi
from ollamapy.server.app import ROUTES
from tests.e2e.conftest import Server, start_server, stop_server
from tests.store.standin import standin

REPO = Path(__file__).resolve().parents[2]
TEXT_MODEL, EMBED_MODEL = "smollm2:135m", "all-minilm"  # as in the hooks (not imported here:
# they register themselves with schemathesis, which only the fuzz run's process should see)
REGENERATE = "run `python -m ollamapy.server.openapi` to rewrite ollamapy/server/openapi.json"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# the fuzz run: fixed seed, bounded cases, one worker; no wall-clock budget
SEED = 20240901
MAX_EXAMPLES = 20  # per operation in the fuzzing phase (the coverage phase is exhaustive)
# hang guards only. The slowest answers (a model load, a reload for another num_ctx) take
# ~15 s with both cores busy; most take milliseconds.
REQUEST_TIMEOUT_S = 300  # one request
STALL_S = 900  # the whole run: no new answer and no new output for this long
MIN_REQUESTS = 1500
# negative cases only in the coverage phase: its positive ones are every boundary of every
# option, each a generation, minutes on two cores; the fuzzing phase draws positive ones
CONFIG = """\
[phases.coverage.generation]
mode = "negative"
"""
# operations that run a model, and must have answered 200 from a real one
MODEL_OPERATIONS = {
    ("POST", "/api/generate"): TEXT_MODEL, ("POST", "/api/chat"): TEXT_MODEL,
    ("POST", "/api/tokenize"): TEXT_MODEL, ("POST", "/api/detokenize"): TEXT_MODEL,
    ("POST", "/api/show"): TEXT_MODEL, ("POST", "/v1/chat/completions"): TEXT_MODEL,
    ("POST", "/v1/completions"): TEXT_MODEL, ("POST", "/v1/responses"): TEXT_MODEL,
    ("POST", "/v1/messages"): TEXT_MODEL, ("POST", "/api/embed"): EMBED_MODEL,
    ("POST", "/api/embeddings"): EMBED_MODEL, ("POST", "/v1/embeddings"): EMBED_MODEL,
}


def served_operations() -> set[tuple[str, str]]:
    """(method, path) of every route, with Starlette's `{name:path}` written `{name}`."""
    return {(method, re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path))
            for route in ROUTES for method in route.methods or ()}


def described_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items()
            for method in item if method in HTTP_METHODS}


def schemas_in(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON Schema of the document: components' and those under a `schema` key."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema" and isinstance(value, dict):
                yield value
            elif key == "schemas" and isinstance(value, dict):
                yield from (v for v in value.values() if isinstance(v, dict))
            else:
                yield from schemas_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from schemas_in(value)


# -- the document ---------------------------------------------------------------------------


def test_the_served_document_is_the_built_and_the_kept_one(server: Server) -> None:
    r = httpx.get(f"{server.url}/openapi.json", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    built = openapi.build()
    assert r.json() == built, "GET /openapi.json differs from openapi.build()"
    kept = openapi.KEPT.read_text(encoding="utf-8")
    assert json.loads(kept) == built, f"the kept document is out of date: {REGENERATE}"
    assert kept == openapi.render(), f"the kept document is not as written: {REGENERATE}"


def test_every_route_is_described_and_every_description_is_a_route() -> None:
    document = openapi.build()
    served, described = served_operations(), described_operations(document)
    assert not served - described, (
        f"routes of ollamapy.server.app.ROUTES that openapi.py does not describe: "
        f"{sorted(served - described)}; describe them, then {REGENERATE}")
    assert not described - served, (
        f"operations openapi.py describes that no route serves: {sorted(described - served)}")
    for path, item in document["paths"].items():
        in_path = set(re.findall(r"\{(\w+)\}", path))
        for method in (m for m in item if m in HTTP_METHODS):
            declared = {p["name"] for p in (*item.get("parameters", ()),
                                            *item[method].get("parameters", ()))
                        if p["in"] == "path"}
            assert declared == in_path, (method, path, declared)


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi.build()
    assert document["openapi"].startswith("3.1.")
    loaded = schemathesis.openapi.from_dict(document)
    loaded.validate()  # the OpenAPI 3.1 meta-schema; raises on an invalid document
    operations = {(op.ok().method.upper(), op.ok().path) for op in loaded.get_all_operations()}
    assert operations == described_operations(document)
    found = 0
    for schema in schemas_in(document):
        jsonschema.Draft202012Validator.check_schema(schema)
        found += 1
    assert found > 40


# -- the fuzz run ---------------------------------------------------------------------------


def link_or_copy(source: str, destination: str) -> None:
    """Blobs and manifests are only ever replaced (temp file, rename) or unlinked, never
    written in place, so a hard link is as good as a copy here, and costs nothing."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


class Drain:
    """Reads the server's stderr while it runs (an unread pipe would stall it once full)."""

    def __init__(self, server: Server) -> None:
        self.lines: list[str] = []
        self._stream = server.process.stderr
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._stream is not None
        try:
            for line in self._stream:
                self.lines.append(line)
        except (OSError, ValueError):  # closed under us
            pass

    def tail(self, n: int = 60) -> str:
        return "".join(self.lines[-n:])

    def join(self) -> None:
        self._thread.join(10)


def stop(server: Server, drain: Drain) -> None:
    """Stop the server, then let the drain see the end of its stderr before it is closed."""
    if server.process.poll() is None:
        server.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):  # stop_server kills it then
            server.process.wait(timeout=30)
    drain.join()
    stop_server(server)


def schemathesis_command(schema: Path, url: str, config: Path) -> list[str]:
    executable = Path(sys.executable).with_name("schemathesis")
    program = [str(executable)] if executable.exists() else [sys.executable, "-m",
                                                              "schemathesis.cli"]
    return [*program, "--config-file", str(config), "--no-color", "run", str(schema),
            "--url", url, "--checks", "not_a_server_error",
            "--phases", "examples,coverage,fuzzing", "--max-examples", str(MAX_EXAMPLES),
            "--seed", str(SEED), "--workers", "1", "--request-timeout", str(REQUEST_TIMEOUT_S),
            "--generation-database", "none", "--suppress-health-check", "all", "--no-shrink"]


def run_schemathesis(command: list[str], env: dict[str, str], cwd: Path, log: Path
                     ) -> tuple[int, str]:
    """Run it to its end, however long its examples take; stop it only when it makes no
    progress (no new answer in `log`, no new output) for STALL_S: a hang."""
    output_file = cwd / "schemathesis.out"

    def progress() -> tuple[int, int]:
        return (log.stat().st_size if log.exists() else 0), output_file.stat().st_size

    with output_file.open("wb") as out:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        last, moved = progress(), time.monotonic()
        while process.poll() is None:
            time.sleep(1)
            if (now := progress()) != last:
                last, moved = now, time.monotonic()
            elif time.monotonic() - moved > STALL_S:
                process.kill()
                process.wait()
                output = output_file.read_text(errors="replace")
                pytest.fail(f"hang guard: schemathesis made no progress (no answer, no "
                            f"output) for {STALL_S} s; its output so far:\n{output[-8000:]}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, output_file.read_text(errors="replace")


def check_answers(answers: list[dict[str, Any]], document: dict[str, Any], report: str
                  ) -> None:
    """Every operation exercised, a good many times, the real models included, and every
    status one the document lists for its operation."""
    seen = {(a["method"], a["path"]) for a in answers}
    missing = described_operations(document) - seen
    assert not missing, f"operations never exercised: {sorted(missing)}{report}"
    assert len(answers) >= MIN_REQUESTS, f"only {len(answers)} requests{report}"
    real = {(a["method"], a["path"]) for a in answers if a["status"] == 200
            and (model := MODEL_OPERATIONS.get((a["method"], a["path"]))) is not None
            and a["model"] in (model, f"{model}:latest")}
    assert real == set(MODEL_OPERATIONS), (
        f"no 200 from a real model for {sorted(set(MODEL_OPERATIONS) - real)}{report}")
    undocumented = collections.Counter(
        (a["method"], a["path"], a["status"]) for a in answers
        if (op := document["paths"][a["path"]].get(a["method"].lower())) is not None
        and str(a["status"]) not in op["responses"])  # (unexpected-method probes have none)
    assert not undocumented, f"statuses openapi.py does not list: {undocumented}{report}"


def test_fuzzing_the_live_server_finds_no_server_error(server: Server, tmp_path: Path) -> None:
    models = tmp_path / "models"  # the fuzzer deletes, copies and creates: not in the shared store
    shutil.copytree(server.models, models, copy_function=link_or_copy)
    log, config, schema = (tmp_path / name for name in ("answers.ndjson", "config.toml",
                                                        "openapi.json"))
    config.write_text(CONFIG)
    with standin() as registry:
        # a short window bounds what fuzzed prompts cost; not compiled: the HTTP surface is
        # this test's subject, and a new window would compile its steps from nothing
        srv = start_server(models, OLLAMA_CONTEXT_LENGTH="256", OLLAMAPY_COMPILE="0")
        drain = Drain(srv)
        try:
            with httpx.Client(base_url=srv.url, timeout=REQUEST_TIMEOUT_S) as http:
                # a request without num_predict generates 3 tokens at most, not up to num_ctx
                r = http.post("/api/create", json={"model": TEXT_MODEL, "from": TEXT_MODEL,
                                                   "parameters": {"num_predict": 3},
                                                   "stream": False})
                assert r.status_code == 200, r.text
                document = http.get("/openapi.json").json()
            assert document == openapi.build()
            # from a file: schemathesis leaves out the operation that served its document
            schema.write_text(json.dumps(document))
            env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.security.fuzz_hooks",
                   "OLLAMAPY_FUZZ_LOG": str(log),
                   "OLLAMAPY_FUZZ_REGISTRY": registry.url.removeprefix("http://"),
                   "PYTHONPATH": os.pathsep.join(filter(None, (
                       str(REPO), os.environ.get("PYTHONPATH")))),
                   "NO_COLOR": "1", "COLUMNS": "120"}
            started = time.monotonic()
            # cwd: schemathesis's .schemathesis/ and .hypothesis/ stay in tmp_path
            code, output = run_schemathesis(schemathesis_command(schema, srv.url, config),
                                            env, tmp_path, log)
            elapsed = time.monotonic() - started
            answers = [json.loads(line) for line in log.read_text().splitlines()] \
                if log.exists() else []
            errors = [a for a in answers if a["status"] >= 500]
            report = (f"\n--- schemathesis (exit {code}) ---\n{output[-8000:]}"
                      f"\n--- 5xx answers ({len(errors)}) ---\n"
                      + "\n".join(json.dumps(a) for a in errors[:20])
                      + f"\n--- server stderr ---\n{drain.tail()}")
            assert code == 0, report
            assert not errors, report
            check_answers(answers, document, report)
            statuses = collections.Counter(a["status"] for a in answers)
            print(f"\nfuzz: {len(answers)} requests in {elapsed:.0f} s, statuses "
                  f"{dict(sorted(statuses.items()))}")

            # and the server still serves, its models intact
            assert srv.process.poll() is None, drain.tail()
            with httpx.Client(base_url=srv.url, timeout=REQUEST_TIMEOUT_S) as http:
                assert http.get("/").text == "Ollama is running"
                tags = {m["name"] for m in http.get("/api/tags").json()["models"]}
                assert {TEXT_MODEL, f"{EMBED_MODEL}:latest"} <= tags
                r = http.post("/api/generate", json={
                    "model": TEXT_MODEL, "prompt": "The capital of France is", "raw": True,
                    "stream": False, "options": {"temperature": 0, "num_predict": 2}})
            assert r.status_code == 200 and r.json()["done"], r.text
            assert 1 <= r.json()["eval_count"] <= 2
        finally:
            stop(srv, drain)
