"""The disk invariant of a model store (hardening.md §7), checked after every injected fault:

    every `blobs/sha256-X` hashes to X
    every manifest (`manifests/<host>/<namespace>/<model>/<tag>`) parses, and every blob it
    names exists with the size it declares
    blobs/ holds blobs, partial downloads and, until a restart cleans them, temp files only
    after a restart: no temp file anywhere
    nothing outside the store touched (`Sentinel`)

It reads the files with its own code (hashlib, json, a regex), never the store's, so a bug in
the store cannot hide itself from the check.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

_DIGEST = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")
_BLOB = re.compile(r"sha256-([0-9a-f]{64})")
_PARTIAL = re.compile(r"sha256-[0-9a-f]{64}-partial(-\d+)?")
TEMP_PREFIX = ".tmp-"


def sha256_hex(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def manifests(root: Path) -> dict[str, Path]:
    """Every manifest file of the store, by `host/namespace/model:tag`."""
    found = {}
    for path in sorted((root / "manifests").glob("*/*/*/*")):
        if path.is_file() and not path.name.startswith(TEMP_PREFIX):
            host, namespace, model, tag = path.relative_to(root / "manifests").parts
            found[f"{host}/{namespace}/{model}:{tag}"] = path
    return found


def manifest_blobs(path: Path) -> dict[str, int]:
    """blob file name → declared size, for the config and every layer; AssertionError if the
    file is not a complete manifest."""
    data = path.read_bytes()
    try:
        obj = json.loads(data)
    except ValueError:
        raise AssertionError(f"manifest {path} is not JSON ({len(data)} bytes)") from None
    assert isinstance(obj, dict), f"manifest {path} is not an object"
    entries = [obj.get("config"), *(obj.get("layers") or [])]
    blobs: dict[str, int] = {}
    for entry in entries:
        assert isinstance(entry, dict), f"manifest {path}: {entry!r} is not a layer"
        match = _DIGEST.fullmatch(str(entry.get("digest")))
        assert match, f"manifest {path}: bad digest {entry.get('digest')!r}"
        blobs["sha256-" + match.group(1).lower()] = entry.get("size")
    return blobs


def disk_problems(root: Path, *, restarted: bool = True) -> list[str]:
    """Everything that breaks the invariant (an empty list when it holds)."""
    problems = []
    blobs_dir = root / "blobs"
    blobs = {}
    for path in sorted(blobs_dir.iterdir()) if blobs_dir.exists() else []:
        if _BLOB.fullmatch(path.name):
            blobs[path.name] = path.stat().st_size
            got = sha256_hex(path)
            if "sha256-" + got != path.name:
                problems.append(f"blob {path.name} hashes to {got}")
        elif not (_PARTIAL.fullmatch(path.name) or path.name.startswith(TEMP_PREFIX)):
            problems.append(f"stray file in blobs/: {path.name}")
    for name, path in manifests(root).items():
        try:
            named = manifest_blobs(path)
        except (AssertionError, OSError) as e:
            problems.append(str(e))
            continue
        for blob, size in named.items():
            if blob not in blobs:
                problems.append(f"{name} names the missing blob {blob}")
            elif blobs[blob] != size:
                problems.append(f"{name} declares {blob} with {size} bytes, it has "
                                f"{blobs[blob]}")
    if restarted:
        problems += [f"temp file left after a restart: {p.relative_to(root)}"
                     for p in root.rglob(TEMP_PREFIX + "*")]
    return problems


def assert_disk_invariant(root: Path, *, restarted: bool = True) -> None:
    problems = disk_problems(root, restarted=restarted)
    assert not problems, "disk invariant broken:\n  " + "\n  ".join(problems)


@dataclass
class Sentinel:
    """A directory tree around the store: every file and folder in it, except the store
    itself, must be left exactly as it was (no file created, removed or modified)."""

    top: Path
    store: Path

    def __post_init__(self) -> None:
        (self.top / "sentinel").mkdir(parents=True, exist_ok=True)
        (self.top / "sentinel" / "passwd").write_text("root:x:0:0\n")
        (self.top / "latest").write_text("a file a traversal could overwrite\n")
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, tuple[int, int, int]]:
        out = {}
        for path in self.top.rglob("*"):
            if path == self.store or self.store in path.parents:
                continue
            st = path.lstat()
            out[str(path.relative_to(self.top))] = (st.st_ino, st.st_size, st.st_mtime_ns)
        return out

    def assert_untouched(self) -> None:
        after = self.snapshot()
        changed = sorted(k for k in self.before.keys() | after.keys()
                         if self.before.get(k) != after.get(k))
        assert not changed, f"files outside the store were touched: {changed}"
