"""The scheduler: loads runners on demand, keeps them for their keep_alive, unloads them.

Ollama's rules (../shared/reference/ollama-api.md §6.8, §7.3): a request that sets
keep_alive overwrites the loaded model's; one that omits it leaves it (a fresh load takes
`OLLAMA_KEEP_ALIVE`); the idle timer starts when the last request using the model finishes;
0 unloads then, a negative value never. A changed `num_ctx` (after clamping to the trained
context) or a changed model reloads it. At most `OLLAMA_MAX_LOADED_MODELS` stay loaded: the
least recently used idle one makes room. Only one model loads at a time. Each runner's
engine runs in its own process (`runner_process`) unless OLLAMAPY_ENGINE_PROCESS=0; one whose
process died is loaded afresh by the next request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from ollamapy.contract import ModelSpec
from ollamapy.runner_process import RunnerProcess, start_fork_server
from ollamapy.settings import FOREVER, Settings

if TYPE_CHECKING:
    from ollamapy.runner import Runner

    AnyRunner = Runner | RunnerProcess  # what the scheduler hands the handlers

log = logging.getLogger(__name__)

DEFAULT_NUM_CTX = 4096  # Ollama's default below 24 GiB of VRAM


@dataclass(eq=False)
class Loaded:
    spec: ModelSpec
    runner: AnyRunner
    keep_alive: float  # seconds, FOREVER for never
    refs: int = 0
    last_used: float = 0.0  # monotonic
    expires_at: float = 0.0  # wall clock, for /api/ps
    timer: asyncio.TimerHandle | None = None


class Scheduler:
    def __init__(self, settings: Settings,
                 make_runner: Callable[[ModelSpec, int], AnyRunner] | None = None) -> None:
        self.settings = settings
        runner_args = {"num_parallel": settings.num_parallel, "max_queue": settings.max_queue,
                       "fast": settings.fast, "compile": settings.fast and settings.compile,
                       "kv_cache_type": settings.kv_cache_type,
                       "batch_invariant": settings.batch_invariant,
                       "tensor_parallel": settings.tensor_parallel, "job": settings.job}
        self.make_runner = make_runner or (
            partial(RunnerProcess, load_timeout=settings.load_timeout, **runner_args)
            if settings.engine_process else partial(_runner_class(), **runner_args))
        self._processes = make_runner is None and settings.engine_process
        self.loaded: dict[str, Loaded] = {}  # by model name
        self._exiting: list[RunnerProcess] = []  # unloaded, perhaps not exited yet
        self._load_lock = asyncio.Lock()

    def start(self) -> None:
        """At server start: the fork server that engine processes come from starts in the
        background, so the first load does not wait for its imports."""
        if self._processes:
            threading.Thread(target=start_fork_server, name="fork-server", daemon=True).start()

    def wanted_num_ctx(self, spec: ModelSpec, options: Mapping[str, Any] | None) -> int:
        """request options > Modelfile parameter > OLLAMA_CONTEXT_LENGTH > 4096."""
        for source in ((options or {}).get("num_ctx"), spec.params.get("num_ctx")):
            if isinstance(source, int | float) and not isinstance(source, bool):
                return int(source)
        return self.settings.context_length or DEFAULT_NUM_CTX

    @staticmethod
    def with_num_gpu(spec: ModelSpec, options: Mapping[str, Any] | None) -> ModelSpec:
        """spec with the request's num_gpu (Ollama's layers on the accelerator) in its
        parameters, where the request sets one: the runner loads by it."""
        value = (options or {}).get("num_gpu")
        if not isinstance(value, int | float) or isinstance(value, bool):
            return spec
        return dataclasses.replace(spec, params={**spec.params, "num_gpu": int(value)})

    @asynccontextmanager
    async def use(self, spec: ModelSpec, options: Mapping[str, Any] | None = None,
                  keep_alive: float | None = None) -> AsyncIterator[AnyRunner]:
        """The runner for spec, loaded if needed, held for the duration of the block."""
        spec = self.with_num_gpu(spec, options)
        loaded = await self._acquire(spec, self.wanted_num_ctx(spec, options), keep_alive)
        try:
            yield loaded.runner
        finally:
            self._release(loaded)

    async def _acquire(self, spec: ModelSpec, num_ctx: int, keep_alive: float | None
                       ) -> Loaded:
        async with self._load_lock:
            current = self.loaded.get(spec.name)
            if current is not None and self._needs_reload(current, spec, num_ctx):
                await self._wait_idle(current)
                self._unload(current)
                current = None
            if current is None:
                await self._make_room()
                await asyncio.to_thread(self._wait_exits)
                log.debug("loading %s (num_ctx %d)", spec.name, num_ctx)
                started = time.monotonic()
                runner = await asyncio.to_thread(self.make_runner, spec, num_ctx)
                log.info("loaded %s in %.1f s", spec.name, time.monotonic() - started)
                current = Loaded(spec, runner, self.settings.keep_alive)
                self.loaded[spec.name] = current
            if keep_alive is not None:
                current.keep_alive = keep_alive
            current.refs += 1
            current.last_used = time.monotonic()
            self._cancel_timer(current)
            current.expires_at = _deadline(current.keep_alive)
            return current

    @staticmethod
    def _needs_reload(loaded: Loaded, spec: ModelSpec, num_ctx: int) -> bool:
        """Ollama's needsReload: a dead runner, a changed model, another num_ctx (after
        clamping) or another num_gpu (but -1, "as many as fit")."""
        runner = loaded.runner
        clamped = max(4, min(num_ctx, runner.context_length))
        num_gpu = spec.params.get("num_gpu", -1)
        return not runner.alive or loaded.spec.digest != spec.digest or (
            not runner.is_encoder and clamped != runner.num_ctx) or (
            num_gpu != -1 and num_gpu != loaded.spec.params.get("num_gpu", -1))

    async def _wait_idle(self, loaded: Loaded) -> None:
        while loaded.refs:
            await asyncio.sleep(0.01)

    async def _make_room(self) -> None:
        while len(self.loaded) >= self.settings.max_loaded_models:
            idle = [m for m in self.loaded.values() if not m.refs]
            if idle:
                self._unload(min(idle, key=lambda m: m.last_used))
            else:  # every model is busy: wait for one to finish
                await asyncio.sleep(0.01)

    def _release(self, loaded: Loaded) -> None:
        loaded.refs -= 1
        loaded.last_used = time.monotonic()
        if loaded.refs or self.loaded.get(loaded.spec.name) is not loaded:
            return
        loaded.expires_at = _deadline(loaded.keep_alive)
        if loaded.keep_alive <= 0:
            self._unload(loaded)
        elif loaded.keep_alive != FOREVER:
            loop = asyncio.get_running_loop()
            loaded.timer = loop.call_later(loaded.keep_alive, self._expire, loaded)

    def _expire(self, loaded: Loaded) -> None:
        if not loaded.refs and self.loaded.get(loaded.spec.name) is loaded:
            log.info("keep_alive expired: unloading %s", loaded.spec.name)
            self._unload(loaded)

    @staticmethod
    def _cancel_timer(loaded: Loaded) -> None:
        if loaded.timer is not None:
            loaded.timer.cancel()
            loaded.timer = None

    def _unload(self, loaded: Loaded) -> None:
        self._cancel_timer(loaded)
        if self.loaded.get(loaded.spec.name) is loaded:
            del self.loaded[loaded.spec.name]
        loaded.runner.close()
        if isinstance(loaded.runner, RunnerProcess):
            self._exiting.append(loaded.runner)

    def _wait_exits(self) -> None:
        """Before a load: unloaded engine processes have exited (their memory, a GPU's
        included, is free again), as Ollama waits for a runner's memory to come back."""
        while self._exiting:
            self._exiting.pop().wait_exited()

    def unload(self, name: str) -> bool:
        """Unload as soon as idle (keep_alive 0 with an empty prompt); False if not loaded."""
        loaded = self.loaded.get(name)
        if loaded is None:
            return False
        loaded.keep_alive = 0
        if not loaded.refs:
            self._unload(loaded)
        return True

    def running(self) -> list[Loaded]:
        """Loaded models, the latest to expire first (as /api/ps sorts them); one whose
        engine stopped is not loaded any more (the next request loads it afresh)."""
        return sorted((m for m in self.loaded.values() if m.runner.alive),
                      key=lambda m: m.expires_at, reverse=True)

    def shutdown(self) -> None:
        for loaded in list(self.loaded.values()):
            self._unload(loaded)


def _runner_class() -> type[Runner]:
    """The engine on a thread of this process: only then does the server import torch."""
    from ollamapy.runner import Runner

    return Runner


def _deadline(keep_alive: float) -> float:
    if keep_alive == FOREVER:
        return time.time() + 292 * 365.25 * 86400  # Go's "forever": MaxInt64 nanoseconds
    return time.time() + max(keep_alive, 0.0)
