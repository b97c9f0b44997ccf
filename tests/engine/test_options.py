"""Options: Ollama's defaults, JSON coercion and error strings (api.Options.FromMap)."""

from __future__ import annotations

import pytest

from ollamapy.engine.options import DEPRECATED_OPTIONS, Options, OptionsError, parse_options


def test_defaults_are_ollamas() -> None:
    o = Options()
    assert (o.num_ctx, o.num_predict, o.num_keep, o.seed, o.num_batch) == (4096, -1, 4, -1, 512)
    assert (o.temperature, o.top_k, o.top_p, o.min_p, o.typical_p) == (0.8, 40, 0.9, 0.0, 1.0)
    assert (o.repeat_last_n, o.repeat_penalty) == (64, 1.0)
    assert (o.presence_penalty, o.frequency_penalty, o.stop) == (0.0, 0.0, ())


def test_numbers_are_coerced_like_go() -> None:
    o = parse_options({"num_ctx": 2048.9, "temperature": 1, "top_p": 0.5, "stop": ["a", "b"],
                       "use_mmap": False})
    assert o.num_ctx == 2048 and isinstance(o.num_ctx, int)
    assert o.temperature == 1.0 and isinstance(o.temperature, float)
    assert o.stop == ("a", "b") and o.use_mmap is False


def test_null_keeps_the_base_value_and_base_is_overlaid() -> None:
    base = parse_options({"temperature": 0.1, "stop": ["x"]})
    o = parse_options({"temperature": None, "top_k": 5}, base)
    assert (o.temperature, o.stop, o.top_k) == (0.1, ("x",), 5)
    assert parse_options(None, base) is base and parse_options({}, base) is base


@pytest.mark.parametrize(("raw", "message"), [
    ({"temperature": "hot"}, 'option "temperature" must be of type float32'),
    ({"temperature": True}, 'option "temperature" must be of type float32'),
    ({"num_ctx": "2048"}, 'option "num_ctx" must be of type integer'),
    ({"seed": False}, 'option "seed" must be of type integer'),
    ({"use_mmap": 1}, 'option "use_mmap" must be of type boolean'),
    ({"stop": "###"}, 'option "stop" must be of type array'),
    ({"stop": ["a", 1]}, 'option "stop" must be of an array of strings'),
])
def test_wrong_types_give_ollamas_error(raw: dict, message: str) -> None:
    with pytest.raises(OptionsError) as err:
        parse_options(raw)
    assert str(err.value) == message


def test_unknown_and_deprecated_keys_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    raw = dict.fromkeys(DEPRECATED_OPTIONS, 1) | {"frobnicate": 3}
    assert parse_options(raw) == Options()
    warned = [r.getMessage() for r in caplog.records]
    assert warned == ["invalid option provided: frobnicate"]
