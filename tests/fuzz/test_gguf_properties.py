"""Property-based fuzzing of the GGUF reader (hardening.md §5.4, §6c), in the normal suite.

Valid files are generated with random metadata (every value type, arrays of scalars and
strings), random tensors of every ggml type, alignments and gaps, and must read back exactly.
Then they are broken — an integer field (a count, a length, a type, a dimension, an offset)
set to a boundary value, bytes overwritten, inserted, deleted, duplicated, the file cut — and
`read_gguf` must either succeed, with every tensor's bytes inside the file, or raise
`GGUFError`: never another exception, never more than a few function calls per byte of the
file (work counted in steps, not seconds: the same on any machine), never allocating more than
a small multiple of the file's size. The coverage-guided twin is fuzz_gguf.py (atheris).

Each run is bounded by its number of examples; the suite's hypothesis profile
(tests/conftest.py) sets no per-example deadline. HANG_GUARD_S only ends a parse that would
never return.
"""

from __future__ import annotations

import math
import struct
import tracemalloc

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ollamapy.loading.ggml_types import GGML_TYPES
from tests.fuzz.gguf_cases import (
    ARRAY,
    BOUNDARIES,
    KV,
    SCALARS,
    STRING,
    Tensor,
    build,
    mutate_field,
    parse,
)
from tests.steps import counted_calls, hang_guard

# a parse takes milliseconds: this only ends one that would never return (and keeps each of
# hypothesis's replays of such an input short)
HANG_GUARD_S = 2.0
FUZZ = settings(max_examples=300,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def parse_counted(data: bytes):
    """parse(data) under the hang guard, asserting its work is linear in the file's size: a
    parse makes at most ~3 calls a byte, under 700 in all for these files (a loop over a
    count the file cannot hold, or quadratic work, makes far more)."""
    with hang_guard(HANG_GUARD_S, "read_gguf"), counted_calls() as calls:
        f = parse(data)
    assert calls.count <= 4 * len(data) + 1000, (
        f"{calls.count} calls to read a {len(data)}-byte file")
    return f

# -- valid files ----------------------------------------------------------------------------

_INT_RANGES = {0: (0, 255), 1: (-128, 127), 2: (0, 2**16 - 1), 3: (-2**15, 2**15 - 1),
               4: (0, 2**32 - 1), 5: (-2**31, 2**31 - 1), 10: (0, 2**64 - 1),
               11: (-2**63, 2**63 - 1)}
keys = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1,
               max_size=12)
texts = st.text(max_size=20)


def scalar(vtype: int) -> st.SearchStrategy:
    if vtype in _INT_RANGES:
        return st.integers(*_INT_RANGES[vtype])
    if vtype == 7:
        return st.booleans()
    width = 32 if vtype == 6 else 64
    return st.floats(allow_nan=False, width=width)


@st.composite
def kv_values(draw: st.DrawFn) -> tuple[int, object]:
    vtype = draw(st.sampled_from([*SCALARS, STRING, ARRAY]))
    if vtype in SCALARS:
        return vtype, draw(scalar(vtype))
    if vtype == STRING:
        return vtype, draw(texts)
    etype = draw(st.sampled_from([*SCALARS, STRING]))
    element = texts if etype == STRING else scalar(etype)
    return vtype, (etype, draw(st.lists(element, max_size=6)))


@st.composite
def tensors(draw: st.DrawFn, n: int) -> list[Tensor]:
    names = draw(st.lists(st.text("abcdefgh.0123456789_", min_size=1, max_size=63),
                          min_size=n, max_size=n, unique=True))
    out = []
    for name in names:
        kind = GGML_TYPES[draw(st.sampled_from(sorted(GGML_TYPES)))]
        rows = draw(st.integers(1, 2 if kind.block_size >= 256 else 4))
        dims = [kind.block_size * rows, *draw(st.lists(st.integers(1, 3), max_size=3))]
        out.append(Tensor(name, tuple(dims), kind.id))
    return out


