"""The `ollamapy` command line against the live server (OLLAMA_HOST honoured)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator

import httpx
import pytest


@pytest.fixture(scope="module")
def greedy(server, tmp_path_factory) -> str:
    """smollm2 with temperature 0 as a Modelfile parameter: `run` has no sampling flags."""
    modelfile = tmp_path_factory.mktemp("greedy") / "Modelfile"
    modelfile.write_text("FROM smollm2:135m\nPARAMETER temperature 0\n")
    server.cli("create", "smol-greedy", "-f", str(modelfile))
    return "smol-greedy"


def test_list_show_run_ps_stop(server, greedy) -> None:
    listing = server.cli("list").stdout
    assert listing.splitlines()[0].split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert "smollm2:135m" in listing and "all-minilm:latest" in listing
    show = server.cli("show", "smollm2:135m").stdout
    assert "architecture" in show and "llama" in show and "8192" in show
    assert server.cli("show", "smollm2:135m", "--modelfile").stdout.startswith("# Modelfile")
    assert "<|im_start|>" in server.cli("show", "smollm2:135m", "--template").stdout
    answer = server.cli("run", greedy, "What is the capital of France?").stdout
    assert "Paris" in answer
    ps = server.cli("ps").stdout
    assert greedy in ps and "100% CPU" in ps
    server.cli("stop", greedy)
    assert greedy not in server.cli("ps").stdout


GO_DURATION = r"(\d+h)?(\d+m)?\d+(\.\d+)?(ns|µs|ms|s)"


def test_run_flags_format_keepalive_verbose(server, tmp_path) -> None:
    """--format json constrains the answer to JSON; --keepalive 0 unloads after it; --verbose
    prints Ollama's timing summary on stderr, every line in its layout."""
    modelfile = tmp_path / "Modelfile"  # greedy, and a budget: an unbounded JSON may not end
    modelfile.write_text("FROM smollm2:135m\nPARAMETER temperature 0\nPARAMETER num_predict 24\n")
    server.cli("create", "smol-short", "-f", str(modelfile))
    try:
        question = "What is the capital of France?"
        plain = server.cli("run", "smol-short", question).stdout
        assert "Paris" in plain and not plain.lstrip().startswith("{")
        r = server.cli("run", "smol-short", "--format", "json", "--keepalive", "0",
                       "--verbose", "--nowordwrap", question)
        assert r.stdout.lstrip().startswith("{")  # JSON mode: an object
        assert "smol-short" not in server.cli("ps").stdout
    finally:
        server.cli("rm", "smol-short")
    summary = r.stderr.strip().splitlines()
    labels = [line.split(":")[0] for line in summary]
    assert labels == ["total duration", "load duration", "prompt eval count",
                      "prompt eval duration", "prompt eval rate", "eval count",
                      "eval duration", "eval rate"]
    for line in summary:
        label, value = line.split(":", 1)
        assert len(line) - len(value.lstrip()) == 22  # values in one column
        value = value.strip()
        if label.endswith("count"):
            assert re.fullmatch(r"[1-9]\d* token\(s\)", value)
        elif label.endswith("rate"):
            assert re.fullmatch(r"\d+\.\d\d tokens/s", value) and float(value.split()[0]) > 0
        else:
            assert re.fullmatch(GO_DURATION, value), line


def test_piped_prompt(server, greedy) -> None:
    out = server.cli("run", greedy, input="What is the capital of France?\n")
    assert "Paris" in out.stdout


def _read_until(fd: int, marker: bytes, timeout: float = 600.0) -> bytes:
    """Read until marker shows; the timeout is a hang guard (a turn takes seconds)."""
    out, deadline = b"", time.monotonic() + timeout
    while marker not in out:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise TimeoutError(f"hang guard: no {marker!r} after {timeout:g} s in {out!r}")
        out += os.read(fd, 4096)
    return out


GREETING = b"quit)\r\n>>> "  # `run`'s greeting on stderr (it starts with ">>> " too), the prompt


def repl_send(master: int, line: str) -> str:
    """Type line into a `run` chat on a pseudo-terminal → what it printed for it: after the
    terminal's echo of the line, up to the next prompt (one read may bring both)."""
    echo = line.encode() + b"\r\n"
    os.write(master, line.encode() + b"\n")
    out = _read_until(master, echo)
    if b">>> " not in out.split(echo, 1)[1]:
        out += _read_until(master, b">>> ")
    reply = out.split(echo, 1)[1].rsplit(b">>> ", 1)[0]
    return reply.decode(errors="replace").replace("\r\n", "\n")


