"""Measures of work that do not depend on how fast the machine is, and a hang guard.

A test that bounds how much work something does counts its steps (`counted_calls`), never
the seconds it took: seconds fail on a slower or busier machine, not on a bug. `hang_guard`
only stops a block that would otherwise run forever.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class Calls:
    count: int = 0


@contextlib.contextmanager
def counted_calls() -> Iterator[Calls]:
    """The function calls (Python and C) made in this thread while the block runs: the same
    number on every machine for the same input."""
    calls = Calls()

    def profile(frame: object, event: str, arg: object) -> None:
        if event in ("call", "c_call"):
            calls.count += 1

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield calls
    finally:
        sys.setprofile(previous)


@contextlib.contextmanager
def hang_guard(seconds: float, what: str) -> Iterator[None]:
    """TimeoutError if the block is still running after `seconds` (SIGALRM: main thread,
    POSIX; elsewhere no guard). Size `seconds` for a machine several times slower than this
    one with every core busy: it is there to end a hang, not to time anything."""
    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"hang guard: {what} still running after {seconds:g} s")

    if not hasattr(signal, "setitimer"):
        yield
        return
    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
