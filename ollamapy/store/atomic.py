"""Crash-safe file writes: temp file → fsync → rename → fsync the directory.

Ollama writes manifests in place (`os.Create` + encode), so a crash leaves a truncated manifest
and users see `bad manifest … EOF` (hardening.md §2). Here a final path only ever appears by
`os.replace` of a complete, fsynced temp file in the same directory, so a reader sees the old
file or the new one, never half of one. Temp files carry a recognizable prefix that no valid
blob or name part can start with, so files left by a killed writer are found and removed at
start-up (`is_temp_name`). A write refused for want of room becomes `DiskFullError`
(`no_space_is_an_error`), so every writer reports a full disk the same way.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ollamapy.store.errors import DiskFullError

TEMP_PREFIX = ".tmp-"
FILE_MODE = 0o644  # what Ollama gives blobs; mkstemp's 0o600 would hide them from other users
# a full disk, a full quota, and RLIMIT_FSIZE (how a test or an admin caps one process)
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextlib.contextmanager
def no_space_is_an_error(what: str) -> Iterator[None]:
    """Turn an OSError that means "no room" into DiskFullError(what); others pass through."""
    try:
        yield
    except OSError as e:
        if e.errno in NO_SPACE:
            raise DiskFullError(what) from e
        raise


def is_temp_name(name: str) -> bool:
    return name.startswith(TEMP_PREFIX)


def create_temp(directory: Path) -> tuple[int, Path]:
    """An open file descriptor and the path of a fresh temp file in directory."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX)
    return fd, Path(path)


def fsync_dir(directory: Path) -> None:
    """Make a rename in directory durable; not every platform can open a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish(temp: Path, final: Path) -> None:
    """Rename a complete, fsynced temp file to its final name (replacing any old one)."""
    os.chmod(temp, FILE_MODE)
    os.replace(temp, final)
    fsync_dir(final.parent)


def write_atomic(path: Path, data: bytes, what: str = "writing a file") -> None:
    with no_space_is_an_error(what):
        fd, temp = create_temp(path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            publish(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise
