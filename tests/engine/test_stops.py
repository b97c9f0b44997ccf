"""StopMatcher releases exactly the text before the first stop string, however split."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ollamapy.engine.stops import StopMatcher


def run(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    m = StopMatcher(stops)
    out = []
    for piece in pieces:
        text, stopped = m.push(piece)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + m.flush(), False


def test_stop_inside_one_piece() -> None:
    assert run(["\n\n"], ["Hello", " world\n\nmore"]) == ("Hello world", True)


def test_stop_split_over_pieces_is_held_then_dropped() -> None:
    m = StopMatcher(["<end>"])
    assert m.push("abc<e") == ("abc", False)  # "<e" might start the stop: held back
    assert m.push("n") == ("", False)
    assert m.push("d>tail") == ("", True)
    assert m.flush() == ""


def test_false_start_is_released() -> None:
    m = StopMatcher(["<end>"])
    assert m.push("a<en") == ("a", False)
    assert m.push("x") == ("<enx", False)


def test_no_stops_passes_text_through_and_empty_stops_are_ignored() -> None:
    assert run([], ["a", "b"]) == ("ab", False)
    assert run([""], ["a", "b"]) == ("ab", False)


def test_earliest_stop_wins() -> None:
    assert run(["world", "lo w"], ["hello world"]) == ("hel", True)


def reference(stops: list[str], text: str) -> tuple[str, bool]:
    """Cut before the stop whose occurrence ends first in text (None: no stop)."""
    best: tuple[int, int] | None = None  # (end, start)
    for s in stops:
        i = text.find(s)
        if i >= 0 and (best is None or (i + len(s), i) < best):
            best = (i + len(s), i)
    return (text, False) if best is None else (text[: best[1]], True)


def substring_free(stops: list[str]) -> bool:
    return not any(a != b and a in b for a in stops for b in stops)


@given(st.lists(st.text("ab\n", min_size=1, max_size=4), min_size=1, max_size=3),
       st.text("ab\nc", max_size=30), st.lists(st.integers(0, 30), max_size=8))
def test_any_split_gives_the_reference_cut(stops: list[str], text: str, cuts: list[int]
                                           ) -> None:
    if not substring_free(stops):
        stops = stops[:1]
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert run(stops, pieces) == reference(stops, text)
