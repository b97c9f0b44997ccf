"""Stop strings over a stream of text pieces.

Text is released as soon as it cannot be the start of a stop string; the rest is held back
until a later piece decides it. A matched stop string and everything after it are never
released (Ollama cuts the response just before the stop).
"""

from __future__ import annotations

from collections.abc import Iterable


class StopMatcher:
    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.held = ""
        self.stopped = False

    def push(self, piece: str) -> tuple[str, bool]:
        """Add piece; return (text safe to release, whether a stop string has matched)."""
        if self.stopped:
            return "", True
        text = self.held + piece
        if not self.stops:
            self.held = ""
            return text, False
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.held, self.stopped = "", True
            return text[:cut], True
        keep = self._partial_suffix(text)
        self.held = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """Release what was held back (the stream ended without completing a stop)."""
        text, self.held = ("" if self.stopped else self.held), ""
        return text

    def _partial_suffix(self, text: str) -> int:
        """Length of the longest suffix of text that is a proper prefix of some stop."""
        for n in range(min(len(text), max(len(s) for s in self.stops) - 1), 0, -1):
            tail = text[-n:]
            if any(s.startswith(tail) for s in self.stops):
                return n
        return 0
