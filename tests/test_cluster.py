"""A torchrun job's ranks (ollamapy/cluster.py), without a model: torchrun's variables read,
a standby's life against a real TCP store (a follower started for each group, its exit
reported, rank 0's shutdown obeyed), and rank 0's view of a follower on another host. A
whole two-host job serving a model runs in tests/e2e/test_tensor_parallel.py."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch.distributed as dist

from ollamapy import tensor_group
from ollamapy.cluster import (
    LOADS,
    SHUTDOWN,
    Cluster,
    RemoteRank,
    exit_key,
    group_prefix,
    kill_key,
    load_key,
)
from ollamapy.tensor_group import Group, Launch

HANG_GUARD_S = 60.0


def test_torchruns_variables_place_this_process() -> None:
    assert Cluster.from_env({}) is None  # not under torchrun
    assert Cluster.from_env({"RANK": "1", "WORLD_SIZE": "2"}) is None  # no store to meet in
    job = Cluster.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                            "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "10.0.0.5",
                            "MASTER_PORT": "29500"})
    assert job == Cluster(3, 4, 1, 2, "10.0.0.5", 29500)
    assert job.address == "10.0.0.5:29500"
    # set by hand without LOCAL_*: every rank on this one host, as OLLAMAPY_TENSOR_PARALLEL's
    assert Cluster.from_env({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "h",
                             "MASTER_PORT": "1"}) == Cluster(1, 2, 1, 2, "h", 1)


@pytest.fixture()
def store() -> Iterator[dist.TCPStore]:
    """Rank 0's store, as `ollamapy serve` holds it when torchrun's variables are set by
    hand (torchrun's agent holds it otherwise)."""
    yield dist.TCPStore("127.0.0.1", 0, world_size=2, is_master=True, wait_for_workers=False)


def test_a_standby_starts_each_groups_follower_and_reports_its_exit(store) -> None:
    standby = subprocess.Popen(
        [sys.executable, "-c", "import sys; from ollamapy.cluster import Cluster, stand_by; "
         f"sys.exit(stand_by(Cluster(1, 2, 0, 1, '127.0.0.1', {store.port})))"])
    try:
        Cluster(0, 2, 0, 1, "127.0.0.1", store.port).wait_for_standbys(store)  # as rank 0 does
        # rank 0 starts group 1, whose Launch its follower cannot read: it exits at once
        n = store.add(LOADS, 1)
        store.set(load_key(n), "{not json")
        follower = RemoteRank(store, n, 1)
        assert follower.wait(HANG_GUARD_S) == 1  # the exit its standby saw
        assert store.get(exit_key(n, 1)) == b"1"
        # group 2's follower waits in the rendezvous for rank 0, who gives up on it
        n = store.add(LOADS, 1)
        launch = Launch("missing.gguf", 2, f"store://127.0.0.1:{store.port}/{group_prefix(n)}",
                        "cpu", True, "f16", 64, 1, True)
        store.set(load_key(n), json.dumps(dataclasses.asdict(launch)))
        lingering = RemoteRank(store, n, 1)
        with pytest.raises(subprocess.TimeoutExpired):
            lingering.wait(1.0)
        lingering.kill()
        assert lingering.wait(HANG_GUARD_S) == -signal.SIGKILL
        store.set(SHUTDOWN, "1")  # rank 0's server stopped
        assert standby.wait(HANG_GUARD_S) == 0
    finally:
        standby.kill()
        standby.wait()


def test_a_follower_on_another_host_is_waited_for_through_the_store(store) -> None:
    follower = RemoteRank(store, 7, 2)
    assert follower.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        follower.wait(0.3)
    store.set(exit_key(7, 2), "-9")
    assert follower.poll() == -9 and follower.wait(1) == -9
    follower.kill()
    assert store.get(kill_key(7)) == b"1"


def test_serve_under_torchrun_refuses_another_tensor_parallel_degree(monkeypatch,
                                                                      capsys) -> None:
    from ollamapy import cli

    for key, value in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "1", "OLLAMAPY_TENSOR_PARALLEL": "3"}.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["serve"]) == 1
    assert "OLLAMAPY_TENSOR_PARALLEL=3 but torchrun started 2 ranks" in capsys.readouterr().err


def test_rank_0_gives_up_on_a_follower_whose_standby_is_gone(store, monkeypatch) -> None:
    """No standby will ever report rank 1's exit: rank 0 asks for the kill, waits its grace
    once more, and goes on unloading."""
    monkeypatch.setattr(tensor_group, "STOP_GRACE_S", 0.2)
    group = Group(Launch("m.gguf", 2, "store://h:1/p", "cpu", True, "f16", 64, 1, True), None)
    group.followers = [RemoteRank(store, 3, 1)]
    group.stop(announce=False)
    assert store.check([kill_key(3)])
