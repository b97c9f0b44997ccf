"""Environment settings and Go durations, read as Ollama reads them."""

from __future__ import annotations

import pytest

from ollamapy.settings import (
    FOREVER,
    Settings,
    parse_env_duration,
    parse_go_duration,
    parse_host,
    parse_keep_alive,
)


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0.0), ("5m", 300.0), ("1h30m", 5400.0), ("1.5h", 5400.0), ("-1m", -60.0),
    ("300ms", 0.3), ("10s", 10.0), ("2h45m30.5s", 9930.5), ("1us", 1e-6), ("+3s", 3.0),
])
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "message"), [
    ("10", 'time: missing unit in duration "10"'),
    ("abc", 'time: invalid duration "abc"'),
    ("", 'time: invalid duration ""'),
    ("5x", 'time: unknown unit "x" in duration "5x"'),
    (".", 'time: invalid duration "."'),
])
def test_bad_go_durations_have_go_messages(text: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_go_duration(text)
    assert str(e.value) == message


def test_request_keep_alive() -> None:
    assert parse_keep_alive(3600) == 3600.0
    assert parse_keep_alive(0.5) == 0.5
    assert parse_keep_alive("10m") == 600.0
    assert parse_keep_alive(-1) == FOREVER
    assert parse_keep_alive("-1s") == FOREVER
    assert parse_keep_alive(0) == 0.0
    with pytest.raises(ValueError, match="missing unit"):
        parse_keep_alive("3600")  # a unitless string is an error in a request
    with pytest.raises(ValueError, match="Unsupported type: 'bool'"):
        parse_keep_alive(True)


def test_load_timeout_is_a_duration_or_seconds_and_negative_is_never() -> None:
    assert Settings.from_env({}).load_timeout == 300.0  # Ollama's 5m
    assert Settings.from_env({"OLLAMA_LOAD_TIMEOUT": "2s"}).load_timeout == 2.0
    assert Settings.from_env({"OLLAMA_LOAD_TIMEOUT": "90"}).load_timeout == 90.0
    assert Settings.from_env({"OLLAMA_LOAD_TIMEOUT": "-1"}).load_timeout == FOREVER


def test_env_keep_alive_accepts_plain_seconds() -> None:
    assert parse_env_duration("3600") == 3600.0
    assert parse_env_duration("10m") == 600.0
    assert parse_env_duration("-1") == FOREVER
    assert parse_env_duration("") == 300.0
    assert parse_env_duration("junk") == 300.0


@pytest.mark.parametrize(("text", "scheme", "host", "port"), [
    ("", "http", "127.0.0.1", 11434),
    ("0.0.0.0", "http", "0.0.0.0", 11434),
    ("127.0.0.1:8080", "http", "127.0.0.1", 8080),
    (":8080", "http", "", 8080),
    ("http://example.com", "http", "example.com", 80),
    ("https://example.com", "https", "example.com", 443),
    ("http://example.com:5000/path", "http", "example.com", 5000),
    ("[::1]:9000", "http", "::1", 9000),
    ("::1", "http", "::1", 11434),
    ("localhost:99999", "http", "localhost", 11434),  # a bad port falls back
])
def test_ollama_host(text: str, scheme: str, host: str, port: int) -> None:
    hp = parse_host(text)
    assert (hp.scheme, hp.host, hp.port) == (scheme, host, port)


def test_host_url_for_clients() -> None:
    assert parse_host(":8080").url == "http://127.0.0.1:8080"
    assert parse_host("[::1]:9000").url == "http://[::1]:9000"


def test_settings_from_env_trims_quotes_and_spaces(tmp_path) -> None:
    s = Settings.from_env({"OLLAMA_HOST": ' "127.0.0.1:1234" ', "OLLAMA_MODELS": str(tmp_path),
                           "OLLAMA_KEEP_ALIVE": "'1h'", "OLLAMA_NUM_PARALLEL": "2",
                           "OLLAMA_ORIGINS": "app://x, http://y ", "OLLAMA_MAX_QUEUE": "x"})
    assert s.host.port == 1234 and s.models == tmp_path and s.keep_alive == 3600.0
    assert s.num_parallel == 2 and s.origins == ("app://x", "http://y")
    assert s.max_queue == 512  # unparsable: the default
    d = Settings.from_env({})
    assert d.keep_alive == 300.0 and d.max_loaded_models == 3 and d.context_length == 0
    assert d.kv_cache_type == "f16"  # Ollama's default
    assert Settings.from_env({"OLLAMA_KV_CACHE_TYPE": " 'F32' "}).kv_cache_type == "f32"
    assert str(d.models).endswith(".ollama/models")


def test_batch_invariance_is_on_unless_turned_off() -> None:
    assert Settings.from_env({}).batch_invariant
    assert Settings.from_env({"OLLAMAPY_BATCH_INVARIANT": "1"}).batch_invariant
    assert not Settings.from_env({"OLLAMAPY_BATCH_INVARIANT": "0"}).batch_invariant
    assert not Settings.from_env({"OLLAMAPY_BATCH_INVARIANT": " off "}).batch_invariant


def test_tensor_parallel_is_one_process_unless_set() -> None:
    assert Settings.from_env({}).tensor_parallel == 1
    assert Settings.from_env({"OLLAMAPY_TENSOR_PARALLEL": "2"}).tensor_parallel == 2
    assert Settings.from_env({"OLLAMAPY_TENSOR_PARALLEL": "0"}).tensor_parallel == 1


def test_streams_in_flight_get_ten_seconds_to_finish_at_shutdown_unless_set() -> None:
    assert Settings.from_env({}).shutdown_timeout == 10.0
    assert Settings.from_env({"OLLAMAPY_SHUTDOWN_TIMEOUT": "120"}).shutdown_timeout == 120.0
    assert Settings.from_env({"OLLAMAPY_SHUTDOWN_TIMEOUT": "soon"}).shutdown_timeout == 10.0
