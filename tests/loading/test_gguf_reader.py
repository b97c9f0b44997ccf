"""The GGUF reader on well-formed files (checked against gguf-py) and on malformed ones: each
corruption raises a clear `GGUFError` quickly and allocates no more than the file's size
(the failure modes of llama.cpp's tests/test-gguf.cpp and ../shared/reference/hardening.md §5)."""

from __future__ import annotations

import struct
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from ollamapy.loading.gguf import GGUFError, read_gguf
from tests.steps import counted_calls, hang_guard

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, \
    11, 12
F32_T, F16_T, Q4_0_T = 0, 1, 2


def s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def tensor_info(name: str, dims: list[int], ggml_type: int, offset: int) -> bytes:
    return (s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
            + struct.pack("<I", ggml_type) + struct.pack("<Q", offset))


@dataclass
class Spec:
    """A small valid GGUF, field by field, so a test can break exactly one thing."""

    magic: bytes = b"GGUF"
    version: int = 3
    n_tensors: int | None = None  # None: the real count
    n_kv: int | None = None
    kvs: list[bytes] = field(default_factory=lambda: [
        kv("general.architecture", STR, s("llama")),
        kv("llama.block_count", U32, struct.pack("<I", 2)),
        kv("tokenizer.ggml.tokens", ARR, struct.pack("<IQ", STR, 3) + s("a") + s("b") + s("c")),
        kv("tokenizer.ggml.scores", ARR, struct.pack("<IQ", F32, 3) + struct.pack("<3f", 0, -1, 2)),
        kv("general.flag", BOOL, b"\x01"),
    ])
    # weight: 64 f32 values (256 bytes) at offset 0; q: one Q4_0 row of 32 (18 bytes) at 256
    tensors: list[bytes] = field(default_factory=lambda: [
        tensor_info("weight", [16, 4], F32_T, 0), tensor_info("q", [32], Q4_0_T, 256)])
    alignment: int = 32
    data: bytes = field(default_factory=lambda: (
        np.arange(64, dtype=np.float32).tobytes()
        + struct.pack("<e", 0.5) + bytes(range(16))))

    def build(self) -> bytes:
        n_tensors = len(self.tensors) if self.n_tensors is None else self.n_tensors
        n_kv = len(self.kvs) if self.n_kv is None else self.n_kv
        head = (self.magic + struct.pack("<IQQ", self.version, n_tensors, n_kv)
                + b"".join(self.kvs) + b"".join(self.tensors))
        pad = -len(head) % self.alignment
        return head + b"\0" * pad + self.data


