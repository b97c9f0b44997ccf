"""The `ollamapy` command, Ollama's CLI: serve, run, create, pull, push, show, list, ps, cp, rm,
stop; and, beyond Ollama, verify.

Every command but `serve` and `verify` is a client of a running server at `OLLAMA_HOST`
(default 127.0.0.1:11434), as Ollama's CLI is. `verify` reads the store at `OLLAMA_MODELS`
directly: it re-hashes every blob and checks every manifest (exit status 1 on any problem).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

from ollamapy import __version__
from ollamapy.client import Client, ClientError


# -- formatting (Ollama's format.HumanBytes and HumanTime) -----------------------------------
def human_bytes(n: int) -> str:
    for scale, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if n >= scale:
            value = n / scale
            return f"{int(value)} {unit}" if value >= 10 or value == int(value) else \
                f"{value:.1f} {unit}"
    return f"{n} B"


def human_time(seconds: float, *, future: bool = False) -> str:
    """"3 minutes ago", "4 minutes from now", "Forever" (a keep_alive that never ends)."""
    if future and seconds > 100 * 365 * 86400:
        return "Forever"
    span = abs(seconds)
    for size, unit in ((86400 * 365, "year"), (86400 * 30, "month"), (86400 * 7, "week"),
                       (86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if span >= size:
            n = int(span // size)
            text = f"{n} {unit}{'s' if n > 1 else ''}"
            return f"{text} from now" if future else f"{text} ago"
    return "Less than a second" + (" from now" if future else " ago")


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("    ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def _timestamp(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


class Progress:
    """A one-line progress display on stderr for uploads and server statuses."""

    def __init__(self) -> None:
        self.line = ""

    def show(self, text: str) -> None:
        if not sys.stderr.isatty():  # a log: one line per status, no carriage returns
            if not text.endswith("%") or text.endswith(" 100%"):
                print(text, file=sys.stderr)
            self.line = text
            return
        pad = " " * max(0, len(self.line) - len(text))
        sys.stderr.write(f"\r{text}{pad}")
        sys.stderr.flush()
        self.line = text

    def done(self) -> None:
        if self.line and sys.stderr.isatty():
            sys.stderr.write("\n")
            self.line = ""


def bar(completed: int, total: int, width: int = 25) -> str:
    """` 45% ▕███████████              ▏  44 MB/98 MB`"""
    fraction = min(1.0, completed / total) if total else 1.0
    filled = int(fraction * width)
    return (f"{int(fraction * 100):3d}% ▕{'█' * filled}{' ' * (width - filled)}▏ "
            f"{human_bytes(completed)}/{human_bytes(total)}")


class TransferProgress:
    """Pull and push progress. On a terminal each layer gets its own bar, redrawn in place
    and kept when the next layer starts (as Ollama draws them); in a log, one line per status,
    a layer's line saying its size."""

    def __init__(self) -> None:
        self.line = Progress()
        self.status = ""

    def show(self, update: dict[str, Any]) -> None:
        status = update.get("status", "")
        new, self.status = status != self.status, status
        total = update.get("total")
        if not sys.stderr.isatty():
            if new:
                self.line.show(f"{status} {human_bytes(total)}" if total else status)
            return
        if new:
            self.line.done()  # keep the finished layer's bar on its own line
        if total and update.get("digest"):
            self.line.show(f"{status}: {bar(update.get('completed', 0), total)}")
        else:
            self.line.show(status)

    def done(self) -> None:
        self.line.done()


