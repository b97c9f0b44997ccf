"""within(seconds, fn): untrusted code stops when its time is up, and only then."""

from __future__ import annotations

import contextlib
import time

import pytest

from ollamapy.text.bounded import TooSlow, within


def spin() -> None:
    while True:
        pass


def test_a_spinning_loop_is_stopped() -> None:
    with pytest.raises(TooSlow):
        within(0.2, spin)


def test_no_except_exception_on_the_way_swallows_it() -> None:
    def stubborn() -> None:
        while True:
            with contextlib.suppress(Exception):  # what a template runtime might do
                spin()

    with pytest.raises(TooSlow):
        within(0.2, stubborn)


def test_what_finishes_in_time_returns_and_leaves_nothing_behind() -> None:
    """Many calls ending near their limit: none raises later, outside its call."""
    finished = 0
    for _ in range(300):
        with contextlib.suppress(TooSlow):
            finished += within(0.0005, lambda: sum(range(3000))) == 4498500
    time.sleep(0.05)
    assert sum(range(10**6)) == 499999500000  # a late TooSlow would land in here
    assert finished > 0
    assert within(5, lambda: "done") == "done"


def test_no_time_left_is_refused_at_once() -> None:
    ran = []
    with pytest.raises(TooSlow):
        within(0.0, lambda: ran.append(1))
    assert ran == []
