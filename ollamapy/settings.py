"""Server settings from the environment, read the way Ollama reads them.

Ollama's variables (../shared/reference/ollama-api.md §7.1): `OLLAMA_HOST`, `OLLAMA_MODELS`,
`OLLAMA_KEEP_ALIVE`, `OLLAMA_NUM_PARALLEL`, `OLLAMA_MAX_LOADED_MODELS`, `OLLAMA_MAX_QUEUE`,
`OLLAMA_CONTEXT_LENGTH`, `OLLAMA_ORIGINS`, `OLLAMA_NOPRUNE`, `OLLAMA_DEBUG` (log level),
`OLLAMA_LOAD_TIMEOUT`, `OLLAMA_KV_CACHE_TYPE` (the fast path's cache: f16 by default, or f32;
q8_0 and q4_0 fall back to f16, engine/kv_cache.py).
Values are trimmed of spaces and quotes, as envconfig.Var does. Also Go's duration syntax
(`"5m"`, `"1h30m"`, `"-1s"`), which `keep_alive` uses both here and in requests.

ollamapy's own, for the HTTP guards (`ollamapy/server/security.py`, `limits.py`):
`OLLAMAPY_API_KEY` (unset: no authentication, as Ollama), `OLLAMAPY_MAX_BODY_BYTES` (JSON
request bodies, default 32 MiB; 0 = no cap), `OLLAMAPY_MAX_BLOB_BYTES` (`/api/blobs` uploads,
default 0 = no cap: they stream to disk), `OLLAMAPY_BODY_TIMEOUT` (seconds a JSON body may take
to arrive, and the longest pause inside an upload; default 60).

And for the engine: `OLLAMAPY_FAST`, `OLLAMAPY_COMPILE`, `OLLAMAPY_BATCH_INVARIANT` (each on
unless 0; README, "Speed" and "Batch invariance"), `OLLAMAPY_ENGINE_PROCESS` and
`OLLAMAPY_TENSOR_PARALLEL` (ranks a model is split over, default 1; ollamapy/tensor_group.py).
And `OLLAMAPY_SHUTDOWN_TIMEOUT`: seconds the streams in flight at SIGTERM/SIGINT may take to
finish (default 10).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 11434
FOREVER = math.inf  # a negative keep_alive: never unload
# Go's longest time.Duration (MaxInt64 ns, ~292 years): a longer keep_alive is "forever" too,
# and no wall-clock deadline derived from it overflows a datetime (/api/ps's expires_at)
MAX_DURATION_S = (2**63 - 1) / 1e9
# JSON request bodies: far above any real request (our models take no images), far below
# what would hurt the server's memory; /api/blobs uploads are not JSON and are not capped
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
DEFAULT_BODY_TIMEOUT_S = 60.0
DEFAULT_SHUTDOWN_TIMEOUT_S = 10.0

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
          "h": 3600.0}
_TERM = re.compile(r"(\d*\.?\d*)([^\d.]+)")


def env(name: str, environ: Mapping[str, str] | None = None) -> str:
    value = (os.environ if environ is None else environ).get(name, "")
    return value.strip().strip("\"'").strip()


def parse_go_duration(text: str) -> float:
    """Go's time.ParseDuration → seconds; raises ValueError with Go's message."""
    original, s = text, text
    sign = -1.0 if s.startswith("-") else 1.0
    s = s[1:] if s[:1] in "+-" else s
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f'time: invalid duration "{original}"')
    total, pos = 0.0, 0
    while pos < len(s):
        m = _TERM.match(s, pos)
        if not m or m[1] in ("", "."):
            if re.fullmatch(r"\d*\.?\d*", s[pos:]) and re.search(r"\d", s[pos:]):
                raise ValueError(f'time: missing unit in duration "{original}"')
            raise ValueError(f'time: invalid duration "{original}"')
        if m[2] not in _UNITS:
            raise ValueError(f'time: unknown unit "{m[2]}" in duration "{original}"')
        total += float(m[1]) * _UNITS[m[2]]
        pos = m.end()
    return sign * total


def parse_keep_alive(value: object) -> float:
    """A request's keep_alive → seconds (FOREVER when negative), as api.Duration decodes it:
    a JSON number is seconds, a string is a Go duration. Raises ValueError with Go's text."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        kind = {bool: "bool", list: "[]interface {}", dict: "map[string]interface {}"}.get(
            type(value), type(value).__name__)
        raise ValueError(f"Unsupported type: '{kind}'")
    seconds = float(value) if not isinstance(value, str) else parse_go_duration(value)
    return FOREVER if seconds < 0 or seconds >= MAX_DURATION_S else seconds


