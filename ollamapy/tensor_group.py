"""Tensor parallelism while serving: rank 0 serves, its followers repeat every forward.

With OLLAMAPY_TENSOR_PARALLEL=N a runner (in its engine process, rank 0) starts N - 1
follower processes (`python -m ollamapy.tensor_group`); the N join one torch.distributed
group (gloo on CPU, NCCL on CUDA, a rendezvous file in a temporary folder) and each loads its
part of the model (engine/tensor_parallel.py: its heads and feed-forward units, whole
embeddings and head). Rank 0 runs the engine as it always does: batching, sampling, the
prompt side. Each forward of its part, and each operation on its KV cache's slots, is first
announced to the followers, which do the same on theirs, so every all-reduce meets its
partners. Followers stop at the final hidden state: only rank 0 computes logits and samples.
Under torchrun (cluster.py) the followers are started by the other ranks' standbys, on their
own hosts, and the group meets in torchrun's store instead of a file.

    rank 0 → followers   ("forward", tokens, start_pos, cache, key_positions)
                         ("copy", src, dst, n)    ("swap", a, b, len_a, len_b)
                         ("encode", ids, mask)   (an encoder's batch)
                         ("stop",)
    cache:               None, ("batch", slot or None), or ("scratch", id, max_len, slots)

A follower that dies breaks the group: rank 0's next announcement or all-reduce fails, the
requests of that step end with `RankLost`'s error, and the runner stops, so the scheduler
unloads the model (the next request loads it afresh). Rank 0 gone, the followers' next
receive fails and they exit.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ollamapy import cluster
from ollamapy.contract import RankLost
from ollamapy.engine.bert import BertEncoder
from ollamapy.engine.kv_cache import KVCache
from ollamapy.engine.model import Transformer
from ollamapy.engine.tensor_parallel import Part

log = logging.getLogger(__name__)

# the group waits this long for a peer: followers sit in a receive for as long as the model
# stays loaded (keep_alive may be forever); a peer that dies closes its sockets at once
PATIENCE = timedelta(days=365)
STOP_GRACE_S = 30.0  # a follower that has not exited by then after "stop" is killed
GONE_WAIT_S = 2.0  # a collective failed: how long to look for the follower that exited


def backend_for(device: torch.device) -> str:
    """The collective backend for a device type: NCCL between GPUs, gloo on CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(device: torch.device, rank: int) -> torch.device:
    """The device a rank computes on: GPU `rank` of a CUDA host, else `device` itself."""
    return torch.device("cuda", rank) if device.type == "cuda" else device