@contextlib.contextmanager
def chat_on_terminal(server, model: str, columns: int | None = None
                     ) -> Iterator[Callable[[str], str]]:
    """`ollamapy run model` on a pseudo-terminal (of `columns` if given) → send(line), which
    types a line and returns the reply; leaving the block types /bye and checks it exits 0."""
    master, slave = pty.openpty()
    env = server.env()
    if columns is not None:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([sys.executable, "-m", "ollamapy.cli", "run", model],
                            stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    try:
        _read_until(master, GREETING)
        yield lambda line: repl_send(master, line)
        os.write(master, b"/bye\n")
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_interactive_run_keeps_the_conversation(server, greedy) -> None:
    """On a terminal, `run` is a chat: each turn is sent with the ones before it."""
    with chat_on_terminal(server, greedy) as send:
        send("The secret word is pineapple.")
        answer = send("What is the secret word?")
    assert "pineapple" in answer.lower()


def test_interactive_commands_set_show_save_load(server, greedy) -> None:
    """The REPL's /commands, as Ollama's: /set parameter reaches the server (num_predict 3:
    three tokens, --verbose-style summary via /set verbose), /set system, /show, /save makes
    a model of the session, /load switches model, unknown commands are named."""
    with chat_on_terminal(server, greedy) as send:
        assert "Set parameter 'num_predict' to '3'" in send("/set parameter num_predict 3")
        assert "Set system message." in send("/set system You are a pirate.")
        assert "Set 'verbose' mode." in send("/set verbose")
        assert "temperature" in send("/show parameters")
        answer = send("Tell me a long story about the sea.")
        assert re.search(r"eval count:\s+3 token\(s\)", answer), answer
        assert "Created new model 'smol-saved'" in send("/save smol-saved")
        assert "Unknown command '/bogus'" in send("/bogus")
        assert "not found" in send("/load no-such-model")
        assert "Loading model 'smollm2:135m'" in send("/load smollm2:135m")
    saved = httpx.post(f"{server.url}/api/show", json={"model": "smol-saved"}).json()
    server.cli("rm", "smol-saved")
    assert saved["system"] == "You are a pirate."
    assert "num_predict" in saved["parameters"] and "temperature" in saved["parameters"]
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant"]


def test_answers_wrap_at_the_terminals_width_unless_nowordwrap(server, greedy) -> None:
    """On a 40-column terminal an answer's lines stop 5 short of it, broken between words;
    /set nowordwrap prints the same answer (greedy) as it comes."""
    with chat_on_terminal(server, greedy, columns=40) as send:
        assert "Set parameter" in send("/set parameter num_predict 60")
        wrapped = send("Tell me about the sea.")
        assert "Set 'nowordwrap' mode." in send("/set nowordwrap")
        assert "Cleared session context" in send("/clear")  # the same question, afresh
        plain = send("Tell me about the sea.")
    assert wrapped.split() == plain.split()  # the same words; only the line breaks differ
    assert max(len(line) for line in wrapped.splitlines()) <= 35
    assert max(len(line) for line in plain.splitlines()) > 35


def test_create_cp_rm(server, tmp_path) -> None:
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text('FROM smollm2:135m\nSYSTEM """You are terse."""\n'
                         "PARAMETER temperature 0\nPARAMETER stop <|im_end|>\n")
    server.cli("create", "terse", "-f", str(modelfile))
    show = server.cli("show", "terse", "--parameters").stdout
    assert "temperature" in show and "stop" in show
    assert server.cli("show", "terse", "--system").stdout.strip() == "You are terse."
    assert "copied 'terse' to 'terse2'" in server.cli("cp", "terse", "terse2").stdout
    assert "deleted 'terse'" in server.cli("rm", "terse", "terse2").stdout
    assert "terse" not in server.cli("list").stdout


def test_cli_errors_are_clear(server, tmp_path) -> None:
    r = server.cli("show", "missing-model", check=False)
    assert r.returncode == 1 and "model 'missing-model' not found" in r.stderr
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text("ADAPTER ./lora.gguf\nFROM smollm2:135m\n")
    r = server.cli("create", "x", "-f", str(modelfile), check=False)
    assert r.returncode == 1 and "ADAPTER is not supported" in r.stderr