def parse_env_duration(text: str, default: float = 300.0) -> float:
    """OLLAMA_KEEP_ALIVE, OLLAMA_LOAD_TIMEOUT: a Go duration, or else integer seconds;
    negative = forever."""
    if not text:
        return default
    try:
        seconds = parse_go_duration(text)
    except ValueError:
        try:
            seconds = float(int(text))
        except ValueError:
            return default
    return FOREVER if seconds < 0 else seconds


@dataclass(frozen=True, slots=True)
class HostPort:
    scheme: str
    host: str  # "" listens on every interface, as Go's ":port" does
    port: int

    @property
    def url(self) -> str:
        host = self.host or "127.0.0.1"
        if ":" in host:  # IPv6
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}"


def parse_host(text: str) -> HostPort:
    """OLLAMA_HOST → where to listen / connect (envconfig.Host): `[scheme://]host[:port]`;
    no scheme means http on 11434; http:// without a port means 80, https:// 443."""
    scheme, sep, hostport = text.strip().partition("://")
    default_port = DEFAULT_PORT
    if not sep:
        scheme, hostport = "http", text.strip()
    elif scheme == "http":
        default_port = 80
    elif scheme == "https":
        default_port = 443
    hostport = hostport.split("/", 1)[0]
    host, port_text = _split_host_port(hostport)
    if host is None:
        bare = hostport.strip("[]")
        host, port_text = (bare or "127.0.0.1"), ""
    try:
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        port = default_port
    return HostPort(scheme, host, port)