# -- commands -------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ollamapy.cluster import SHUTDOWN, Cluster, stand_by
    from ollamapy.server.app import create_app
    from ollamapy.settings import Settings, log_level

    settings = Settings.from_env()
    level = log_level()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    job, store = Cluster.from_env(), None
    if job is not None and job.world > 1:  # started by torchrun: one rank of a split server
        if job.rank > 0:
            return stand_by(job)
        if settings.tensor_parallel not in (1, job.world):
            print(f"Error: OLLAMAPY_TENSOR_PARALLEL={settings.tensor_parallel} but torchrun "
                  f"started {job.world} ranks", file=sys.stderr)
            return 1
        store = job.join()  # held while serving: it counts this rank in
        job.wait_for_standbys(store)
        settings = replace(settings, tensor_parallel=job.world, job=job.address)
    if not settings.engine_process:  # engines on threads of this process (else: theirs)
        from ollamapy.engine.device import tune_heap_for_serving

        tune_heap_for_serving()  # before any model is loaded
    host = settings.host.host or "0.0.0.0"
    # uvicorn handles SIGTERM/SIGINT (stop accepting, let streams in flight finish for up to
    # OLLAMAPY_SHUTDOWN_TIMEOUT, unload), then re-raises the signal to the handler it found:
    # make that a no-op so a graceful stop exits 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    # asyncio's loop and h11 whatever else is installed (uvicorn's "auto" would take uvloop
    # and httptools where a package such as Ray Serve brought them): one server, tested as is
    try:
        uvicorn.run(create_app(settings), host=host, port=settings.host.port, loop="asyncio",
                    http="h11", log_level=logging.getLevelName(level).lower(),
                    timeout_graceful_shutdown=settings.shutdown_timeout)
    finally:
        if store is not None:  # the other ranks' standbys stop
            with suppress(RuntimeError):
                store.set(SHUTDOWN, "1")
    return 0


def go_duration(ns: int) -> str:
    """A duration in nanoseconds as Go's time.Duration prints it: 0s, 512ns, 12.5ms, 1m2.5s."""
    def fixed(value: int, unit: int) -> str:
        whole, frac = divmod(value, unit)
        digits = str(frac).zfill(len(str(unit)) - 1).rstrip("0")
        return f"{whole}.{digits}" if digits else str(whole)

    sign, ns = ("-" if ns < 0 else ""), abs(ns)
    if ns < 1_000:
        return f"{sign}{ns}ns" if ns else "0s"
    if ns < 1_000_000:
        return f"{sign}{fixed(ns, 1_000)}µs"
    if ns < 1_000_000_000:
        return f"{sign}{fixed(ns, 1_000_000)}ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    return (sign + (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "")
            + f"{fixed(rest, 1_000_000_000)}s")


def metrics_summary(final: Mapping[str, Any]) -> str:
    """`run --verbose`: the final chunk's timings, laid out as Ollama's CLI prints them."""
    lines = []
    if final.get("total_duration"):
        lines.append(f"total duration:       {go_duration(final['total_duration'])}")
    if final.get("load_duration"):
        lines.append(f"load duration:        {go_duration(final['load_duration'])}")
    for label, count, duration in (("prompt eval", "prompt_eval_count", "prompt_eval_duration"),
                                   ("eval", "eval_count", "eval_duration")):
        n, ns = final.get(count, 0), final.get(duration, 0)
        if n:
            lines.append(f"{label + ' count:':<22}{n} token(s)")
        if ns:
            lines.append(f"{label + ' duration:':<22}{go_duration(ns)}")
            lines.append(f"{label + ' rate:':<22}{n / (ns / 1e9):.2f} tokens/s")
    return "\n".join(lines)


class WordWrap:
    """Streamed text wrapped between words a little short of the terminal's width, as
    Ollama's `run` prints on a terminal (a word is held until it ends, to know if it fits)."""

    def __init__(self, width: int) -> None:
        self.width, self.column, self.word = width, 0, ""

    def write(self, text: str) -> str:
        """→ what to print now."""
        out = []
        for ch in text:
            if ch in " \n":
                out.append(self._word())
                if ch == "\n" or self.column + 1 > self.width:
                    out.append("\n")
                    self.column = 0
                else:
                    out.append(" ")
                    self.column += 1
            else:
                self.word += ch
        return "".join(out)

    def end(self) -> str:
        return self._word()

    def _word(self) -> str:
        word, self.word = self.word, ""
        if not word:
            return ""
        wrap = self.column > 0 and self.column + len(word) > self.width
        self.column = len(word) if wrap else self.column + len(word)
        return ("\n" if wrap else "") + word


