"""The scheduler's keep_alive, reload and eviction rules, with stand-in runners."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from ollamapy.contract import ModelSpec
from ollamapy.scheduler import Scheduler
from ollamapy.settings import FOREVER, Settings


class StandIn:
    def __init__(self, spec: ModelSpec, num_ctx: int) -> None:
        self.spec, self.is_encoder, self.context_length = spec, False, 8192
        self.num_ctx = max(4, min(num_ctx, 8192))
        self.closed = False
        self.alive = True  # a real runner's turns False when its engine process dies

    def close(self) -> None:
        self.closed = True


def spec(name: str, digest: str = "d1", **params) -> ModelSpec:
    return ModelSpec(name=name, path=Path("/nonexistent"), params=params, digest=digest)


def scheduler(**env: str) -> Scheduler:
    return Scheduler(Settings.from_env(env), make_runner=StandIn)


def run(coro):
    return asyncio.run(coro)


def test_loads_once_and_keeps_the_default_keep_alive() -> None:
    async def go():
        s = scheduler(OLLAMA_KEEP_ALIVE="5m")
        before = time.time()  # the keep_alive runs from the last release, after this
        async with s.use(spec("a")) as r1:
            pass
        async with s.use(spec("a")) as r2:
            pass
        assert r1 is r2 and not r1.closed
        (loaded,) = s.running()
        assert loaded.keep_alive == 300
        assert before + 300 <= loaded.expires_at <= time.time() + 300
    run(go())


def test_keep_alive_zero_unloads_when_idle_and_expiry_unloads_later() -> None:
    async def go():
        s = scheduler()
        async with s.use(spec("a"), keep_alive=0) as r:
            assert s.running()  # still loaded while in use
        assert r.closed and not s.running()
        async with s.use(spec("b"), keep_alive=0.05) as r:
            pass
        assert s.running()
        await asyncio.sleep(0.2)
        assert r.closed and not s.running()
    run(go())


def test_omitted_keep_alive_leaves_the_current_one() -> None:
    async def go():
        s = scheduler()
        async with s.use(spec("a"), keep_alive=FOREVER):  # a negative keep_alive, parsed
            pass
        async with s.use(spec("a")):  # omitted: still forever
            pass
        assert s.running()[0].keep_alive == FOREVER
    run(go())


def test_num_ctx_or_model_change_reloads() -> None:
    async def go():
        s = scheduler()
        async with s.use(spec("a")) as r1:
            assert r1.num_ctx == 4096  # Ollama's default here
        async with s.use(spec("a"), {"num_ctx": 512}) as r2:
            assert r2.num_ctx == 512
        async with s.use(spec("a", num_ctx=512)) as r3:  # same window from the Modelfile
            pass
        async with s.use(spec("a", digest="d2", num_ctx=512)) as r4:
            pass
        assert r1.closed and r2 is r3 and r3.closed and not r4.closed
    run(go())


def test_a_changed_num_gpu_reloads_but_minus_one_keeps_the_runner() -> None:
    """Ollama's needsReload: num_gpu (layers on the accelerator) from the request or the
    Modelfile is the runner's; -1, "as many as fit", takes whatever is loaded."""
    async def go():
        s = scheduler()
        async with s.use(spec("a")) as r1:
            assert "num_gpu" not in r1.spec.params
        async with s.use(spec("a"), {"num_gpu": -1}) as r2:
            pass
        async with s.use(spec("a"), {"num_gpu": 12}) as r3:
            assert r3.spec.params["num_gpu"] == 12  # the runner loads by it
        async with s.use(spec("a", num_gpu=12)) as r4:  # the same count, from the Modelfile
            pass
        async with s.use(spec("a"), {"num_gpu": -1}) as r5:
            pass
        async with s.use(spec("a"), {"num_gpu": 0.0}) as r6:  # a JSON number: a count
            assert r6.spec.params["num_gpu"] == 0
        assert r1 is r2 and r1.closed and r3 is r4 is r5 and r5.closed and not r6.closed
    run(go())


def test_a_runner_whose_engine_died_is_loaded_afresh() -> None:
    async def go():
        s = scheduler()
        async with s.use(spec("a")) as r1:
            pass
        r1.alive = False  # its engine process died
        async with s.use(spec("a")) as r2:
            pass
        assert r2 is not r1 and r1.closed and not r2.closed
        assert [m.runner for m in s.running()] == [r2]
    run(go())


def test_least_recently_used_idle_model_is_evicted() -> None:
    async def go():
        s = scheduler(OLLAMA_MAX_LOADED_MODELS="2")
        async with s.use(spec("a")) as a:
            pass
        async with s.use(spec("b")) as b:
            pass
        async with s.use(spec("a")):
            pass
        async with s.use(spec("c")):
            pass
        assert b.closed and not a.closed
        assert sorted(m.spec.name for m in s.running()) == ["a", "c"]
    run(go())


def test_unload_of_a_busy_model_waits_for_its_request() -> None:
    async def go():
        s = scheduler()
        async with s.use(spec("a")) as r:
            assert s.unload("a")
            assert not r.closed
        assert r.closed and not s.unload("a")
    run(go())
