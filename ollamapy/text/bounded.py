"""Run untrusted text code (a checkpoint's chat template, a Modelfile's TEMPLATE) for a bounded
time.

A template is code from whoever published the model. The sandbox keeps it from reaching out; it
does not keep it from spinning: `{% for i in range(99999) %}{% for j in range(99999) %}
{% endfor %}{% endfor %}` is legal and would run for hours on a server thread. `within(seconds,
fn)` runs fn on the calling thread and, if it is still running when the time is up, raises
`TooSlow` inside it through CPython's `PyThreadState_SetAsyncExc`: the exception lands at the next
bytecode boundary, so any loop of Python code (a compiled Jinja template, our Go template
interpreter) stops there. One long C call (a huge string repetition) runs to its end first,
which is why the templates also cap what they build at MAX_CHARS.

TooSlow is a BaseException, so no `except Exception` on the way (the template runtime's, ours)
swallows it.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# the most characters (or list items) a template may build: a long chat history is a few
# MiB of text; the HTTP body cap (OLLAMAPY_MAX_BODY_BYTES) is 32 MiB by default
MAX_CHARS = 64 * 2**20


class TooSlow(BaseException):
    """The time given to untrusted code ran out."""


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    """Schedule exc in the thread (None: cancel one scheduled and not yet raised)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None)


def within(seconds: float, fn: Callable[[], T]) -> T:
    """fn() on this thread, or TooSlow once `seconds` have passed (at once if seconds <= 0)."""
    if seconds <= 0:
        raise TooSlow
    me = threading.get_ident()
    lock = threading.Lock()
    running, fired = True, False

    def expire() -> None:
        nonlocal fired
        with lock:
            if running:
                _raise_in(me, TooSlow)
                fired = True

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        return fn()
    finally:
        timer.cancel()
        with lock:
            running = False
            if fired:  # it may have fired after fn returned: not yet raised, so cancel it
                _raise_in(me, None)
