"""Schemathesis hooks for the fuzz run of tests/e2e/test_openapi.py (loaded in the
`schemathesis run` subprocess through SCHEMATHESIS_HOOKS, never by pytest itself).

Four jobs, none of which changes what the server must do (answer without a 5xx):

* steer: two fuzzed requests in three that name a model get a real one instead (smollm2 or
  all-minilm), so the fuzzed fields reach the runner rather than stopping at a 404; the pick
  is a hash of the body, so a run is reproducible;
* keep it cheap: `num_predict` above 3 (or unlimited) becomes 3 and a valid `num_ctx`
  becomes 256, so no fuzzed request generates for minutes or reloads the model for a new
  window; invalid values are left alone, they must still be refused (a request that names
  neither gets the test's defaults: its copy of smollm2 says `num_predict 3`, its server
  `OLLAMA_CONTEXT_LENGTH=256`);
* protect the real models: a delete, copy or create that would overwrite or remove one is
  pointed at a scratch name instead (the store is a copy, but losing the model would turn the
  rest of the run into 404s);
* give pull and push a registry: when OLLAMAPY_FUZZ_REGISTRY names one (host:port of the
  test's stand-in, plain http on loopback), a pull or push name is moved to that host,
  keeping its namespace, model and tag, and sent with `insecure` on (which plain http needs)
  unless the fuzzed value is not a boolean, which must still be refused, or the name spells
  out `http://`, whose `insecure` rule stays fuzzed; an `https://` prefix is dropped. Without
  it every valid name reaches for registry.ollama.ai, and an unreachable upstream is a 5xx
  that says nothing about the server;

and one record: every answer's operation, status and time, one JSON line each, appended to
the file named by OLLAMAPY_FUZZ_LOG, for the test's own assertions (with the request body and
the answer of any 5xx, to reproduce it).
"""

from __future__ import annotations

import json
import os
import zlib
from typing import Any

import schemathesis

TEXT_MODEL, EMBED_MODEL = "smollm2:135m", "all-minilm"
REAL = {TEXT_MODEL, "smollm2", EMBED_MODEL, "all-minilm:latest"}
EMBED_PATHS = ("/api/embed", "/api/embeddings", "/v1/embeddings")
MAX_PREDICT, NUM_CTX = 3, 256


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _cheap(fields: dict[str, Any], predict_keys: tuple[str, ...]) -> None:
    for key in predict_keys:
        v = fields.get(key)
        if _is_number(v) and (v > MAX_PREDICT or -2 <= v < 0):
            fields[key] = MAX_PREDICT
    v = fields.get("num_ctx")
    if _is_number(v) and 0 <= v < 2**63:
        fields["num_ctx"] = NUM_CTX


def _at_registry(name: str, registry: str) -> str:
    scheme, sep, rest = name.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        scheme, rest = "", name  # no scheme (or one that names nothing: still refused)
    parts = rest.split("/")
    if len(parts) >= 3:  # host/namespace/model[:tag]: another host
        parts[0] = registry
    else:  # [namespace/]model[:tag] on the default host
        parts = [registry, *(["library"] if len(parts) == 1 else []), *parts]
    prefix = "http://" if scheme.lower() == "http" else ""
    return prefix + "/".join(parts)


def _scratch(name: Any) -> Any:
    if isinstance(name, str) and name.lower().removeprefix("library/") in REAL:
        return "fuzz-scratch-" + name.replace(":", "-").replace("/", "-")
    return name


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    body, path = case.body, case.operation.path
    if not isinstance(body, dict):
        return
    pick = zlib.crc32(json.dumps(body, sort_keys=True, default=str).encode()) % 3
    if path in ("/api/delete", "/api/copy", "/api/create"):
        for key in ("model", "name", "destination"):
            if key in body:
                body[key] = _scratch(body[key])
        if path == "/api/copy" and pick and "source" in body:
            body["source"] = TEXT_MODEL
    elif pick and isinstance(body.get("model"), str) and path not in ("/api/pull",
                                                                      "/api/push"):
        body["model"] = EMBED_MODEL if path in EMBED_PATHS else TEXT_MODEL
    registry = os.environ.get("OLLAMAPY_FUZZ_REGISTRY")
    if registry and path in ("/api/pull", "/api/push"):
        names = [key for key in ("model", "name") if isinstance(body.get(key), str)
                 and body[key]]  # an empty name stays empty: "model is required"
        spelled_http = any(body[key].lower().startswith("http://") for key in names)
        for key in names:
            body[key] = _at_registry(body[key], registry)
        if not spelled_http and isinstance(body.get("insecure", False), bool):
            body["insecure"] = True
    if isinstance(body.get("options"), dict):
        _cheap(body["options"], ("num_predict",))
    if path.startswith("/v1/"):
        _cheap(body, ("max_tokens", "max_completion_tokens", "max_output_tokens", "num_predict"))


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    log = os.environ.get("OLLAMAPY_FUZZ_LOG")
    if not log:
        return
    body = case.body if isinstance(case.body, dict) else {}
    failed = response.status_code >= 500
    record = {"method": case.method, "path": case.operation.path,
              "status": response.status_code, "model": body.get("model"),
              "elapsed": round(response.elapsed, 3),
              "error": response.text[:300] if failed else None,
              "body": json.dumps(case.body, default=str)[:1000] if failed else None}
    with open(log, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