def wrap_width(nowordwrap: bool) -> int | None:
    """The width answers wrap at: on a terminal of 10 columns or more, 5 short of it."""
    if nowordwrap or not sys.stdout.isatty():
        return None
    columns = shutil.get_terminal_size().columns
    return columns - 5 if columns >= 10 else None


REPL_HELP = """Available commands:
  /set parameter NAME VALUE   set a sampling parameter (temperature, num_ctx, stop, ...)
  /set system MESSAGE         set the system message
  /set format json            answer in JSON (/set noformat: free text)
  /set think [LEVEL]          think before answering (/set nothink: don't)
  /set verbose                print timings after each answer (/set quiet: don't)
  /set wordwrap               wrap answers at the terminal's width (/set nowordwrap: don't)
  /show info|modelfile|parameters|system|template|license
  /load MODEL                 switch to another model (the conversation starts over)
  /save MODEL                 save this session (model, system, parameters, messages) as MODEL
  /clear                      forget the conversation
  /bye                        exit"""


THINKING_OPENS, THINKING_CLOSES = "Thinking...\n", "...done thinking.\n\n"
THINK_VALUES = {"true": True, "false": False, "high": "high", "medium": "medium", "low": "low",
                "max": "max"}


def think_value(flag: str | None) -> bool | str | None:
    """`--think[=VALUE]` → the request's think (None: the flag was not given)."""
    if flag is None:
        return None
    if flag not in THINK_VALUES:
        raise SystemExit(f'Error: invalid value for --think: "{flag}" (must be true, false, '
                         "high, medium, low, or max)")
    return THINK_VALUES[flag]


def parameter_value(name: str, words: list[str]) -> Any:
    """`/set parameter` words → the option's JSON value: stop keeps every word as a list,
    the rest are an integer, a number, a boolean or the text, whichever reads first."""
    if name == "stop":
        return words
    text = " ".join(words)
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