def write(tmp_path: Path, spec: Spec | bytes, name: str = "m.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(spec if isinstance(spec, bytes) else spec.build())
    return path


def test_valid_file_reads_like_gguf_py(tmp_path: Path) -> None:
    path = write(tmp_path, Spec())
    ref = gguf.GGUFReader(path)
    with read_gguf(path) as f:
        assert f.version == 3
        assert f.metadata == {"general.architecture": "llama", "llama.block_count": 2,
                              "tokenizer.ggml.tokens": ["a", "b", "c"],
                              "tokenizer.ggml.scores": [0.0, -1.0, 2.0], "general.flag": True}
        assert set(f.tensors) == {t.name for t in ref.tensors} == {"weight", "q"}
        w = f.tensor("weight")
        assert tuple(w.shape) == (4, 16) and w.flatten().tolist() == list(range(64))
        for t in ref.tensors:
            assert f.tensors[t.name].shape == tuple(int(d) for d in reversed(t.shape))
            assert f.tensors[t.name].offset == t.data_offset
        q = f.tensor("q")  # d = 0.5; byte j holds weights j (low nibble) and j + 16 (high)
        assert q.tolist() == [0.5 * (j - 8) for j in range(16)] + [-4.0] * 16


def finish(w: gguf.GGUFWriter) -> None:
    """gguf-py's writer: header, metadata, tensors, in that order, then close."""
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_file_written_by_gguf_py_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "w.gguf"
    w = gguf.GGUFWriter(str(path), "qwen3")
    w.add_uint64("x.u64", 2**40)
    w.add_int8("x.i8", -3)
    w.add_float64("x.f64", 0.25)
    w.add_array("x.ints", [1, 2, 3])
    w.add_string("x.text", "héllo ✓")
    a = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    w.add_tensor("a", a)
    w.add_tensor("b", a.astype(np.float16))
    finish(w)
    with read_gguf(path) as f:
        assert f.metadata["general.architecture"] == "qwen3"
        assert f.metadata["x.u64"] == 2**40 and f.metadata["x.i8"] == -3
        assert f.metadata["x.f64"] == 0.25 and f.metadata["x.ints"] == [1, 2, 3]
        assert f.metadata["x.text"] == "héllo ✓"
        assert np.array_equal(f.tensor("a").numpy(), a)
        assert np.array_equal(f.tensor("b").numpy(), a.astype(np.float16).astype(np.float32))



def mapped_rss_kb(path: Path) -> int:
    """Resident KiB of every mapping of `path` in this process (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1].isdigit() or line[:1] in "abcdef":  # a mapping's header line
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's smaps")
def test_reading_a_tensor_gives_its_pages_back(tmp_path: Path) -> None:
    """A load reads every tensor once and keeps its own copy: the map's pages are dropped as
    each is read (so a model's load does not also hold the whole file), and a second read
    still gives the same bytes."""
    path = tmp_path / "big.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    tensors = {f"t{i}": np.random.default_rng(i).standard_normal((256, 1024)).astype(np.float32)
               for i in range(8)}  # 1 MiB each
    for name, a in tensors.items():
        w.add_tensor(name, a)
    finish(w)
    with read_gguf(path) as f:
        for name, a in tensors.items():
            assert np.array_equal(f.raw(name).view(torch.float32).numpy().reshape(a.shape), a)
        assert mapped_rss_kb(path) < 1024  # of 8 MiB read: at most the partial edge pages
        for name, a in tensors.items():  # read again: faulted in from the file, unchanged
            assert np.array_equal(f.tensor(name).numpy(), a)

def big(n: int) -> bytes:
    return struct.pack("<Q", n)


def _corrupt(**changes) -> Spec:
    spec = Spec()
    for k, v in changes.items():
        setattr(spec, k, v)
    return spec


def _with_kv(extra: bytes) -> Spec:
    spec = Spec()
    spec.kvs = [*spec.kvs, extra]
    return spec


def _with_tensor(info: bytes) -> Spec:
    spec = Spec()
    spec.tensors = [*spec.tensors, info]
    return spec


MALFORMED: dict[str, tuple[Spec, str]] = {
    "bad magic": (_corrupt(magic=b"GGML"), "bad magic"),
    "version 0": (_corrupt(version=0), "unsupported version 0"),
    "version 1": (_corrupt(version=1), "unsupported version 1"),
    "future version": (_corrupt(version=4), "unsupported version 4"),
    "big-endian version": (_corrupt(version=3 << 24), "unsupported version"),
    "huge tensor count": (_corrupt(n_tensors=2**63), "tensor count"),
    "huge kv count": (_corrupt(n_kv=2**64 - 1), "metadata count"),
    # the parser reads on into the tensor infos as if they were keys, until something breaks
    "kv count past the end": (_corrupt(n_kv=60_000), "truncated|exceeds the limit|unknown"),
    "huge key length": (_with_kv(big(2**63) + b"x"), "string length"),
    "key longer than the file": (_with_kv(big(50_000) + b"x"), "truncated"),
    "empty key": (_with_kv(kv("", U8, b"\0")), "empty metadata key"),
    "duplicate key": (_with_kv(kv("llama.block_count", U32, struct.pack("<I", 3))), "duplicate"),
    "unknown value type": (_with_kv(kv("x", 13, b"\0" * 8)), "unknown value type 13"),
    "huge string value": (_with_kv(kv("x", STR, big(2**62))), "string length"),
    "huge array": (_with_kv(kv("x", ARR, struct.pack("<IQ", U8, 2**62))), "array length"),
    "array longer than the file": (_with_kv(kv("x", ARR, struct.pack("<IQ", U32, 10**7))),
                                   "truncated"),
    "string array longer than the file": (
        _with_kv(kv("x", ARR, struct.pack("<IQ", STR, 10**7))), "strings cannot fit"),
    "nested array": (_with_kv(kv("x", ARR, struct.pack("<IQ", ARR, 1) + struct.pack("<IQ", U8, 0))),
                     "not allowed"),
    "unknown array type": (_with_kv(kv("x", ARR, struct.pack("<IQ", 99, 1))), "not allowed"),
    "scores of the wrong type": (
        _with_kv(kv("tokenizer.ggml.token_type", ARR, struct.pack("<IQ", I8, 2) + b"\1\1")),
        "expected"),
    "alignment not a power of two": (
        _with_kv(kv("general.alignment", U32, struct.pack("<I", 48))), "alignment"),
    "alignment zero": (_with_kv(kv("general.alignment", U32, struct.pack("<I", 0))), "alignment"),
    "alignment huge": (_with_kv(kv("general.alignment", U32, struct.pack("<I", 2**31))),
                       "alignment"),
    "alignment of the wrong type": (
        _with_kv(kv("general.alignment", U64, struct.pack("<Q", 32))), "alignment"),
    "empty tensor name": (_with_tensor(tensor_info("", [32], F32_T, 512)), "tensor name"),
    "long tensor name": (_with_tensor(tensor_info("n" * 64, [32], F32_T, 512)), "tensor name"),
    "too many dims": (_with_tensor(tensor_info("t", [1, 1, 1, 1, 1], F32_T, 512)), "dimensions"),
    "zero dims": (_with_tensor(tensor_info("t", [], F32_T, 512)), "dimensions"),
    "huge dim count": (_with_tensor(s("t") + struct.pack("<I", 2**32 - 1)), "dimensions"),
    "empty dimension": (_with_tensor(tensor_info("t", [32, 0], F32_T, 512)), "empty dimension"),
    "element count overflow": (
        _with_tensor(tensor_info("t", [2**32, 2**32, 2**32], F32_T, 512)), "too many elements"),
    "wrap-around dims": (  # a uint64 product would wrap to 4 elements (gguf-py issue #25378)
        _with_tensor(tensor_info("t", [4194305, 4194305, 211106198978564], F32_T, 512)),
        "too many elements"),
    "unknown tensor type": (_with_tensor(tensor_info("t", [32], 99, 512)), "unknown ggml type"),
    "row not a block multiple": (_with_tensor(tensor_info("t", [33], Q4_0_T, 512)), "block size"),
    "offset past the end": (_with_tensor(tensor_info("t", [32], F32_T, 2**40)), "past the end"),
    "offset wraps": (_with_tensor(tensor_info("t", [32], F32_T, 2**64 - 32)), "past the end"),
    "misaligned offset": (_with_tensor(tensor_info("t", [8], F32_T, 300)), "not aligned"),
    "overlapping tensors": (_with_tensor(tensor_info("t", [8], F32_T, 224)), "overlap"),
    "duplicate tensor name": (_with_tensor(tensor_info("weight", [8], F32_T, 288)), "duplicate"),
    "data shorter than a tensor": (_corrupt(data=b"\0" * 100), "past the end"),
}


def assert_refused_cheaply(path: Path, match: str) -> None:
    """GGUFError naming the reason, after work linear in the file's size (counted in calls,
    not timed: ~450 at most for these ~650-byte files; a loop over a count the file cannot
    hold makes far more), allocating at most the file's size. The 10 s guard (a refusal takes
    milliseconds) only ends a read that would never return."""
    size = path.stat().st_size
    tracemalloc.start()
    try:
        with hang_guard(10, "read_gguf"), counted_calls() as calls, \
                pytest.raises(GGUFError, match=match):
            read_gguf(path)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert calls.count <= 2 * size + 1000, f"{calls.count} calls for a {size}-byte file"
    assert peak <= size + 64 * 1024, f"allocated {peak} bytes for a {size}-byte file"


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_file_is_refused(case: str, tmp_path: Path) -> None:
    spec, match = MALFORMED[case]
    assert_refused_cheaply(write(tmp_path, spec), match)


def test_every_truncation_is_refused(tmp_path: Path) -> None:
    """Cut the valid file at every byte: header, metadata, tensor infos, padding, data."""
    whole = Spec().build()
    with read_gguf(write(tmp_path, whole, "whole.gguf")):
        pass
    for n in range(len(whole)):
        path = write(tmp_path, whole[:n], "cut.gguf")
        with pytest.raises(GGUFError, match="truncated|past the end|empty file"):
            read_gguf(path)


def test_a_file_without_tensors_may_end_before_the_data_padding(tmp_path: Path) -> None:
    """llama.cpp's vocabulary-only files (models/ggml-vocab-*.gguf) stop right after the
    metadata; with no tensors there is no data section to pad to."""
    spec = Spec(tensors=[], data=b"")
    spec.kvs.append(kv("general.name", STR, s("vocab")))
    unpadded = spec.build().rstrip(b"\0")  # the last value ends in "b"
    assert len(unpadded) % 32
    with read_gguf(write(tmp_path, unpadded, "vocab-only.gguf")) as f:
        assert f.tensors == {} and f.metadata["general.architecture"] == "llama"
        assert f.data_offset == len(unpadded)


def test_a_huge_real_count_in_a_tiny_file_is_refused_before_allocating(tmp_path: Path) -> None:
    # the 43-byte file of llama.cpp PR #27188: an array claiming 2^63 elements
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + kv("a", ARR, struct.pack("<IQ", U8, 2**63))
    assert_refused_cheaply(write(tmp_path, data), "array length")


def test_not_a_gguf_at_all(tmp_path: Path) -> None:
    assert_refused_cheaply(write(tmp_path, b"hello world, this is text"), "bad magic")
    with pytest.raises(GGUFError, match="empty file"):
        read_gguf(write(tmp_path, b""))