def _split_host_port(hostport: str) -> tuple[str | None, str]:
    """Go's net.SplitHostPort: (None, "") when there is no port."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or not hostport[end + 1:].startswith(":"):
            return None, ""
        return hostport[1:end], hostport[end + 2:]
    if hostport.count(":") != 1:
        return None, ""
    host, port = hostport.split(":")
    return host, port


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _int(name: str, default: int, environ: Mapping[str, str] | None) -> int:
    try:
        return int(env(name, environ) or default)
    except ValueError:
        return default


def _float(name: str, default: float, environ: Mapping[str, str] | None) -> float:
    try:
        value = float(env(name, environ) or default)
    except ValueError:
        return default
    return value if math.isfinite(value) and value > 0 else default


def log_level(environ: Mapping[str, str] | None = None) -> int:
    """OLLAMA_DEBUG: unset or 0, INFO (Ollama's default); 1 or true, DEBUG; 2, the most there
    is (Ollama's TRACE: DEBUG here)."""
    value = env("OLLAMA_DEBUG", environ).lower()
    return logging.INFO if value in ("", "0", "false", "no", "off") else logging.DEBUG


def _flag(name: str, default: bool, environ: Mapping[str, str] | None) -> bool:
    value = env(name, environ).lower()
    if not value:
        return default
    return value not in ("0", "false", "no", "off")


@dataclass(frozen=True, slots=True)
class Settings:
    host: HostPort
    models: Path
    keep_alive: float  # seconds; FOREVER for never
    num_parallel: int
    max_loaded_models: int
    max_queue: int
    context_length: int  # 0: Ollama's default for this machine (4096 below 24 GiB VRAM)
    origins: tuple[str, ...]
    noprune: bool
    fast: bool = True  # OLLAMAPY_FAST: GGUF weights stay quantized (int4/int8 kernels)
    compile: bool = True  # OLLAMAPY_COMPILE: the batched decode step is torch.compile'd
    kv_cache_type: str = "f16"  # OLLAMA_KV_CACHE_TYPE: the fast path's KV cache
    # OLLAMAPY_BATCH_INVARIANT: a request's tokens and logprobs do not depend on what else
    # the server runs (engine/model.py `batch_invariant`); 0 trades that for prompt speed
    batch_invariant: bool = True
    # OLLAMAPY_ENGINE_PROCESS: each loaded model's engine runs in its own process (0: on a
    # thread of the server's, for debugging and for tests that reach into the engine)
    engine_process: bool = True
    # OLLAMAPY_TENSOR_PARALLEL: each model split over this many processes (tensor_group.py)
    tensor_parallel: int = 1
    # where torchrun's store listens ("host:port") when this server is rank 0 of a torchrun
    # job (cluster.py: the other ranks run the followers); "" when it starts its own
    job: str = ""
    # the HTTP guards (server/security.py, server/limits.py); the key stays out of repr()
    api_key: str = field(default="", repr=False)  # OLLAMAPY_API_KEY; "" = no authentication
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # OLLAMAPY_MAX_BODY_BYTES; 0 = no cap
    max_blob_bytes: int = 0  # OLLAMAPY_MAX_BLOB_BYTES; 0 = no cap
    body_timeout: float = DEFAULT_BODY_TIMEOUT_S  # OLLAMAPY_BODY_TIMEOUT, seconds
    # OLLAMAPY_SHUTDOWN_TIMEOUT: seconds the streams in flight at SIGTERM/SIGINT may take to
    # finish before they are cut (uvicorn's timeout_graceful_shutdown)
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT_S
    # OLLAMA_LOAD_TIMEOUT: how long an engine process may load without using the CPU before
    # it is given up (Ollama: "stall"); 5m, a Go duration or seconds; <= 0: never
    load_timeout: float = 300.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        models = env("OLLAMA_MODELS", environ)
        return cls(
            host=parse_host(env("OLLAMA_HOST", environ)),
            models=Path(models).expanduser() if models else Path.home() / ".ollama" / "models",
            keep_alive=parse_env_duration(env("OLLAMA_KEEP_ALIVE", environ)),
            num_parallel=max(1, _int("OLLAMA_NUM_PARALLEL", 4, environ)),
            max_loaded_models=_int("OLLAMA_MAX_LOADED_MODELS", 0, environ) or 3,
            max_queue=max(1, _int("OLLAMA_MAX_QUEUE", 512, environ)),
            context_length=max(0, _int("OLLAMA_CONTEXT_LENGTH", 0, environ)),
            origins=tuple(o.strip() for o in env("OLLAMA_ORIGINS", environ).split(",")
                          if o.strip()),
            noprune=env("OLLAMA_NOPRUNE", environ).lower() in ("1", "true", "yes"),
            fast=_flag("OLLAMAPY_FAST", True, environ),
            compile=_flag("OLLAMAPY_COMPILE", True, environ),
            kv_cache_type=env("OLLAMA_KV_CACHE_TYPE", environ).lower() or "f16",
            batch_invariant=_flag("OLLAMAPY_BATCH_INVARIANT", True, environ),
            engine_process=_flag("OLLAMAPY_ENGINE_PROCESS", True, environ),
            tensor_parallel=max(1, _int("OLLAMAPY_TENSOR_PARALLEL", 1, environ)),
            api_key=env("OLLAMAPY_API_KEY", environ),
            max_body_bytes=max(0, _int("OLLAMAPY_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES,
                                       environ)),
            max_blob_bytes=max(0, _int("OLLAMAPY_MAX_BLOB_BYTES", 0, environ)),
            body_timeout=_float("OLLAMAPY_BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT_S, environ),
            shutdown_timeout=_float("OLLAMAPY_SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN_TIMEOUT_S,
                                    environ),
            load_timeout=parse_env_duration(env("OLLAMA_LOAD_TIMEOUT", environ)),
        )
