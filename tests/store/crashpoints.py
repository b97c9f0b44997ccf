"""kill -9 at every point where a store operation changes the disk.

    python -m tests.store.crashpoints OP BASE OUT [ARG]

For k = 1, 2, …: copy the store BASE to OUT/k, fork, and let the child run OP on OUT/k with a
hook that sends itself SIGKILL just before its k-th change to the store; stop at the first k
the operation completes without reaching. Each OUT/k is then the disk a crash at that point
leaves behind, for the test to check (tests/store/test_crash_points.py). Prints
`{"points": n}` (OUT/1 … OUT/n were killed; OUT/n+1 completed).

A change is any write-mode open, rename, link, unlink, mkdir, rmdir, chmod or truncate of a
path under the store (Python's audit events, sys.addaudithook), every fsync and pwrite (not
audited, so wrapped), and the points an operation marks itself (`point()`, e.g. between two
chunks of an upload, which is where a client's upload is when the server dies). The killing
child never runs a `finally`, exactly like a process killed from outside.

Run as a fresh process: it forks, and a fresh interpreter has no other thread whose locks a
forked child could inherit held.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from ollamapy.store import Store, create_model, registry_http
from ollamapy.store.registry_pull import pull_model

MAX_POINTS = 500
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PATH_EVENTS = {"os.rename", "os.link", "os.remove", "os.rmdir", "os.mkdir", "os.chmod",
                "os.truncate", "os.utime", "os.symlink"}


class KillAt:
    """Counts the changes under root and SIGKILLs this process just before the k-th."""

    def __init__(self, k: int, root: Path) -> None:
        self.k, self.root, self.seen = k, os.path.realpath(root), 0

    def point(self) -> None:
        self.seen += 1
        if self.seen == self.k:
            os.kill(os.getpid(), signal.SIGKILL)

    def _under_root(self, path: object) -> bool:
        if isinstance(path, int):  # an open descriptor: only ever one of the store's here
            return True
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str | os.PathLike):
            return False
        full = os.path.realpath(os.path.abspath(os.fspath(path)))
        return full == self.root or full.startswith(self.root + os.sep)

    def audit(self, event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writes = (mode is not None and any(c in str(mode) for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS)
            if writes and self._under_root(path):
                self.point()
        elif event in _PATH_EVENTS and args and self._under_root(args[0]):
            self.point()

    def install(self) -> None:
        sys.addaudithook(self.audit)
        for name in ("fsync", "pwrite"):
            real = getattr(os, name)

            def counted(*args, _real=real):
                self.point()
                return _real(*args)

            setattr(os, name, counted)


# -- the operations -------------------------------------------------------------------------

UPLOAD_CHUNKS = 4


def upload(store: Store, arg: str, point: Callable[[], None]) -> None:
    """ARG: a file to upload as a blob, in a few chunks as a client streams it."""
    data = Path(arg).read_bytes()
    writer = store.blobs.writer("sha256:" + hashlib.sha256(data).hexdigest())
    step = -(-len(data) // UPLOAD_CHUNKS)
    for i in range(0, len(data), step):
        writer.write(data[i:i + step])
        writer._file.flush()  # so a kill here leaves the bytes a server would have written
        point()
    writer.commit()


def create(store: Store, arg: str, point: Callable[[], None]) -> None:
    """ARG: `name=digest`: a new model from an uploaded GGUF, with its own system layer."""
    name, digest = arg.split("=")
    for _ in create_model(store, name, files={"model.gguf": digest}, system=f"system of {name}",
                          parameters={"temperature": 0.5}):
        pass


def replace(store: Store, arg: str, point: Callable[[], None]) -> None:
    """Re-create the existing model `base` with new layers (the old ones are collected)."""
    for _ in create_model(store, "base", from_="base", system="new system",
                          template="{{ .Prompt }} new"):
        pass


def copy(store: Store, arg: str, point: Callable[[], None]) -> None:
    store.copy("base", "copied")


def delete(store: Store, arg: str, point: Callable[[], None]) -> None:
    store.delete("base")


def pull(store: Store, arg: str, point: Callable[[], None]) -> None:
    """ARG: the model name on a registry stand-in (plain http)."""
    for _ in pull_model(store, arg, insecure=True):
        pass


OPS: dict[str, Callable[[Store, str, Callable[[], None]], None]] = {
    "upload": upload, "create": create, "replace": replace, "copy": copy, "delete": delete,
    "pull": pull,
}


def crash_at(op: str, root: Path, arg: str, k: int) -> int:
    """Run op in a forked child killed before its k-th change; → the child's wait status."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            killer = KillAt(k, root)
            killer.install()
            OPS[op](Store(root), arg, killer.point)
        except BaseException:
            (root.parent / f"{root.name}.error").write_text(traceback.format_exc())
            code = 3
        os._exit(code)
    return os.waitpid(pid, 0)[1]


def main(argv: list[str]) -> int:
    op, base, out = argv[0], Path(argv[1]), Path(argv[2])
    arg = argv[3] if len(argv) > 3 else ""
    registry_http._tls()  # built once here rather than in every child
    for k in range(1, MAX_POINTS + 1):
        root = out / str(k)
        shutil.copytree(base, root, symlinks=True)
        status = crash_at(op, root, arg, k)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            continue
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            print(json.dumps({"points": k - 1}))
            return 0
        print(json.dumps({"points": k - 1, "failed_at": k}))
        return 1
    print(json.dumps({"points": MAX_POINTS, "unfinished": True}))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
