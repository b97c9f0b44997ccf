"""A runner in its own process, so the engine never shares an interpreter with HTTP.

The server holds a `RunnerProcess`: the part of `Runner`'s interface the handlers and the
scheduler use (chat, generate, embed, tokenize, detokenize, options, the facts /api/ps
shows). The `Runner` itself, with the weights, the engine thread and the prompt side, lives
in a child process forked from a fork server that has already imported torch and ollamapy,
so a load pays for the weights, not for the imports. One duplex pipe carries everything:

    server → engine   ("call", rid, method, args, kwargs)   a request
                      ("cancel", rid)                        its client went away
                      ("stats", rid)                         the engine's counters
                      ("close",)                             unload
    engine → server   ("loading", cpu_seconds)               while the load uses the CPU
                      ("ready", Facts) or ("failed", error)  once, when the load ends
                      ("item", rid, event)                   Text, Finished, Embeddings, ids…
                      ("end", rid, error or None)            the request is over

One reader thread in the server hands each item to its request's `Job` queue on the
caller's event loop: per token, the server's loop does only that hop and the HTTP work. If
the engine process dies, its open requests end with Ollama's "model runner has unexpectedly
stopped" error, `alive` turns False, and the scheduler loads the model afresh for the next
request (as Ollama restarts a runner).
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import pickle
import signal
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing, suppress
from dataclasses import dataclass
from multiprocessing import forkserver
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ollamapy.contract import Job, ModelSpec, ShuttingDown, request_options
from ollamapy.engine.options import Options
from ollamapy.settings import log_level

if TYPE_CHECKING:
    from ollamapy.runner import Runner

log = logging.getLogger(__name__)

# Ollama's text when its runner process dies under a request (a 500)
STOPPED = ("model runner has unexpectedly stopped, this may be due to resource limitations or "
           "an internal error, check ollama server logs for details")
COMM_PREFIX = "engine "  # an engine process's name, before its model's
CLOSE_GRACE_S = 30.0  # an unloaded engine that has not exited by then is killed
STATS_TIMEOUT_S = 60.0  # hang guard for a counters request
# the Runner methods a request may call: async iterators (chat, generate, embed) and
# coroutines (tokenize, detokenize)
CALLS = frozenset({"chat", "generate", "embed", "tokenize", "detokenize"})
# what an engine process imports, once in the fork server: the runner (torch, the engine,
# the loader) and the compiler parts that loading a saved decode step needs (engine/compiled.py)
PRELOAD = ["ollamapy.runner", "torch._dynamo.aot_compile", "torch._inductor.compile_fx",
           "torch._inductor.codecache", "torch._functorch.aot_autograd", __name__]


class RunnerStopped(Exception):
    """The engine process is gone (a crash, a kill, the OOM killer)."""


@dataclass(frozen=True, slots=True)
class Facts:
    """What the server needs to know of a loaded runner without asking it."""

    is_encoder: bool
    context_length: int
    num_ctx: int
    base_options: Options
    size: int
    on_gpu: bool


def start_fork_server() -> None:
    """Start the fork server now (it imports torch and the engine once), so the first load
    does not wait for it."""
    _context()
    forkserver.ensure_running()


def _context() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


# -- the server's side ------------------------------------------------------------------------


class _Reply:
    """A request answered off the event loop (the counters): one item, or an error."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.item: Any = None
        self.error: BaseException | None = None

    def put(self, item: Any) -> None:
        self.item = item

    def end(self, error: BaseException | None = None) -> None:
        self.error = error
        self.done.set()