class ChatSession:
    """`ollamapy run`'s state: the model, the conversation and what /set changed."""

    def __init__(self, client: Client, args: argparse.Namespace) -> None:
        self.client, self.model = client, args.model
        self.format, self.keepalive, self.verbose = args.format, args.keepalive, args.verbose
        self.wordwrap = not args.nowordwrap
        self.think: bool | str | None = think_value(args.think)
        self.hide_thinking = args.hidethinking
        self.messages: list[dict[str, Any]] = []
        self.options: dict[str, Any] = {}
        self.system: str | None = None

    def _request(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        body: dict[str, Any] = {"model": self.model, "messages": [*system, *messages]}
        if self.format:
            body["format"] = self.format
        if self.think is not None:
            body["think"] = self.think
        if self.keepalive is not None:
            body["keep_alive"] = self.keepalive
        if self.options:
            body["options"] = self.options
        return body

    def load(self) -> None:
        self.client.request("POST", "/api/chat", {**self._request([]), "stream": False})

    def turn(self, prompt: str) -> str:
        """Send prompt after the conversation so far, print the answer as it streams, and
        keep both (nothing is kept if the turn is interrupted)."""
        reply, final = [], {}
        thought, opened, closed = "", False, False
        width = wrap_width(not self.wordwrap)
        wrap = WordWrap(width) if width else None
        for chunk in self.client.stream("/api/chat", self._request(
                [*self.messages, {"role": "user", "content": prompt}])):
            message = chunk.get("message", {})
            thinking, text = message.get("thinking", ""), message.get("content", "")
            if thinking and not self.hide_thinking:
                if not opened:  # as Ollama's run: the reasoning set off before the answer
                    print(THINKING_OPENS, end="")
                    opened = True
                thought += thinking
                print(wrap.write(thinking) if wrap else thinking, end="", flush=True)
            if opened and not closed and (text or message.get("tool_calls")):
                end = (wrap.end() if wrap else "") + ("" if thought.endswith("\n") else "\n")
                print(end + THINKING_CLOSES, end="")
                closed = True
                wrap = WordWrap(width) if width else None
            print(wrap.write(text) if wrap else text, end="", flush=True)
            reply.append(text)
            final = chunk
        print(wrap.end() if wrap else "")
        if self.verbose:
            print(metrics_summary(final), file=sys.stderr)
        answer = {"role": "assistant", "content": "".join(reply)}
        self.messages += [{"role": "user", "content": prompt},
                          answer | ({"thinking": thought} if thought else {})]
        return "".join(reply)

    def command(self, line: str) -> bool:
        """Run a /command; False once the session should end."""
        words = line.split()
        match words:
            case ["/bye"]:
                return False
            case ["/clear"]:
                self.messages.clear()
                print("Cleared session context")
            case ["/set", "parameter", name, *value] if value:
                self.options[name] = parameter_value(name, value)
                print(f"Set parameter '{name}' to '{' '.join(value)}'")
            case ["/set", "system", *_]:
                self.system = line.split(None, 2)[2].strip().strip('"') if len(words) > 2 \
                    else None
                print("Set system message.")
            case ["/set", "think", *level] if len(level) <= 1:
                self.think = think_value(level[0] if level else "true")
                print(f"Set 'think' mode to '{level[0]}'." if level else "Set 'think' mode.")
            case ["/set", "nothink"]:
                self.think = False
                print("Set 'nothink' mode.")
            case ["/set", "format", "json"]:
                self.format = "json"
                print("Set format to 'json' mode.")
            case ["/set", "noformat"]:
                self.format = None
                print("Disabled format.")
            case ["/set", "wordwrap" | "nowordwrap" as mode]:
                self.wordwrap = mode == "wordwrap"
                print("Set 'wordwrap' mode." if self.wordwrap else "Set 'nowordwrap' mode.")
            case ["/set", "verbose" | "quiet" as mode]:
                self.verbose = mode == "verbose"
                print("Set 'verbose' mode." if self.verbose else "Set 'quiet' mode.")
            case ["/show", part] if part in SHOW_PARTS:
                info = self.client.request("POST", "/api/show", {"model": self.model})
                print_show(info, None if part == "info" else part)
            case ["/load", model]:
                self.client.request("POST", "/api/show", {"model": model})  # 404 if absent
                self.model, self.messages = model, []
                print(f"Loading model '{model}'")
                self.load()
            case ["/save", model]:
                body: dict[str, Any] = {"model": model, "from": self.model,
                                        "messages": self.messages}
                if self.system:
                    body["system"] = self.system
                if self.options:
                    body["parameters"] = self.options
                self.client.request("POST", "/api/create", {**body, "stream": False})
                print(f"Created new model '{model}'")
            case ["/?" | "/help", *_]:
                print(REPL_HELP)
            case _:
                print(f"Unknown command '{words[0]}'. Type /? for help")
        return True

    def repl(self) -> None:
        print(">>> Send a message (/? for help, /bye to quit)", file=sys.stderr)
        while True:
            try:
                line = input(">>> ")
            except EOFError:
                print()
                return
            if not line.strip():
                continue
            if line.startswith("/"):
                try:
                    if not self.command(line.strip()):
                        return
                except ClientError as e:
                    print(f"Error: {e}")
                continue
            try:
                self.turn(line)
            except KeyboardInterrupt:
                print()


def _transfer(client: Client, path: str, model: str, insecure: bool) -> None:
    """/api/pull or /api/push, its progress drawn on stderr."""
    progress = TransferProgress()
    try:
        for update in client.stream(path, {"model": model, "insecure": insecure}):
            progress.show(update)
    finally:
        progress.done()


def cmd_run(args: argparse.Namespace) -> int:
    with Client() as client:
        try:
            client.request("POST", "/api/show", {"model": args.model})
        except ClientError as e:
            if e.status != 404:
                raise
            # as Ollama's run: pulled, then run
            _transfer(client, "/api/pull", args.model, args.insecure)
        session = ChatSession(client, args)
        prompt = " ".join(args.prompt) if args.prompt else None
        if prompt is None and not sys.stdin.isatty():
            prompt = sys.stdin.read().strip()
        if prompt is not None:
            session.turn(prompt)
            return 0
        session.load()
        session.repl()
        return 0


def _weights_files(source: Path) -> dict[str, Path]:
    """A FROM path → {name on the server: local file}: one GGUF, or a folder's files."""
    if source.is_file():
        return {source.name: source}
    return {f.relative_to(source).as_posix(): f for f in sorted(source.rglob("*"))
            if f.is_file() and not any(p.startswith(".") for p in f.relative_to(source).parts)}


def cmd_create(args: argparse.Namespace) -> int:
    from ollamapy.store import parse_modelfile

    modelfile_path = Path(args.file)
    modelfile = parse_modelfile(modelfile_path.read_text(encoding="utf-8"))
    for warning in modelfile.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    body: dict[str, Any] = {"model": args.model, **{
        k: v for k, v in modelfile.create_kwargs().items() if v is not None}}
    source = Path(modelfile.from_).expanduser()
    if not source.is_absolute():
        source = modelfile_path.parent / source
    progress = Progress()
    with Client() as client:
        if modelfile.from_.startswith((".", "/", "~")) or source.exists():
            if not source.exists():
                raise ClientError(f"no such file or directory: {modelfile.from_}")
            progress.show("gathering model components")
            files = {}
            for name, path in _weights_files(source).items():
                total, sent = path.stat().st_size, 0

                def tick(n: int, name: str = name, total: int = total) -> None:
                    nonlocal sent
                    sent += n
                    progress.show(f"copying file {name} {100 * sent // max(total, 1)}%")

                files[name] = client.upload_blob(path, tick)
            body["files"] = files
        else:
            body["from"] = modelfile.from_  # pulled first by the server when it is not there
        progress.done()
        statuses = TransferProgress()  # a pull's layers get bars
        try:
            for status in client.stream("/api/create", body):
                statuses.show(status)
        finally:
            statuses.done()
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    with Client() as client:
        _transfer(client, "/api/pull", args.model, args.insecure)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    with Client() as client:
        _transfer(client, "/api/push", args.model, args.insecure)
    return 0


SHOW_PARTS = ("info", "modelfile", "parameters", "system", "template", "license")


def print_show(info: Mapping[str, Any], part: str | None = None) -> None:
    """/api/show's answer as Ollama's `show` prints it: one part as is, or the summary."""
    if part is not None:
        print(info.get(part, ""))
        return
    model_info, details = info.get("model_info") or {}, info.get("details") or {}
    arch = model_info.get("general.architecture", details.get("family", ""))
    rows = [["architecture", arch], ["parameters", details.get("parameter_size", "")]]
    for label, key in (("context length", "context_length"),
                       ("embedding length", "embedding_length")):
        if f"{arch}.{key}" in model_info:
            rows.append([label, str(model_info[f"{arch}.{key}"])])
    rows.append(["quantization", details.get("quantization_level", "")])
    print("  Model")
    print("\n".join("    " + line for line in table(rows).splitlines()))
    print("\n  Capabilities")
    print("\n".join(f"    {c}" for c in info.get("capabilities", [])))
    if info.get("parameters"):
        print("\n  Parameters")
        print("\n".join("    " + line for line in info["parameters"].splitlines()))
    if info.get("system"):
        print("\n  System\n    " + info["system"].strip().replace("\n", "\n    "))


def cmd_show(args: argparse.Namespace) -> int:
    with Client() as client:
        info = client.request("POST", "/api/show", {"model": args.model})
    print_show(info, next((part for part in SHOW_PARTS[1:] if getattr(args, part)), None))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with Client() as client:
        models = client.request("GET", "/api/tags")["models"]
    rows = [["NAME", "ID", "SIZE", "MODIFIED"]]
    now = time.time()
    for m in models:
        rows.append([m["name"], m["digest"][:12], human_bytes(m["size"]),
                     human_time(now - _timestamp(m["modified_at"]))])
    print(table(rows))
    return 0


def cmd_ps(args: argparse.Namespace) -> int:
    with Client() as client:
        models = client.request("GET", "/api/ps")["models"]
    rows = [["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]]
    now = time.time()
    for m in models:
        processor = "100% GPU" if m.get("size_vram") == m["size"] and m["size"] else "100% CPU"
        rows.append([m["name"], m["digest"][:12], human_bytes(m["size"]), processor,
                     str(m.get("context_length", "")),
                     human_time(_timestamp(m["expires_at"]) - now, future=True)])
    print(table(rows))
    return 0


def cmd_cp(args: argparse.Namespace) -> int:
    with Client() as client:
        client.request("POST", "/api/copy", {"source": args.source,
                                             "destination": args.destination})
    print(f"copied '{args.source}' to '{args.destination}'")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    with Client() as client:
        for name in args.models:
            client.request("DELETE", "/api/delete", {"model": name})
            print(f"deleted '{name}'")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ollamapy.settings import Settings
    from ollamapy.store import Store

    problems = Store(Settings.from_env().models).verify()
    for problem in problems:
        print(problem)
    print("store verified: no problems" if not problems else f"{len(problems)} problem(s)",
          file=sys.stderr)
    return 1 if problems else 0


def cmd_stop(args: argparse.Namespace) -> int:
    with Client() as client:
        client.request("POST", "/api/generate", {"model": args.model, "keep_alive": 0,
                                                 "stream": False})
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ollamapy", description=__doc__)
    p.add_argument("--version", action="version", version=f"ollamapy {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str
            ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help)
        sp.set_defaults(fn=fn)
        return sp

    add("serve", cmd_serve, "start the server on OLLAMA_HOST")
    run = add("run", cmd_run, "chat with a model (one prompt, or interactively)")
    run.add_argument("model")
    run.add_argument("prompt", nargs="*")
    run.add_argument("--verbose", action="store_true",
                     help="print the timings and rates of each answer")
    run.add_argument("--format", help='the answer\'s format: "json"')
    run.add_argument("--keepalive", help="how long the model stays loaded (e.g. 5m)")
    run.add_argument("--insecure", action="store_true",
                     help="use plain http for the registry a missing model is pulled from")
    run.add_argument("--think", metavar="=VALUE",
                     help="think before answering: --think, --think=false, --think=high ...")
    run.add_argument("--hidethinking", action="store_true",
                     help="don't print the reasoning of a thinking model")
    run.add_argument("--nowordwrap", action="store_true",
                     help="don't wrap answers at the terminal's width")
    create = add("create", cmd_create, "create a model from a Modelfile")
    create.add_argument("model")
    create.add_argument("-f", "--file", default="Modelfile")
    for name, fn, help in (("pull", cmd_pull, "pull a model from a registry"),
                           ("push", cmd_push, "push a model to a registry")):
        transfer = add(name, fn, help)
        transfer.add_argument("model")
        transfer.add_argument("--insecure", action="store_true",
                              help="use plain http for the registry")
    show = add("show", cmd_show, "show a model's information")
    show.add_argument("model")
    for part in SHOW_PARTS[1:]:
        show.add_argument(f"--{part}", action="store_true")
    add("list", cmd_list, "list models")
    sub._name_parser_map["ls"] = sub._name_parser_map["list"]
    add("ps", cmd_ps, "list running models")
    cp = add("cp", cmd_cp, "copy a model")
    cp.add_argument("source")
    cp.add_argument("destination")
    rm = add("rm", cmd_rm, "remove models")
    rm.add_argument("models", nargs="+")
    stop = add("stop", cmd_stop, "unload a running model")
    stop.add_argument("model")
    add("verify", cmd_verify, "re-hash every blob of the local store and check its manifests")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    # `run MODEL --verbose Why is the sky blue?`: flags may sit anywhere among the prompt's
    # words, as Ollama's CLI takes them; argparse leaves the words after a flag unparsed
    # `--think` alone is true and the next word is the prompt's (a level needs `--think=high`),
    # as pflag's optional values go
    argv = ["--think=true" if a == "--think" else a for a in (sys.argv[1:] if argv is None
                                                                 else argv)]
    args, rest = p.parse_known_args(argv)
    if rest and (args.command != "run" or any(word.startswith("-") for word in rest)):
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    if rest:
        args.prompt = [*args.prompt, *rest]
    try:
        return args.fn(args)
    except ClientError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        from ollamapy.store import StoreError

        if isinstance(e, StoreError | ValueError | OSError):
            print(f"Error: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())
