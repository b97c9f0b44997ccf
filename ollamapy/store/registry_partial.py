"""A download in progress on disk, in Ollama's shape, so that an interrupted pull resumes:

    blobs/sha256-<hex>-partial       the data, created at its full (sparse) size
    blobs/sha256-<hex>-partial-<N>   part N: {"N": N, "Offset": …, "Size": …, "Completed": …}

Each part is a byte range fetched by its own request and written at its offset; its
`Completed` count is rewritten (temp file + rename, so never half-written) as bytes land and
only ever lags behind the data, so a resumed part asks for `Range: bytes=<Offset+Completed>-`
and never re-downloads what a record says it has. Parts that do not fit together, or a data
file of the wrong size, are not trusted: the download starts over.

`verify` hashes the whole data file and only a file whose sha256 is the digest is renamed to
`blobs/sha256-<hex>`; a mismatch deletes the partial files. The file names come from
`BlobStore.path`, i.e. from a digest that went through `parse_digest`. These files are not
the store's temp files (`.tmp-…`): start-up cleaning keeps them for the next pull.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ollamapy.store.atomic import create_temp, publish
from ollamapy.store.blobs import BlobStore
from ollamapy.store.registry import BlobMismatchError, RegistryError

MIN_PART = 16 * 1024 * 1024  # smaller parts cost more requests than they save
MAX_PARTS = 4  # a few streams beat one per-connection limit; Ollama uses up to 16 CDN streams
READ_CHUNK = 1 << 20

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def file_lock(final: Path) -> threading.Lock:
    """One lock per blob for the steps that change its partial files as a whole
    (prepare, verify, discard), so two pulls of one blob never trip over each other."""
    with _locks_guard:
        return _locks.setdefault(final, threading.Lock())


@dataclass(slots=True)
class Part:
    n: int
    offset: int
    size: int
    completed: int = 0

    @property
    def done(self) -> bool:
        return self.completed >= self.size

    def to_json(self) -> bytes:
        return json.dumps({"N": self.n, "Offset": self.offset, "Size": self.size,
                           "Completed": self.completed}).encode() + b"\n"


def plan(size: int) -> list[Part]:
    """Up to MAX_PARTS equal ranges of at least MIN_PART bytes (one for a small blob)."""
    if size == 0:
        return []
    n = max(1, min(MAX_PARTS, size // MIN_PART))
    bounds = [size * i // n for i in range(n + 1)]
    return [Part(i, bounds[i], bounds[i + 1] - bounds[i]) for i in range(n)]


class PartialBlob:
    """The partial files of one blob of a declared size."""

    def __init__(self, blobs: BlobStore, digest: str, size: int) -> None:
        self.blobs = blobs
        self.digest = digest
        self.size = size
        self.final = blobs.path(digest)  # parse_digest'ed: never anything but sha256-<hex>
        self.data = self.final.with_name(self.final.name + "-partial")
        self.lock = file_lock(self.final)

    def record_path(self, n: int) -> Path:
        return self.data.with_name(f"{self.data.name}-{n}")

    def _records(self) -> list[Path]:
        prefix = self.data.name + "-"
        return [p for p in self.data.parent.iterdir()
                if p.name.startswith(prefix) and p.name[len(prefix):].isdigit()]

    def read_parts(self) -> list[Part] | None:
        """The recorded parts, if they tile [0, size) exactly over a data file of that size;
        None if anything is missing, unreadable or inconsistent."""
        try:
            if self.data.stat().st_size != self.size:
                return None
            parts = [_read_record(p) for p in self._records()]
        except OSError:
            return None
        if any(p is None for p in parts):
            return None
        ordered = sorted((p for p in parts if p is not None), key=lambda p: p.offset)
        offset = 0
        for i, part in enumerate(ordered):
            if part.n != i or part.offset != offset or not 0 <= part.completed <= part.size:
                return None
            offset += part.size
        return ordered if offset == self.size else None

    def completed(self) -> int:
        """Bytes already on disk by the records (0 when they cannot be trusted)."""
        parts = self.read_parts()
        return sum(p.completed for p in parts) if parts else 0

    def prepare(self) -> list[Part]:
        """The parts to fetch: the recorded ones to resume, or a fresh plan over a fresh
        sparse data file. Call with `lock` held."""
        parts = self.read_parts()
        if parts is not None:
            return parts
        return self.start_over(plan(self.size))

    def start_over(self, parts: list[Part]) -> list[Part]:
        self.discard()
        try:
            with open(self.data, "wb") as f:
                f.truncate(self.size)  # sparse where the file system allows: no double disk use
            for part in parts:
                self.record(part)
        except BaseException:
            self.discard()  # a file too large for the disk or a full one: leave nothing behind
            raise
        return parts

    def record(self, part: Part) -> None:
        """Write part's record atomically: a reader sees the old count or the new one."""
        fd, temp = create_temp(self.data.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(part.to_json())
            os.replace(temp, self.record_path(part.n))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise

    def verify(self, stopped: Callable[[], bool] = lambda: False) -> None:
        """Hash the complete download; publish it as the blob, or delete it and raise
        BlobMismatchError. Call with `lock` held."""
        parts = self.read_parts()
        if parts is None or not all(p.done for p in parts):
            raise RegistryError(f"download of {self.digest} is incomplete; pull again")
        h = hashlib.sha256()
        with open(self.data, "rb") as f:
            while chunk := f.read(READ_CHUNK):
                if stopped():
                    raise RegistryError("pull canceled")
                h.update(chunk)
            os.fsync(f.fileno())
        got = "sha256:" + h.hexdigest()
        if got != self.digest:
            self.discard()
            raise BlobMismatchError(self.digest, got)
        publish(self.data, self.final)
        self.discard()  # the records; the data is the blob now

    def discard(self) -> None:
        for path in [self.data, *self._records()]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _read_record(path: Path) -> Part | None:
    try:
        with open(path, "rb") as f:
            obj = json.loads(f.read(4096))
        part = Part(obj["N"], obj["Offset"], obj["Size"], obj["Completed"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    fields = (part.n, part.offset, part.size, part.completed)
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in fields):
        return None
    if path.name != f"{path.name.rsplit('-', 1)[0]}-{part.n}":
        return None
    return part
