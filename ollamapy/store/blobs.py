"""Content-addressed blobs: `blobs/sha256-<hex>`, written only after their bytes hash to the name.

An upload streams into a temp file in the blobs directory while it is hashed; `commit()`
compares the hash with the digest the client promised, and only a match is fsynced and
published under its final name. A mismatch leaves nothing behind (an existing blob of that
name is never touched), and a blob already present is kept as it is (Ollama answers 200
instead of 201). A full disk raises `DiskFullError` and, like any failure, leaves no temp
file. Paths come only from `parse_digest`'s canonical form.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from ollamapy.store.atomic import (
    FILE_MODE,
    create_temp,
    fsync_dir,
    is_temp_name,
    no_space_is_an_error,
    publish,
)
from ollamapy.store.digests import blob_filename, digest_from_filename, digest_of, parse_digest
from ollamapy.store.errors import BlobNotFoundError, DigestMismatchError, StoreError


class BlobWriter:
    """One upload in progress: `write` any number of chunks, then `commit` or `abort`."""

    def __init__(self, blobs: BlobStore, expected: str) -> None:
        self.expected = parse_digest(expected)
        self.size = 0
        self._final = blobs.path(self.expected)
        self._what = f"writing blob {self.expected}"
        with no_space_is_an_error(self._what):
            fd, self._temp = create_temp(blobs.root)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._open = True

    def write(self, chunk: bytes) -> None:
        if not self._open:
            raise StoreError("write to a finished blob writer")
        try:
            with no_space_is_an_error(self._what):
                self._file.write(chunk)
        except BaseException:
            self._discard()  # give the room back at once; the upload is lost anyway
            raise
        self._hash.update(chunk)
        self.size += len(chunk)

    def commit(self) -> bool:
        """Verify and publish: True if the blob is new, False if it was already stored."""
        if not self._open:
            raise StoreError("commit of a finished blob writer")
        try:
            with no_space_is_an_error(self._what):
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                got = "sha256:" + self._hash.hexdigest()
                if got != self.expected:
                    raise DigestMismatchError(self.expected, got)
                return self._publish()
        finally:
            self._discard()

    def _publish(self) -> bool:
        os.chmod(self._temp, FILE_MODE)
        try:
            # a hard link never replaces: of two concurrent uploads exactly one creates the blob
            os.link(self._temp, self._final)
        except FileExistsError:
            return False
        except OSError:
            # file systems without hard links: fall back to rename (the content is identical)
            if self._final.exists():
                return False
            publish(self._temp, self._final)
            return True
        fsync_dir(self._final.parent)
        return True

    def abort(self) -> None:
        if self._open:
            self._discard()

    def _discard(self) -> None:
        self._open = False
        # closing flushes what is buffered, which fails again on a full disk; the descriptor
        # is closed all the same and the bytes are unwanted: the temp file must still go
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._temp.unlink()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.abort()


class BlobStore:
    """The `blobs/` directory of a model store."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.root / blob_filename(digest)

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFoundError(parse_digest(digest)) from None

    def writer(self, expected_digest: str) -> BlobWriter:
        return BlobWriter(self, expected_digest)

    def put_bytes(self, data: bytes) -> str:
        """Store a small blob (template, params json, …) and return its digest."""
        digest = digest_of(data)
        with self.writer(digest) as w:
            w.write(data)
            w.commit()
        return digest

    def read_bytes(self, digest: str, limit: int) -> bytes:
        """A small blob's bytes, re-hashed so a corrupt blob is reported rather than used."""
        digest = parse_digest(digest)
        try:
            with self.path(digest).open("rb") as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            raise BlobNotFoundError(digest) from None
        if len(data) > limit:
            raise StoreError(f"blob {digest} is larger than {limit} bytes")
        if digest_of(data) != digest:
            raise StoreError(f"blob {digest} is corrupt: its content does not match its digest")
        return data

    def remove(self, digest: str) -> bool:
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def digests(self) -> Iterator[str]:
        """Every stored blob's digest; temp files, partial downloads and strays are skipped."""
        for entry in self.root.iterdir():
            digest = digest_from_filename(entry.name)
            if digest is not None and entry.is_file():
                yield digest

    def clean_temporary(self, min_age_s: float = 0.0) -> int:
        """Remove temp files left by a crashed writer; returns how many went.

        `min_age_s` spares files a live writer in another process may still be filling."""
        now, removed = time.time(), 0
        for entry in self.root.iterdir():
            if not is_temp_name(entry.name):
                continue
            with contextlib.suppress(FileNotFoundError):
                if now - entry.lstat().st_mtime >= min_age_s:
                    entry.unlink()
                    removed += 1
        return removed
