"""GGUF reader: header, typed metadata, tensor infos, and tensor data from a memory map.

A GGUF file is, in order (all integers little-endian; source: ggml/docs/gguf.md):
    magic "GGUF" | version u32 | n_tensors u64 | n_kv u64
    n_kv × (key: string, value type: u32, value)          string = u64 length + UTF-8 bytes
    n_tensors × (name: string, n_dims u32, dims u64 × n_dims, ggml type u32, offset u64)
    padding to `general.alignment` (default 32), then the tensor data; each tensor's offset
    is relative to that data start.
The file is untrusted. Every count, length, offset and size is checked against fixed limits
and against the bytes left in the file *before* anything is allocated for it, with Python
integers (no wrap-around); any violation raises `GGUFError` naming the reason. The checks
follow ../shared/reference/hardening.md §5.4 (llama.cpp's gguf.cpp and Ollama's fs/gguf).
Parsing imports no torch (the model store reads metadata with it); reading tensors does.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from ollamapy.loading.ggml_types import GGML_TYPES

if TYPE_CHECKING:
    import torch

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_TENSORS = 65_536
MAX_KV = 65_536
MAX_KEY_LENGTH = 64 * 1024
MAX_STRING_LENGTH = 16 * 1024 * 1024
MAX_ARRAY_LENGTH = 64 * 1024 * 1024
MAX_ALIGNMENT = 1024 * 1024
MAX_NAME_LENGTH = 64  # ggml's GGML_MAX_NAME, terminator included in C, so names are < 64
MAX_DIMS = 4
MAX_ELEMENTS = 2**63 - 1

# value type id → (name, struct format) for fixed-size scalars; 8 = string, 9 = array
_SCALARS: dict[int, tuple[str, str]] = {
    0: ("uint8", "<B"), 1: ("int8", "<b"), 2: ("uint16", "<H"), 3: ("int16", "<h"),
    4: ("uint32", "<I"), 5: ("int32", "<i"), 6: ("float32", "<f"), 7: ("bool", "<?"),
    10: ("uint64", "<Q"), 11: ("int64", "<q"), 12: ("float64", "<d"),
}
STRING, ARRAY, UINT32, INT32, FLOAT32 = 8, 9, 4, 5, 6
# element types that consumers rely on (a scores array declared int8 but read as floats is
# a known attack on C readers; here it is simply refused)
EXPECTED_ARRAYS = {"tokenizer.ggml.tokens": STRING, "tokenizer.ggml.merges": STRING,
                   "tokenizer.ggml.scores": FLOAT32, "tokenizer.ggml.token_type": INT32}


class GGUFError(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid GGUF: {reason}")


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # torch order: GGUF's dims reversed, the innermost last
    type_name: str  # "Q4_K", "F32", …
    offset: int  # absolute offset of the first byte in the file
    nbytes: int


class _Cursor:
    """Reads little-endian values from a buffer, refusing to read past its end. Reads are
    copies (`bytes`), so no view into the memory map outlives the parse."""

    def __init__(self, buf: mmap.mmap | bytes) -> None:
        self.buf = buf
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining:
            raise GGUFError(f"file truncated in {what} (needs {n} bytes at offset {self.pos}, "
                            f"{self.remaining} left)")
        view = self.buf[self.pos:self.pos + n]
        self.pos += n
        return view

    def scalar(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def u32(self, what: str) -> int:
        return self.scalar("<I", what)

    def u64(self, what: str) -> int:
        return self.scalar("<Q", what)

    def string(self, what: str, limit: int = MAX_STRING_LENGTH) -> str:
        n = self.u64(what)
        if n > limit:
            raise GGUFError(f"{what}: string length {n} exceeds the limit {limit}")
        return self.take(n, what).decode("utf-8", errors="replace")


def _read_value(cur: _Cursor, vtype: int, key: str) -> Any:
    if vtype in _SCALARS:
        return cur.scalar(_SCALARS[vtype][1], f"value of {key}")
    if vtype == STRING:
        return cur.string(f"value of {key}")
    if vtype != ARRAY:
        raise GGUFError(f"{key}: unknown value type {vtype}")
    etype, count = cur.u32(f"array type of {key}"), cur.u64(f"array length of {key}")
    if count > MAX_ARRAY_LENGTH:
        raise GGUFError(f"{key}: array length {count} exceeds the limit {MAX_ARRAY_LENGTH}")
    if key in EXPECTED_ARRAYS and etype != EXPECTED_ARRAYS[key] and count:
        raise GGUFError(f"{key}: array of type {etype}, expected {EXPECTED_ARRAYS[key]}")
    if etype == STRING:
        if count * 8 > cur.remaining:  # every string costs at least its 8-byte length
            raise GGUFError(f"file truncated in {key}: {count} strings cannot fit in the "
                            f"{cur.remaining} bytes left")
        return [cur.string(f"element of {key}") for _ in range(count)]
    if etype not in _SCALARS:
        raise GGUFError(f"{key}: arrays of value type {etype} are not allowed")
    fmt = _SCALARS[etype][1]
    raw = cur.take(count * struct.calcsize(fmt), f"array {key}")  # checked before allocating
    return np.frombuffer(raw, dtype=np.dtype(fmt)).tolist()


def _read_metadata(cur: _Cursor, n_kv: int) -> tuple[dict[str, Any], dict[str, int]]:
    """→ (key → value, key → declared value type id)."""
    meta: dict[str, Any] = {}
    types: dict[str, int] = {}
    for _ in range(n_kv):
        key = cur.string("metadata key", MAX_KEY_LENGTH)
        if not key:
            raise GGUFError("empty metadata key")
        if key in meta:
            raise GGUFError(f"duplicate metadata key {key!r}")
        types[key] = cur.u32(f"value type of {key}")
        meta[key] = _read_value(cur, types[key], key)
    return meta, types


def _alignment(meta: dict[str, Any], types: dict[str, int]) -> int:
    if "general.alignment" not in meta:
        return DEFAULT_ALIGNMENT
    align = meta["general.alignment"]
    if types["general.alignment"] != UINT32 or not 1 <= align <= MAX_ALIGNMENT \
            or align & (align - 1):
        raise GGUFError(f"general.alignment {align!r} must be a u32 power of two "
                        f"<= {MAX_ALIGNMENT}")
    return align


def _read_tensor_info(cur: _Cursor) -> tuple[str, tuple[int, ...], int, int]:
    name = cur.string("tensor name", MAX_STRING_LENGTH)
    if not 0 < len(name.encode()) < MAX_NAME_LENGTH:
        raise GGUFError(f"tensor name {name[:80]!r} must be 1 to {MAX_NAME_LENGTH - 1} bytes")
    n_dims = cur.u32(f"dimension count of {name}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise GGUFError(f"tensor {name}: {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
    dims = tuple(cur.u64(f"dimensions of {name}") for _ in range(n_dims))
    type_id = cur.u32(f"type of {name}")
    offset = cur.u64(f"offset of {name}")
    return name, dims, type_id, offset


def _check_tensor(name: str, dims: tuple[int, ...], type_id: int, offset: int,
                  alignment: int) -> tuple[str, int]:
    """→ (type name, byte size), or GGUFError."""
    if type_id not in GGML_TYPES:
        raise GGUFError(f"tensor {name}: unknown ggml type id {type_id}")
    t = GGML_TYPES[type_id]
    n = 1
    for d in dims:
        if d < 1:
            raise GGUFError(f"tensor {name}: empty dimension in {list(dims)}")
        n *= d
        if n > MAX_ELEMENTS:
            raise GGUFError(f"tensor {name}: {list(dims)} has too many elements")
    if dims[0] % t.block_size:
        raise GGUFError(f"tensor {name}: row length {dims[0]} is not a multiple of the "
                        f"{t.name} block size {t.block_size}")
    if offset % alignment:
        raise GGUFError(f"tensor {name}: offset {offset} is not aligned to {alignment}")
    return t.name, n // t.block_size * t.type_size


class GGUFFile:
    """An open GGUF file: `metadata` (key → Python value), `tensors` (name → TensorInfo),
    and `tensor(name)` to read one as float32. Use as a context manager; the memory map is
    released on exit."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with self.path.open("rb") as f:
            size = f.seek(0, 2)
            if size == 0:
                raise GGUFError("empty file")
            # ACCESS_COPY: a private mapping torch can view without a read-only warning;
            # nothing is ever written through it
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        try:
            self._parse(self._map)
        except BaseException:
            self.close()
            raise

    def _parse(self, buf: mmap.mmap) -> None:
        cur = _Cursor(buf)
        if cur.take(4, "magic") != MAGIC:
            raise GGUFError("bad magic (not a GGUF file)")
        self.version = cur.u32("version")
        if self.version not in SUPPORTED_VERSIONS:
            raise GGUFError(f"unsupported version {self.version} "
                            f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))})")
        n_tensors, n_kv = cur.u64("tensor count"), cur.u64("metadata count")
        if n_tensors > MAX_TENSORS:
            raise GGUFError(f"tensor count {n_tensors} exceeds the limit {MAX_TENSORS}")
        if n_kv > MAX_KV:
            raise GGUFError(f"metadata count {n_kv} exceeds the limit {MAX_KV}")
        self.metadata, types = _read_metadata(cur, n_kv)
        alignment = _alignment(self.metadata, types)
        infos = [_read_tensor_info(cur) for _ in range(n_tensors)]
        self.data_offset = -(-cur.pos // alignment) * alignment  # align up
        if self.data_offset > len(buf):
            if n_tensors:
                raise GGUFError("file truncated before the tensor data")
            # no tensors (llama.cpp's vocabulary-only ggml-vocab-*.gguf): the file may end
            # before the padding that would precede tensor data; its data section is empty
            self.data_offset = len(buf)
        self.tensors: dict[str, TensorInfo] = {}
        for name, dims, type_id, offset in infos:
            if name in self.tensors:
                raise GGUFError(f"duplicate tensor name {name!r}")
            type_name, nbytes = _check_tensor(name, dims, type_id, offset, alignment)
            begin = self.data_offset + offset
            if begin + nbytes > len(buf):
                raise GGUFError(f"tensor {name}: data [{begin}, {begin + nbytes}) lies past the "
                                f"end of the file ({len(buf)} bytes)")
            self.tensors[name] = TensorInfo(name, dims[::-1], type_name, begin, nbytes)
        by_offset = sorted(self.tensors.values(), key=lambda t: t.offset)
        for a, b in zip(by_offset, by_offset[1:], strict=False):
            if a.offset + a.nbytes > b.offset:
                raise GGUFError(f"tensors {a.name} and {b.name} overlap")

    def raw(self, name: str) -> torch.Tensor:
        """The tensor's bytes as stored, (nbytes,) uint8, copied out of the map. The map's
        pages it read are given back at once: a model's load then holds the file's pages one
        tensor at a time, not the whole file until it closes."""
        import torch  # the header parse needs no torch: the store reads metadata without it

        info = self.tensors[name]
        view = torch.frombuffer(self._map, dtype=torch.uint8, count=info.nbytes,
                                offset=info.offset)
        copy = view.clone()
        self._release(info.offset, info.nbytes)
        return copy

    def _release(self, offset: int, nbytes: int) -> None:
        """Drop the resident pages wholly inside [offset, offset + nbytes): nothing is
        written through the map, so a later read faults them in again from the file."""
        page = mmap.PAGESIZE
        begin, end = -(-offset // page) * page, (offset + nbytes) // page * page
        if end > begin and hasattr(mmap, "MADV_DONTNEED"):  # not on Windows
            self._map.madvise(mmap.MADV_DONTNEED, begin, end - begin)

    def tensor(self, name: str) -> torch.Tensor:
        """The tensor dequantized to float32, shape `tensors[name].shape`."""
        from ollamapy.loading.quants import dequantize

        info = self.tensors[name]
        return dequantize(self.raw(name), info.type_name, info.shape)

    def close(self) -> None:
        if not self._map.closed:
            self._map.close()

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def read_gguf(path: str | Path) -> GGUFFile:
    return GGUFFile(path)
