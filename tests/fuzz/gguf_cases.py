"""Valid GGUF files built field by field, remembering where every integer field lies, so that a
fuzzer can break exactly one count, length, type or offset (and the shared checks of what a
successful parse must guarantee).

    data, fields = build(kvs, tensors, alignment)    fields: [Field(offset, fmt, what), …]
    check_parsed(data)                               read_gguf, then the guarantees

Used by the hypothesis properties (test_gguf_properties.py) and the atheris harness
(fuzz_gguf.py). The layout is ggml/docs/gguf.md's, as ollamapy/loading/gguf.py reads it.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ollamapy.loading.ggml_types import GGML_TYPES
from ollamapy.loading.gguf import MAX_DIMS, MAX_NAME_LENGTH, GGUFError, GGUFFile, read_gguf

STRING, ARRAY = 8, 9
SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
           11: "<q", 12: "<d"}
# values a length, count or offset is most likely to be mishandled at
BOUNDARIES = (0, 1, 2, 3, 7, 8, 31, 32, 33, 63, 64, 255, 256, 4095, 4096, 65_535, 65_536,
              2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 32,
              2**64 - 1)


@dataclass(frozen=True, slots=True)
class Field:
    offset: int
    fmt: str  # "<I" or "<Q"
    what: str  # "n_tensors", "string length", "array count", "tensor offset", …


@dataclass(frozen=True, slots=True)
class KV:
    key: str
    vtype: int
    value: Any  # a scalar, a str, or for ARRAY (element type, [values])


@dataclass(frozen=True, slots=True)
class Tensor:
    name: str
    dims: tuple[int, ...]  # GGUF order, innermost first
    type_id: int


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()
        self.fields: list[Field] = []

    def int(self, fmt: str, value: int, what: str) -> None:
        self.fields.append(Field(len(self.out), fmt, what))
        self.out += struct.pack(fmt, value)

    def string(self, text: str, what: str) -> None:
        raw = text.encode()
        self.int("<Q", len(raw), f"{what} length")
        self.out += raw

    def value(self, vtype: int, value: Any, what: str) -> None:
        if vtype in SCALARS:
            self.out += struct.pack(SCALARS[vtype], value)
        elif vtype == STRING:
            self.string(value, what)
        else:
            etype, items = value
            self.int("<I", etype, f"{what} array type")
            self.int("<Q", len(items), f"{what} array count")
            for item in items:
                self.value(etype, item, f"{what} element")


def nbytes(t: Tensor) -> int:
    kind = GGML_TYPES[t.type_id]
    n = 1
    for d in t.dims:
        n *= d
    return n // kind.block_size * kind.type_size


def build(kvs: list[KV], tensors: list[Tensor], alignment: int = 32, version: int = 3,
          gaps: list[int] | None = None, fill: int = 0) -> tuple[bytes, list[Field]]:
    """A valid file: tensors laid out in order, each aligned, `gaps[i]` extra aligned units
    before tensor i; data bytes all `fill`. A KV general.alignment must agree with alignment."""
    w = _Writer()
    w.out += b"GGUF"
    w.int("<I", version, "version")
    w.int("<Q", len(tensors), "n_tensors")
    w.int("<Q", len(kvs), "n_kv")
    for kv in kvs:
        w.string(kv.key, "key")
        w.int("<I", kv.vtype, "value type")
        w.value(kv.vtype, kv.value, kv.key)
    offset = 0
    for i, t in enumerate(tensors):
        offset += (gaps[i] if gaps else 0) * alignment
        w.string(t.name, "tensor name")
        w.int("<I", len(t.dims), "n_dims")
        for d in t.dims:
            w.int("<Q", d, "dim")
        w.int("<I", t.type_id, "tensor type")
        w.int("<Q", offset, "tensor offset")
        offset += -(-nbytes(t) // alignment) * alignment
    w.out += b"\0" * (-len(w.out) % alignment)
    w.out += bytes([fill]) * offset
    return bytes(w.out), w.fields


def mutate_field(data: bytes, field: Field, value: int) -> bytes:
    """data with one integer field set to value (wrapped to the field's width)."""
    width = struct.calcsize(field.fmt)
    raw = struct.pack(field.fmt, value % (1 << (8 * width)))
    return data[:field.offset] + raw + data[field.offset + width:]


@contextlib.contextmanager
def as_file(data: bytes) -> Iterator[str]:
    """A path whose content is data: an anonymous memory file where there are such (no disk
    traffic per example), else a temp file."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("fuzz.gguf")
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile(suffix=".gguf") as f:
        f.write(data)
        f.flush()
        yield f.name


def check_parsed(f: GGUFFile, size: int) -> None:
    """What a successful parse promises: every tensor's bytes inside the file, where its
    shape and type say, none overlapping another's, and the header's limits respected."""
    assert 0 < f.data_offset <= size
    spans = []
    for name, info in f.tensors.items():
        assert info.name == name and 0 < len(name.encode()) < MAX_NAME_LENGTH
        assert 1 <= len(info.shape) <= MAX_DIMS and all(d >= 1 for d in info.shape)
        kind = next(t for t in GGML_TYPES.values() if t.name == info.type_name)
        n = 1
        for d in info.shape:
            n *= d
        assert n % kind.block_size == 0 and info.nbytes == n // kind.block_size * kind.type_size
        assert f.data_offset <= info.offset and info.offset + info.nbytes <= size
        assert len(f._map[info.offset:info.offset + info.nbytes]) == info.nbytes
        spans.append((info.offset, info.offset + info.nbytes))
    spans.sort()
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:],
                                                                    strict=False))


def parse(data: bytes) -> GGUFFile | None:
    """read_gguf on data with the guarantees checked; None when it was refused (GGUFError).
    Anything else escapes: that is a finding."""
    with as_file(data) as path:
        try:
            f = read_gguf(path)
        except GGUFError:
            return None
        with f:
            check_parsed(f, len(data))
            return f