class RunnerProcess:
    def __init__(self, spec: ModelSpec, num_ctx: int, *, load_timeout: float = math.inf,
                 **runner_args: Any) -> None:
        """Start the engine process and wait until its model is loaded (and compiled): the
        scheduler calls this on a pool thread. load_timeout: seconds the load may go without
        using the CPU (OLLAMA_LOAD_TIMEOUT; <= 0 or inf: no limit) before the process is
        killed. runner_args: `Runner`'s keywords."""
        self.spec = spec
        ctx = _context()
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_engine_main, args=(child, spec, num_ctx, runner_args),
                                   name=f"engine:{spec.name}", daemon=True)
        self.process.start()
        child.close()
        wait = load_timeout if 0 < load_timeout < math.inf else None
        try:
            while True:  # ("loading", cpu seconds) while the load uses the CPU, then its end
                if not self.conn.poll(wait):
                    self.process.kill()
                    self.process.join()
                    raise RunnerStopped(f"timed out waiting for llama runner to start: no "
                                        f"progress loading {spec.name} for {load_timeout:g} s")
                kind, payload = self.conn.recv()
                if kind != "loading":
                    break
        except (EOFError, OSError):
            self.process.join()
            raise RunnerStopped("llama runner process has terminated: exit status "
                                f"{self.process.exitcode}") from None
        if kind == "failed":
            self.process.join()
            raise payload
        facts: Facts = payload
        self.is_encoder, self.context_length = facts.is_encoder, facts.context_length
        self.num_ctx, self.base_options = facts.num_ctx, facts.base_options
        self.size, self.on_gpu = facts.size, facts.on_gpu
        self.pid = self.process.pid
        self._pending: dict[int, Job | _Reply] = {}
        self._next_rid = 0
        self._lock = threading.Lock()  # _pending, _next_rid, the pipe's sending end
        self._alive, self._closing = True, False
        self._exited = threading.Event()  # set by the reaper once the process is gone
        self._reader = threading.Thread(target=self._read, name=f"engine-reader:{spec.name}",
                                        daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        return self._alive

    def options(self, request: Mapping[str, Any] | None) -> Options:
        return request_options(self.base_options, request, self.num_ctx)

    # -- requests ---------------------------------------------------------------------------
    def chat(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """`Runner.chat`'s arguments and events."""
        return self._stream("chat", args, kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        return self._stream("generate", args, kwargs)

    def embed(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        return self._stream("embed", args, kwargs)

    async def tokenize(self, *args: Any, **kwargs: Any) -> list[int]:
        return await self._result("tokenize", args, kwargs)

    async def detokenize(self, *args: Any, **kwargs: Any) -> str:
        return await self._result("detokenize", args, kwargs)

    def stats(self) -> dict[str, Any]:
        """The engine's counters (`Worker.stats`), from any thread but the event loop's."""
        reply = _Reply()
        self._send(("stats", self._register(reply)))
        if not reply.done.wait(STATS_TIMEOUT_S):
            raise TimeoutError("the engine did not answer a counters request")
        if reply.error is not None:
            raise reply.error
        return reply.item

    async def _stream(self, method: str, args: tuple, kwargs: dict[str, Any]
                      ) -> AsyncIterator[Any]:
        job = Job(asyncio.get_running_loop())
        rid = self._register(job)
        self._send(("call", rid, method, args, kwargs))
        try:
            async for item in job.items():
                yield item
        finally:
            if not job.finished:  # the caller left early: the engine frees its slot
                with self._lock:
                    self._pending.pop(rid, None)
                with suppress(RunnerStopped):
                    self._send(("cancel", rid))

    async def _result(self, method: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        async with aclosing(self._stream(method, args, kwargs)) as items:
            async for item in items:
                return item
        raise RunnerStopped(STOPPED)  # an answer with no item: cannot happen but for a bug

    def _register(self, sink: Job | _Reply) -> int:
        with self._lock:
            if not self._alive:
                raise ShuttingDown("the server is shutting down") if self._closing \
                    else RunnerStopped(STOPPED)
            rid = self._next_rid = self._next_rid + 1
            self._pending[rid] = sink
            return rid

    def _send(self, message: tuple) -> None:
        try:
            with self._lock:
                self.conn.send(message)
        except (OSError, ValueError):  # the pipe is broken or closed: the engine is gone
            raise RunnerStopped(STOPPED) from None

    def _read(self) -> None:
        """The reader thread: each item to its request, until the engine's end of the pipe
        closes; then every open request fails."""
        while True:
            try:
                kind, rid, payload = self.conn.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                sink = self._pending.get(rid) if kind == "item" else self._pending.pop(rid, None)
            if sink is None:  # its caller left
                continue
            if kind == "item":
                sink.put(payload)
            else:
                sink.end(payload)
        with self._lock:
            self._alive = False
            orphans, self._pending = list(self._pending.values()), {}
        if not self._closing:
            log.error("the engine process of %s (pid %d) stopped", self.spec.name, self.pid)
        error = ShuttingDown("the server is shutting down") if self._closing \
            else RunnerStopped(STOPPED)
        for sink in orphans:
            sink.end(error)

    def close(self) -> None:
        """Ask the engine to exit, without waiting: a thread reaps it (and kills it if it
        has not exited within CLOSE_GRACE_S)."""
        self._closing = True
        with suppress(RunnerStopped):
            self._send(("close",))
        threading.Thread(target=self._reap, name=f"engine-reaper:{self.spec.name}",
                         daemon=True).start()

    def wait_exited(self) -> None:
        """Block until close()'s reaper has seen the process exit (CLOSE_GRACE_S at most,
        then it is killed)."""
        self._exited.wait()

    def _reap(self) -> None:
        self.process.join(CLOSE_GRACE_S)
        if self.process.is_alive():
            log.warning("the engine process of %s did not exit: killing it", self.spec.name)
            self.process.kill()
            self.process.join()
        log.info("the engine process of %s exited (status %s)", self.spec.name,
                 self.process.exitcode)
        self._exited.set()
        self._reader.join()
        self.conn.close()


# -- the engine's side ------------------------------------------------------------------------


HEARTBEAT_S = 1.0  # how often a loading engine says it is still working
WATCH_S = 0.5  # how often a serving engine checks that its runner still runs


def _beat_while_loading(conn: Connection, loaded: threading.Event) -> None:
    """("loading", CPU seconds) each HEARTBEAT_S in which the process used the CPU (reading
    weights, compiling): a load that stalls (stopped, blocked) says nothing, and the server's
    OLLAMA_LOAD_TIMEOUT runs out."""
    last = time.process_time()
    while not loaded.wait(HEARTBEAT_S):
        now = time.process_time()
        if now - last >= 0.05:  # not this thread's own wake-ups: a load at work uses ~1 s/s
            conn.send(("loading", now))
            last = now


def _engine_main(conn: Connection, spec: ModelSpec, num_ctx: int,
                 runner_args: dict[str, Any]) -> None:
    """The engine process: load, say so, then serve requests until told to close or until
    the server's end of the pipe closes (the server exited)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    with suppress(OSError):  # Linux: `ps` and `top` show whose engine this is (15 bytes)
        Path("/proc/self/comm").write_text(f"{COMM_PREFIX}{spec.name}"[:15])
    # warnings and errors only, but everything under OLLAMA_DEBUG
    debug = log_level() == logging.DEBUG
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format=f"%(levelname)s engine:{spec.name} %(name)s: %(message)s")
    from ollamapy.engine.device import tune_heap_for_serving
    from ollamapy.runner import Runner  # the engine: torch and all (already in the preload)

    tune_heap_for_serving()
    loaded = threading.Event()
    beats = threading.Thread(target=_beat_while_loading, args=(conn, loaded),
                             name="load-heartbeat", daemon=True)
    beats.start()
    try:
        runner = Runner(spec, num_ctx, **runner_args)
    except Exception as e:
        loaded.set()
        beats.join()
        conn.send(("failed", _portable(e)))
        return
    loaded.set()
    beats.join()  # its last message is out before the load's end goes
    conn.send(("ready", Facts(runner.is_encoder, runner.context_length, runner.num_ctx,
                              runner.base_options, runner.size, runner.on_gpu)))
    try:
        asyncio.run(_Engine(conn, runner).serve())
    finally:
        runner.close()


class _Engine:
    """Requests from the pipe as tasks on this process's event loop; their events back."""

    def __init__(self, conn: Connection, runner: Runner) -> None:
        self.conn, self.runner = conn, runner
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.closed: asyncio.Event | None = None

    async def serve(self) -> None:
        self.closed = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_reader(self.conn.fileno(), self._receive)
        watch = asyncio.create_task(self._watch())
        await self.closed.wait()
        watch.cancel()
        loop.remove_reader(self.conn.fileno())
        for task in self.tasks.values():
            task.cancel()

    async def _watch(self) -> None:
        """A runner whose engine stopped for good (a tensor-parallel rank lost) ends this
        process, once what it failed has gone out: the server sees the engine gone and
        unloads the model."""
        assert self.closed is not None
        while self.runner.alive:
            await asyncio.sleep(WATCH_S)
        await asyncio.sleep(WATCH_S)
        self.closed.set()

    def _receive(self) -> None:
        assert self.closed is not None
        try:
            message = self.conn.recv()
        except (EOFError, OSError):  # the server is gone
            self.closed.set()
            return
        kind, rid = message[0], message[1] if len(message) > 1 else 0
        if kind == "call" and message[2] in CALLS:
            self.tasks[rid] = asyncio.create_task(self._run(rid, message[2], *message[3:]))
        elif kind == "cancel" and rid in self.tasks:
            self.tasks[rid].cancel()
        elif kind == "stats":
            self._send(("item", rid, self.runner.stats()))
            self._send(("end", rid, None))
        elif kind == "close":
            self.closed.set()
        else:
            self._send(("end", rid, RuntimeError(f"unknown engine request {kind!r}")))

    async def _run(self, rid: int, method: str, args: tuple, kwargs: dict[str, Any]) -> None:
        error: BaseException | None = None
        try:
            result = getattr(self.runner, method)(*args, **kwargs)
            if hasattr(result, "__aiter__"):
                async with aclosing(result) as events:
                    async for event in events:
                        self._send(("item", rid, event))
            else:
                self._send(("item", rid, await result))
        except asyncio.CancelledError:
            return  # the caller left; it expects nothing more
        except Exception as e:
            error = e
        finally:
            self.tasks.pop(rid, None)
        self._send(("end", rid, _portable(error)))

    def _send(self, message: tuple) -> None:
        try:
            self.conn.send(message)
        except (OSError, ValueError):  # the server is gone
            assert self.closed is not None
            self.closed.set()


def _portable(error: BaseException | None) -> BaseException | None:
    """The error itself if it survives pickling (its type decides the status the server
    answers), else a RuntimeError with its message."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(str(error) or type(error).__name__)