def threads_per_rank(world: int, cores: int | None = None) -> int:
    """CPU threads for each of `world` ranks on one host: the cores shared out."""
    return max(1, (cores or os.cpu_count() or 1) // world)


@dataclass(frozen=True)
class Launch:
    """What a follower needs to load its part and mirror rank 0's cache."""

    path: str
    world: int
    # where the ranks meet: an init_method URL ("file://…"), or "store://host:port/prefix"
    # (a prefix of torchrun's store, cluster.py)
    rendezvous: str
    device: str
    fast: bool
    kv_cache_type: str
    num_ctx: int
    slots: int
    batch_invariant: bool
    name: str = ""


def _local() -> tuple[int, int] | None:
    """This process's device index and the ranks sharing its host (LOCAL_RANK and
    LOCAL_WORLD_SIZE: torchrun's, or those `cluster.spawn_follower` sets)."""
    if "LOCAL_RANK" not in os.environ:
        return None
    return int(os.environ["LOCAL_RANK"]), int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def _device(launch: Launch, rank: int) -> torch.device:
    local = _local()
    return rank_device(torch.device(launch.device), rank if local is None else local[0])


def _join(launch: Launch, rank: int) -> Part:
    device = _device(launch, rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    elif "OMP_NUM_THREADS" not in os.environ:  # else the count the user gave stands
        local = _local()
        torch.set_num_threads(threads_per_rank(launch.world if local is None else local[1]))
    where: dict[str, Any] = {"init_method": launch.rendezvous}
    if launch.rendezvous.startswith("store://"):
        address, _, prefix = launch.rendezvous.removeprefix("store://").partition("/")
        where = {"store": dist.PrefixStore(prefix, cluster.connect(address))}
    dist.init_process_group(backend_for(device), rank=rank, world_size=launch.world,
                            timeout=PATIENCE, **where)
    return Part(rank, launch.world, dist.group.WORLD)


def _load_part(launch: Launch, part: Part) -> Transformer | BertEncoder:
    from ollamapy.loaded import load

    device = _device(launch, part.rank)
    model = load(launch.path, device=device, fast=launch.fast, compile=False,
                 kv_cache_type=launch.kv_cache_type, part=part).model
    if isinstance(model, Transformer):
        model.init_rope(max(4, min(launch.num_ctx, model.config.context_length)))
        model.batch_invariant = launch.batch_invariant
    return model


def _agree(error: str | None) -> None:
    """Every rank says how its load went; any failure fails every rank's load."""
    said: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(said, error)
    if failed := [(rank, e) for rank, e in enumerate(said) if e]:
        raise RuntimeError("; ".join(f"tensor parallel rank {r}: {e}" for r, e in failed))


class Group:
    """Rank 0's side: the followers' processes, the group, and the announcements."""

    def __init__(self, launch: Launch, folder: Path | None) -> None:
        self.launch, self.folder = launch, folder
        # subprocess.Popen, or cluster.RemoteRank where another host's standby started it
        self.followers: list[Any] = []
        self.part: Part | None = None
        self.broken: RankLost | None = None
        self.batch_cache: KVCache | None = None  # `mirrored`
        self._ids = itertools.count()

    @classmethod
    def start(cls, path: str | Path, world: int, *, device: torch.device, fast: bool,
              kv_cache_type: str, num_ctx: int, slots: int, batch_invariant: bool,
              name: str = "", job: str = "") -> Group:
        """Start the followers and join them as rank 0 (→ the Group; `part` is this
        process's); load this rank's part next, then `ready()`. job: the address of
        torchrun's store (cluster.py), whose standbys start the followers; "" starts them
        here."""
        folder: Path | None = None
        if job:
            store = cluster.connect(job)
            n = int(store.add(cluster.LOADS, 1))
            rendezvous = f"store://{job}/{cluster.group_prefix(n)}"
        else:
            folder = Path(tempfile.mkdtemp(prefix="ollamapy-tp-"))
            rendezvous = f"file://{folder / 'rendezvous'}"
        group = cls(Launch(str(path), world, rendezvous, str(device), fast, kv_cache_type,
                           num_ctx, slots, batch_invariant, name), folder)
        launch = json.dumps(asdict(group.launch))
        if job:
            store.set(cluster.load_key(n), launch)  # each host's standby starts its follower
            group.followers = [cluster.RemoteRank(store, n, rank) for rank in range(1, world)]
        else:
            group.followers = [cluster.spawn_follower(rank, launch, local_rank=rank,
                                                      local_world=world)
                               for rank in range(1, world)]
        try:
            group.part = group._join_watching()
        except BaseException:
            group.stop(announce=False)
            raise
        return group

    def _join_watching(self) -> Part:
        """Join as rank 0, giving up if a follower exits before the group is whole (the
        group itself would wait for it for as long as PATIENCE)."""
        joined: list[Part | BaseException] = []

        def join() -> None:
            try:
                joined.append(_join(self.launch, 0))
            except BaseException as e:
                joined.append(e)

        thread = threading.Thread(target=join, name="tp-join", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.2)
            if gone := self._gone(0):
                raise RuntimeError(f"tensor parallel: rank {gone[0]} exited (status "
                                   f"{self.followers[gone[0] - 1].returncode}) before the "
                                   "group was formed")
        if isinstance(joined[0], BaseException):
            raise joined[0]
        return joined[0]

    def ready(self, error: BaseException | None = None) -> None:
        """After this rank's load: every rank's load went well, or this raises with what
        went wrong where, and the followers are stopped. error: this rank's load failed
        (the followers are told and stopped; the caller raises it)."""
        try:
            _agree(None if error is None else f"{type(error).__name__}: {error}")
        except BaseException:
            self.stop(announce=False)
            if error is None:
                raise

    def announce(self, message: tuple) -> None:
        """Send message to every follower before rank 0 acts on it."""
        if self.broken is not None:
            raise self.broken
        try:
            dist.broadcast_object_list([message], src=0)
        except Exception as e:
            raise self.lost(e) from e

    def lost(self, error: BaseException) -> RankLost:
        """The group is broken (a collective failed): which follower is gone, as an error
        for the requests, remembered so that the runner stops."""
        if isinstance(error, RankLost):
            self.broken = error
            return error
        gone = self._gone()
        who = f"rank {', '.join(map(str, gone))}" if gone else "a rank"
        self.broken = RankLost(f"tensor parallel {who} of {self.launch.world} stopped while "
                               f"serving {self.launch.name or self.launch.path}; the model "
                               f"is unloaded ({error})")
        return self.broken

    def lead(self, model: Transformer | BertEncoder) -> None:
        """Make every forward of model (rank 0's part) announce itself first, whichever path
        calls it (a prompt chunk, a decode step, an embedding)."""
        forward = model.forward
        if isinstance(model, BertEncoder):
            def encoded(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                self.announce(("encode", ids.cpu(), mask.cpu()))
                return self._guarded(forward, ids, mask)

            model.forward = encoded  # type: ignore[method-assign]
            return

        def announced(tokens: torch.Tensor, start_pos: int | torch.Tensor = 0,
                      cache: KVCache | None = None, **kwargs: Any) -> torch.Tensor:
            key_positions = kwargs.get("key_positions")
            self.announce(("forward", tokens.cpu(),
                           start_pos.cpu() if isinstance(start_pos, torch.Tensor) else start_pos,
                           self._cache_key(cache),
                           None if key_positions is None else key_positions.cpu()))
            return self._guarded(forward, tokens, start_pos, cache, **kwargs)

        model.forward = announced  # type: ignore[method-assign]

    def _guarded(self, forward: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        try:
            return forward(*args, **kwargs)
        except RuntimeError as e:  # an all-reduce whose partner is gone
            if self.broken is None and self._gone():
                raise self.lost(e) from e
            raise

    def _gone(self, wait_s: float = GONE_WAIT_S) -> list[int]:
        """The ranks whose followers have exited, looking for up to wait_s: a follower on
        another host is known to be gone only once its standby has said so."""
        deadline = time.monotonic() + wait_s
        while not (gone := [rank for rank, p in enumerate(self.followers, 1)
                            if p.poll() is not None]) and time.monotonic() < deadline:
            time.sleep(0.05)
        return gone

    def mirrored(self, cache: KVCache) -> KVCache:
        """The batch's cache, its slot operations announced (the same buffers)."""
        mirror = MirroredCache.__new__(MirroredCache)
        mirror._hold(cache.k, cache.v)
        mirror.group = self
        self.batch_cache = mirror
        return mirror

    def _cache_key(self, cache: KVCache | None) -> tuple | None:
        """How a follower finds its twin of cache: the batch's, one of its slots, or a
        scratch cache of the same shape (an embedding's), made anew for each new one."""
        if cache is None:
            return None
        if self.batch_cache is not None and cache is self.batch_cache:
            return ("batch", None)
        if self.batch_cache is not None and cache.parent is self.batch_cache:
            return ("batch", cache.index)
        if not hasattr(cache, "mirror_id"):
            cache.mirror_id = next(self._ids)  # type: ignore[attr-defined]
        return ("scratch", cache.mirror_id, cache.max_len, cache.slots)

    def stop(self, announce: bool = True) -> None:
        """Tell the followers to exit, wait for them (killing any that will not), leave the
        group."""
        if announce and self.part is not None and self.broken is None:
            with suppress(RankLost):
                self.announce(("stop",))
        for p in self.followers:
            try:
                p.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                p.kill()
                # bounded: a follower on another host is known gone only once its standby
                # says so, and a standby that is gone itself never will
                with suppress(subprocess.TimeoutExpired):
                    p.wait(STOP_GRACE_S)
        if dist.is_initialized() and self.broken is None:  # a broken group may hang in it
            dist.destroy_process_group()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


class MirroredCache(KVCache):
    """Rank 0's batch cache: a slot copy or swap is announced, then done."""

    group: Group

    def copy(self, src: int, dst: int, length: int) -> None:
        self.group.announce(("copy", src, dst, length))
        super().copy(src, dst, length)

    def swap(self, a: int, b: int, len_a: int, len_b: int) -> None:
        self.group.announce(("swap", a, b, len_a, len_b))
        super().swap(a, b, len_a, len_b)


def follow(rank: int, launch: Launch) -> None:
    """A follower's life: join, load its part, then repeat rank 0's announcements until
    told to stop or until rank 0 is gone."""
    part = _join(launch, rank)
    try:
        model = _load_part(launch, part)
    except Exception as e:
        _agree(f"{type(e).__name__}: {e}")
        return
    _agree(None)
    if isinstance(model, BertEncoder):
        _encode_along(model)
        return
    device = model.device
    num_ctx = max(4, min(launch.num_ctx, model.config.context_length))  # as the Runner's
    cache = KVCache(model.config, num_ctx, batch=launch.slots, device=device,
                    dtype=model.kv_dtype)
    scratch: tuple[Any, KVCache] | None = None
    for message in _announcements():
        kind = message[0]
        if kind == "copy":
            cache.copy(*message[1:])
        elif kind == "swap":
            cache.swap(*message[1:])
        elif kind == "forward":
            tokens, start_pos, key, key_positions = message[1:]
            target: KVCache | None = None
            if key is not None and key[0] == "batch":
                target = cache if key[1] is None else cache.slot(key[1])
            elif key is not None:
                if scratch is None or scratch[0] != key[1]:
                    scratch = (key[1], KVCache(model.config, key[2], batch=key[3],
                                               device=device, dtype=model.kv_dtype))
                target = scratch[1]
            try:
                model(tokens.to(device),
                      start_pos.to(device) if isinstance(start_pos, torch.Tensor) else start_pos,
                      target, hidden=True,
                      key_positions=None if key_positions is None else key_positions.to(device))
            except ValueError as e:  # rank 0 met the same refusal (a cache overflow)
                log.debug("follower %d: %s", rank, e)


def _encode_along(model: BertEncoder) -> None:
    """An encoder's follower: each batch rank 0 encodes, encoded here too."""
    device = model.tok_embeddings.weight.device
    for _, ids, mask in _announcements():
        try:
            model(ids.to(device), mask.to(device))
        except ValueError as e:  # rank 0 met the same refusal (too many tokens)
            log.debug("follower: %s", e)


def _announcements() -> Iterator[tuple]:
    """Rank 0's messages, in order, until "stop" (then the group is left) or until rank 0
    is gone (its sockets closed: nothing to leave)."""
    while True:
        box: list[Any] = [None]
        try:
            dist.broadcast_object_list(box, src=0)
        except Exception:
            return
        if box[0][0] == "stop":
            dist.destroy_process_group()
            return
        yield box[0]


def main(argv: list[str]) -> None:
    rank, launch = int(argv[0]), Launch(**json.loads(argv[1]))
    with suppress(OSError):  # Linux: `ps` and `top` show whose follower this is (15 bytes)
        Path("/proc/self/comm").write_text(f"tp{rank} {launch.name}"[:15])
    logging.basicConfig(level=logging.WARNING,
                        format=f"%(levelname)s tp rank {rank} %(name)s: %(message)s")
    follow(rank, launch)


if __name__ == "__main__":
    main(sys.argv[1:])
