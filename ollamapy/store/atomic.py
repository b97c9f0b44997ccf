"""Crash-safe file writes: temp file → fsync → rename → fsync the directory.

Ollama writes manifests in place (`os.Create` + encode), so a crash leaves a truncated manifest
and users see `bad manifest … EOF` (hardening.md §2). Here a final path only ever appears by
`os.replace` of a complete, fsynced temp file in the same directory, so a reader sees the old
file or the new one, never half of one. Temp files carry a recognizable prefix that no valid
blob or name part can start with, so files left by a killed writer are found and removed at
start-up (`is_temp_name`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

TEMP_PREFIX = ".tmp-"
FILE_MODE = 0o644  # what Ollama gives blobs; mkstemp's 0o600 would hide them from other users


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


def write_atomic(path: Path, data: bytes) -> None:
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
