"""Ranks launched by torchrun, on one host or several: rank 0 serves, the others stand by.

    torchrun --nnodes 2 --nproc-per-node 1 --node-rank R --master-addr HOST \
        --master-port 29500 -m ollamapy.cli serve           (once on each host, R = 0, 1)

Every process torchrun starts runs `ollamapy serve`. Rank 0 is the HTTP server, and each
model it loads is split over all of torchrun's ranks (OLLAMAPY_TENSOR_PARALLEL is the world
size). The other ranks serve nothing: each stands by on torchrun's store (MASTER_ADDR:
MASTER_PORT, which torchrun's agent keeps for the job) and, for each model rank 0 loads,
starts that rank's follower (`python -m ollamapy.tensor_group`, the same process a single
host's rank 0 starts itself), then says when it exits. Each model's group meets in the same
store, under a prefix of its own.

The store's keys, all under "ollamapy/":

    loads            a counter: the number of groups rank 0 has started
    load/<n>         group n's Launch (tensor_group.py), JSON: each standby starts a follower
    group/<n>/       group n's own rendezvous (torch.distributed's keys)
    exit/<n>/<rank>  the exit status of that rank's follower of group n
    kill/<n>         rank 0 gives up on group n: its followers are killed
    ready/<rank>     that rank's standby is watching (rank 0 serves once every one is)
    shutdown         rank 0's server has stopped: the standbys stop too
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch.distributed is imported where a store is made: the HTTP server
    import torch.distributed as dist  # does not import torch outside a torchrun job

log = logging.getLogger(__name__)

PREFIX = "ollamapy"
LOADS, SHUTDOWN = f"{PREFIX}/loads", f"{PREFIX}/shutdown"
CONNECT_TIMEOUT = timedelta(minutes=5)  # torchrun starts the hosts' ranks in any order
POLL_S = 0.2  # how often a standby looks at the store and at its followers
KILL_GRACE_S = 5.0  # a follower not gone by then after SIGTERM is killed


def load_key(n: int) -> str:
    return f"{PREFIX}/load/{n}"


def group_prefix(n: int) -> str:
    return f"{PREFIX}/group/{n}"


def exit_key(n: int, rank: int) -> str:
    return f"{PREFIX}/exit/{n}/{rank}"


def kill_key(n: int) -> str:
    return f"{PREFIX}/kill/{n}"


def ready_key(rank: int) -> str:
    return f"{PREFIX}/ready/{rank}"


@dataclass(frozen=True)
class Cluster:
    """This process's place in a torchrun job (torchrun's environment variables)."""

    rank: int
    world: int
    local_rank: int
    local_world: int
    host: str  # MASTER_ADDR: where torchrun's store listens
    port: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Cluster | None:
        """The job torchrun started this process in; None outside torchrun."""
        env = os.environ if environ is None else environ
        if not all(k in env for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")):
            return None
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        return cls(rank, world, int(env.get("LOCAL_RANK", rank)),
                   int(env.get("LOCAL_WORLD_SIZE", world)), env["MASTER_ADDR"],
                   int(env["MASTER_PORT"]))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def join(self) -> dist.Store:
        """This rank's connection to the job's store: torchrun's agent holds it (or rank 0
        does, with the variables set by hand, waiting for every rank to connect)."""
        import torch.distributed as dist

        url = f"tcp://{self.address}?rank={self.rank}&world_size={self.world}"
        store, _, _ = next(dist.rendezvous(url, timeout=CONNECT_TIMEOUT))
        return store

    def wait_for_standbys(self, store: dist.Store) -> None:
        """Rank 0, before it serves: every other rank's standby is watching for groups (one
        that came later would not start the followers of groups started before it)."""
        store.wait([ready_key(rank) for rank in range(1, self.world)], CONNECT_TIMEOUT)


def connect(address: str) -> dist.Store:
    """One more client of the job's store at address ("host:port"): an engine process or a
    follower, which torchrun did not start."""
    import torch.distributed as dist

    host, _, port = address.rpartition(":")
    return dist.TCPStore(host, int(port), is_master=False, timeout=CONNECT_TIMEOUT)


def spawn_follower(rank: int, launch: str, *, local_rank: int,
                   local_world: int) -> subprocess.Popen:
    """Start rank's follower for launch (a Launch's JSON), on this host's device local_rank,
    with local_world ranks sharing this host's cores."""
    env = {**os.environ, "LOCAL_RANK": str(local_rank), "LOCAL_WORLD_SIZE": str(local_world)}
    return subprocess.Popen([sys.executable, "-m", "ollamapy.tensor_group", str(rank), launch],
                            stdin=subprocess.DEVNULL, env=env)


class RemoteRank:
    """A follower that its host's standby started, looked at through the store the way rank
    0 looks at a follower of its own (`poll`, `wait`, `kill`, `returncode`)."""

    def __init__(self, store: dist.Store, n: int, rank: int) -> None:
        self.store, self.n, self.rank = store, n, rank
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            key = exit_key(self.n, self.rank)
            try:
                if self.store.check([key]):
                    self.returncode = int(self.store.get(key))
            except RuntimeError:  # the store is gone: so is the job
                self.returncode = -1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"tensor parallel rank {self.rank}", timeout)
            time.sleep(POLL_S)
        return self.returncode  # type: ignore[return-value]

    def kill(self) -> None:
        with suppress(RuntimeError):  # the store is gone: so is the job
            self.store.set(kill_key(self.n), "1")


def stand_by(cluster: Cluster) -> int:
    """A rank other than 0: start a follower for each group rank 0 starts, report each one's
    exit, kill those rank 0 gives up on; return when rank 0's server stops (0) or the store
    is gone (1). SIGTERM (torchrun stopping the job) ends it too; Ctrl-C is torchrun's to
    handle (ignored here, and so by the followers, which inherit it)."""
    store = cluster.join()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    followers: dict[int, subprocess.Popen] = {}
    n = int(store.add(LOADS, 0)) + 1  # the next group (rank 0 waits for `ready` to start one)
    store.set(ready_key(cluster.rank), str(n))
    log.info("tensor parallel rank %d of %d: standing by for %s", cluster.rank,
             cluster.world, cluster.address)
    try:
        while not store.check([SHUTDOWN]):
            if store.check([load_key(n)]):
                followers[n] = spawn_follower(cluster.rank, store.get(load_key(n)).decode(),
                                              local_rank=cluster.local_rank,
                                              local_world=cluster.local_world)
                n += 1
                continue
            for m, process in list(followers.items()):
                if process.poll() is not None:
                    store.set(exit_key(m, cluster.rank), str(process.returncode))
                    del followers[m]
                elif store.check([kill_key(m)]):
                    process.kill()
            time.sleep(POLL_S)
        log.info("tensor parallel rank %d: rank 0's server stopped", cluster.rank)
    except RuntimeError as e:  # the store's connection: torchrun's agent (or rank 0) is gone
        log.warning("tensor parallel rank %d: the job's store is gone (%s)", cluster.rank, e)
        return 1
    finally:
        for process in followers.values():
            process.terminate()
        for process in followers.values():
            try:
                process.wait(KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
    return 0
