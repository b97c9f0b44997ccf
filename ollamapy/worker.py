"""The engine thread of a loaded model: a step loop that serves every request at once.

Requests arrive as jobs in a bounded queue. A decoder's loop admits waiting jobs into free
batch slots (prefilling each), then runs one batched decode step for all running ones, and
hands each job its text through an asyncio queue on the caller's event loop. Embedding jobs
on a decoder need no slot: each step embeds one input of one of them (a forward like a
prefill) before the decode step, so generation waits at most one input per token. An
encoder's loop takes every waiting embedding job and embeds all their inputs in one padded
forward.
A job whose client went away is cancelled: its slot is freed before the next step, so
nothing computes for nobody. torch releases the GIL in its kernels, so the event loop keeps
serving HTTP while a step runs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from ollamapy.contract import (
    Embeddings,
    Finished,
    Job,
    RankLost,
    ServerBusy,
    ShuttingDown,
    Text,
    TokenLogprob,
)
from ollamapy.engine.batch import Batch
from ollamapy.engine.seq import Delta, Done, Seq, TokenLogprobs

log = logging.getLogger(__name__)

class DecodeJob(Job):
    def __init__(self, loop: asyncio.AbstractEventLoop, make_seq: Callable[[], Seq], *,
                 raw: bool = False, messages_dropped: int = 0,
                 describe: Callable[[TokenLogprobs], TokenLogprob] | None = None) -> None:
        super().__init__(loop)
        self.make_seq, self.raw, self.messages_dropped = make_seq, raw, messages_dropped
        self.describe = describe  # token ids → bytes, for the caller's logprobs
        self.seq: Seq | None = None  # made when admitted (its timings start then)
        self.generated: list[int] = []


EmbedFn = Callable[[Sequence[Sequence[int]], int, bool], list[list[float]]]


class EmbedJob(Job):
    def __init__(self, loop: asyncio.AbstractEventLoop, batch: list[list[int]], limit: int,
                 normalize: bool) -> None:
        super().__init__(loop)
        self.batch, self.limit, self.normalize = batch, limit, normalize
        self.vectors: list[list[float]] = []  # a decoder's worker embeds one input a step

    def finish(self, vectors: list[list[float]]) -> None:
        """Hand the caller its vectors (or the error Ollama gives for NaN or Inf) and end."""
        if any(not math.isfinite(x) for v in vectors for x in v):
            self.end(ValueError("embedding contains NaN or Inf values"))
        else:
            self.put(Embeddings(vectors, sum(min(len(ids), self.limit) for ids in self.batch)))
            self.end()


class Worker:
    """The thread, the bounded queue and cancellation; subclasses own the step."""

    def __init__(self, name: str, max_queue: int) -> None:
        self.max_queue = max_queue
        self.waiting: deque[Job] = deque()
        self.cond = threading.Condition()
        self.stopping = False
        self.steps = 0
        # (step at which the client left, step at which its slot was free): for tests
        self.cancellations: list[tuple[int, int]] = []
        self.thread = threading.Thread(target=self._run, name=f"worker:{name}", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        with self.cond:
            if self.stopping:
                raise ShuttingDown("the server is shutting down")
            if len(self.waiting) >= self.max_queue:
                raise ServerBusy()
            self.waiting.append(job)
            self.cond.notify()

    def cancel(self, job: Job) -> None:
        with self.cond:
            if not job.finished and not job.cancelled:
                job.cancelled, job.cancel_step = True, self.steps
                self.cond.notify()

    async def results(self, job: Job) -> AsyncIterator[Any]:
        """The job's items on the caller's loop; leaving early cancels the job."""
        try:
            async for item in job.items():
                yield item
        finally:
            self.cancel(job)

    def stats(self) -> dict[str, Any]:
        """Counters for tests: steps run, jobs waiting and running, slots in use, and
        (step at which a client left, step at which its slot was free) per cancellation."""
        with self.cond:
            return {"steps": self.steps, "waiting": len(self.waiting), "running": 0,
                    "active": 0, "cancellations": list(self.cancellations)}

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join(timeout=30)

    def _busy(self) -> bool:
        raise NotImplementedError

    def _step(self, admitted: list[Job]) -> None:
        raise NotImplementedError

    def _admit(self) -> list[Job]:
        raise NotImplementedError

    def _run(self) -> None:
        ending: BaseException = ShuttingDown("the server is shutting down")
        while True:
            with self.cond:
                while not self.stopping and not self.waiting and not self._busy():
                    self.cond.wait()
                if self.stopping:
                    break
                admitted = self._admit()
            try:
                self._step(admitted)
            except RankLost as e:  # the model cannot run any more: end everything with why
                log.error("%s", e)
                ending = e
                break
            except Exception as e:  # a broken step fails the requests in it, not the server
                log.exception("worker step failed")
                self._fail_running(e)
        self._fail_running(ending)
        with self.cond:
            while self.waiting:
                self.waiting.popleft().end(ending)

    def _fail_running(self, error: BaseException) -> None:
        raise NotImplementedError


class DecodeWorker(Worker):
    """Continuous batching over a `Batch` of `slots` sequences; embedding jobs in between,
    one input a step (embed: the model's, as `LoadedModel.embed_ids`)."""

    def __init__(self, name: str, batch: Batch, max_queue: int,
                 embed: EmbedFn | None = None) -> None:
        self.batch, self.embed = batch, embed
        self.running: dict[int, DecodeJob] = {}  # id(seq) → job
        self.embedding: deque[EmbedJob] = deque()  # admitted, first one being embedded
        super().__init__(name, max_queue)

    def _busy(self) -> bool:
        return bool(self.batch.active or self.batch.queued or self.embedding)

    def stats(self) -> dict[str, Any]:
        with self.cond:
            return super().stats() | {"running": len(self.running),
                                      "active": len(self.batch.active)}

    def _admit(self) -> list[Job]:
        """Decode jobs in order while slots are free; embedding jobs need none, so they are
        taken wherever they wait."""
        admitted: list[Job] = []
        held: list[Job] = []
        free = self.batch.free
        while self.waiting:
            job = self.waiting.popleft()
            if job.cancelled:
                job.end()
            elif isinstance(job, EmbedJob) or free:
                free -= isinstance(job, DecodeJob)
                admitted.append(job)
            else:
                held.append(job)
        self.waiting.extend(held)
        return admitted

    def _step(self, admitted: list[Job]) -> None:
        self._retire_cancelled()
        for job in admitted:
            if isinstance(job, EmbedJob):
                self.embedding.append(job)
                continue
            assert isinstance(job, DecodeJob)
            try:
                job.seq = job.make_seq()
                self.running[id(job.seq)] = job
                self._deliver(job, self.batch.add(job.seq))
            except RankLost:
                raise  # not this request's fault: the model cannot run (`_run`)
            except Exception as e:
                self.running.pop(id(job.seq), None)
                job.end(e)
        self._embed_one()
        if self.batch.active:
            events = self.batch.step()
            self.steps = self.batch.steps
            for seq, deltas in events:
                job = self.running.get(id(seq))
                if job is not None:
                    self._deliver(job, deltas)

    def _embed_one(self) -> None:
        """The next input of the first embedding job; the job ends with its last one."""
        if not self.embedding:
            return
        job = self.embedding[0]
        try:
            if self.embed is None:
                raise ValueError("this model does not support embeddings")
            ids = job.batch[len(job.vectors)]
            job.vectors += self.embed([ids], job.limit, job.normalize)
        except RankLost:
            raise
        except Exception as e:
            self.embedding.popleft()
            job.end(e)
            return
        if len(job.vectors) == len(job.batch):
            self.embedding.popleft()
            job.finish(job.vectors)

    def _retire_cancelled(self) -> None:
        with self.cond:
            gone_embedding = [j for j in self.embedding if j.cancelled]
            gone = [j for j in self.running.values() if j.cancelled]
        for job in gone_embedding:
            self.embedding.remove(job)
            job.end()
        for job in gone:
            assert job.seq is not None
            if self.batch.holds(job.seq):
                self.batch.remove(job.seq)
            del self.running[id(job.seq)]
            self.cancellations.append((job.cancel_step, self.steps))
            job.end()

    def _deliver(self, job: DecodeJob, deltas: list[Delta]) -> None:
        seq = job.seq
        assert seq is not None
        for d in deltas:
            if d.token >= 0:
                job.generated.append(d.token)
            logprobs = (job.describe(d.logprobs),) if d.logprobs and job.describe else ()
            if d.text or logprobs:
                job.put(Text(d.text, logprobs))
        if seq.done:
            del self.running[id(seq)]
            done: Done = seq.result()
            context = [] if job.raw else list(seq.prompt) + job.generated
            job.put(Finished(done.done_reason, done.prompt_eval_count,
                             done.prompt_eval_duration, done.eval_count, done.eval_duration,
                             context, done.prompt_tokens_dropped, job.messages_dropped,
                             done.prompt_tokens_cached))
            job.end()

    def _fail_running(self, error: BaseException) -> None:
        for job in list(self.running.values()):
            if job.seq is not None and self.batch.holds(job.seq):
                self.batch.remove(job.seq)
            job.end(error)
        self.running.clear()
        while self.embedding:
            self.embedding.popleft().end(error)


class EmbedWorker(Worker):
    """Every waiting embedding request in one padded forward."""

    def __init__(self, name: str, embed: EmbedFn, max_queue: int, max_inputs: int = 256
                 ) -> None:
        self.embed, self.max_inputs = embed, max_inputs
        super().__init__(name, max_queue)

    def _busy(self) -> bool:
        return False

    def _admit(self) -> list[Job]:
        admitted: list[Job] = []
        inputs = 0
        while self.waiting and (not admitted or inputs < self.max_inputs):
            job = self.waiting.popleft()
            assert isinstance(job, EmbedJob)
            if job.cancelled:
                job.end()
                continue
            admitted.append(job)
            inputs += len(job.batch)
        return admitted

    def _step(self, admitted: list[Job]) -> None:
        # jobs with the same limit and normalisation share one forward
        groups: dict[tuple[int, bool], list[EmbedJob]] = {}
        for job in admitted:
            assert isinstance(job, EmbedJob)
            groups.setdefault((job.limit, job.normalize), []).append(job)
        for (limit, normalize), jobs in groups.items():
            try:
                vectors = self.embed([ids for j in jobs for ids in j.batch], limit, normalize)
            except Exception as e:
                for job in jobs:
                    job.end(e)
                if isinstance(e, RankLost):
                    raise  # the model cannot run: `_run` stops
                continue
            self.steps += 1
            start = 0
            for job in jobs:
                job.finish(vectors[start:start + len(job.batch)])
                start += len(job.batch)

    def _fail_running(self, error: BaseException) -> None:
        pass  # an embedding step holds no jobs between steps