@st.composite
def valid_files(draw: st.DrawFn) -> tuple[bytes, list, dict, list[Tensor]]:
    kvs = {k: draw(kv_values()) for k in draw(st.lists(keys, max_size=6, unique=True))}
    kvs.pop("general.alignment", None)
    kvs = {k: v for k, v in kvs.items() if not k.startswith("tokenizer.ggml.")}
    alignment = draw(st.sampled_from([32, 1, 8, 64, 256]))
    entries = [KV(k, t, v) for k, (t, v) in kvs.items()]
    if alignment != 32 or draw(st.booleans()):
        entries.insert(draw(st.integers(0, len(entries))),
                       KV("general.alignment", 4, alignment))
    ts = draw(tensors(draw(st.integers(0, 4))))
    gaps = draw(st.lists(st.integers(0, 2), min_size=len(ts), max_size=len(ts)))
    data, fields = build(entries, ts, alignment, version=draw(st.sampled_from([2, 3])),
                         gaps=gaps, fill=draw(st.integers(0, 255)))
    return data, fields, kvs, ts


def _same(read: object, written: object) -> bool:
    if isinstance(written, float):
        return read == written or (math.isnan(written) and math.isnan(read))
    return read == written


@FUZZ
@given(valid_files())
def test_generated_valid_files_read_back(case) -> None:
    data, _, kvs, ts = case
    f = parse_counted(data)
    assert f is not None, "a valid file was refused"
    for key, (vtype, value) in kvs.items():
        if vtype == ARRAY:
            etype, items = value
            if etype == 6:  # float32: compare what float32 can hold
                items = [struct.unpack("<f", struct.pack("<f", x))[0] for x in items]
            assert f.metadata[key] == items
        elif vtype == 6:
            assert f.metadata[key] == struct.unpack("<f", struct.pack("<f", value))[0]
        else:
            assert _same(f.metadata[key], value), key
    assert list(f.tensors) == [t.name for t in ts]
    for t in ts:
        info = f.tensors[t.name]
        assert info.shape == t.dims[::-1] and info.type_name == GGML_TYPES[t.type_id].name


# -- broken files ---------------------------------------------------------------------------


@st.composite
def broken_files(draw: st.DrawFn) -> bytes:
    data, fields, _, _ = draw(valid_files())
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["field", "field", "field", "overwrite", "insert", "delete",
                                    "duplicate", "truncate"]))
        if how == "field" and fields:
            field = draw(st.sampled_from(fields[1:]))  # not the version: that is one test
            old = struct.unpack_from(field.fmt, data, field.offset)[0] \
                if field.offset + struct.calcsize(field.fmt) <= len(data) else 0
            value = draw(st.sampled_from(BOUNDARIES) | st.sampled_from(
                [old - 1, old + 1, old * 2, old + 2**32, -old]) | st.integers(0, 2**64 - 1))
            if field.offset + struct.calcsize(field.fmt) <= len(data):
                data = mutate_field(data, field, value)
            continue
        at = draw(st.integers(0, len(data)))
        if how == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data = data[:at] + chunk + data[at + len(chunk):]
        elif how == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
        elif how == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 16)):]
        elif how == "duplicate":
            start = draw(st.integers(0, len(data)))
            data = data[:at] + data[start:start + draw(st.integers(1, 64))] + data[at:]
        else:
            data = data[:at]
    return data


@FUZZ
@given(broken_files())
def test_a_broken_file_reads_safely_or_raises_gguf_error(data: bytes) -> None:
    tracemalloc.start()
    try:
        parse_counted(data)  # GGUFError is a refusal; any other exception fails the test
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # parsed values cost at most ~8x their bytes (a list of small ints, a float per 4 bytes)
    assert peak <= 16 * len(data) + 256 * 1024, f"{peak} bytes for a {len(data)}-byte file"


@FUZZ
@given(st.binary(max_size=512), st.sampled_from([b"GGUF\x03\x00\x00\x00", b"GGUF\x02\x00\x00\x00",
                                                 b"GGUF", b""]))
def test_random_bytes_after_a_header_read_safely(tail: bytes, head: bytes) -> None:
    parse_counted(head + tail)
