"""The model store under `OLLAMA_MODELS`, laid out exactly as Ollama lays it out (§8.2):

    manifests/<host>/<namespace>/<model>/<tag>    one JSON manifest per model name
    blobs/sha256-<hex>                             content-addressed layers

so a directory filled by a real Ollama is listed, read and served as it is. Names are matched
case-insensitively and keep the case they were stored with. Manifests are published
atomically (temp → fsync → rename), and a manifest that cannot be read is skipped with a
warning, never allowed to break a listing. Deleting a model removes the blobs no other
manifest references; if any manifest is unreadable that garbage collection is skipped, since
its references are unknown. `verify` re-hashes every blob and checks every manifest, on
request only.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ollamapy.store.atomic import is_temp_name, write_atomic
from ollamapy.store.blobs import BlobStore
from ollamapy.store.digests import digest_of
from ollamapy.store.errors import (
    BlobNotFoundError,
    InvalidNameError,
    ManifestError,
    ModelNotFoundError,
    StoreError,
)
from ollamapy.store.manifest import MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, ImageConfig, Manifest
from ollamapy.store.model import Model
from ollamapy.store.names import Name, parse_name

log = logging.getLogger(__name__)

NAME_MAX = 255  # bytes in a file name, at most, on ext4, xfs, btrfs, tmpfs


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One line of `/api/tags`."""

    name: Name  # as stored on disk
    manifest: Manifest
    digest: str  # sha256 hex of the manifest file's bytes
    size: int  # every layer plus the config
    modified_ns: int  # the manifest file's mtime
    config: ImageConfig

    @property
    def modified_at(self) -> datetime:
        return datetime.fromtimestamp(self.modified_ns / 1e9).astimezone()


class Store:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.manifests_dir = self.root / "manifests"
        self.manifests_dir.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(self.root / "blobs")
        # held while blobs are garbage-collected and while a create picks layers and writes its
        # manifest, so a delete in another thread cannot remove a blob a create just reused
        self.lock = threading.RLock()

    # -- names and paths -------------------------------------------------------------------

    def manifest_path(self, name: Name) -> Path:
        # defence in depth: the name grammar already rules out every part that could escape
        if any(part in ("", ".", "..") or "/" in part or os.sep in part or "\0" in part
               for part in name.parts):
            raise InvalidNameError(str(name))
        # the grammar allows a 350-character host, but no file system a directory name that
        # long: such a name is refused (400) rather than failing the write (500)
        if any(len(os.fsencode(part)) > NAME_MAX for part in name.parts):
            raise InvalidNameError(str(name))
        path = self.manifests_dir.joinpath(*name.parts)
        base = os.path.normpath(self.manifests_dir)
        if os.path.commonpath([base, os.path.normpath(path)]) != base:
            raise InvalidNameError(str(name))
        return path

    def _stored(self) -> Iterator[tuple[Name, Path]]:
        """Every manifest file whose four path parts form a valid name (`manifests/*/*/*/*`)."""
        for host in _subdirs(self.manifests_dir):
            for namespace in _subdirs(host):
                for model in _subdirs(namespace):
                    for tag in _entries(model):
                        if is_temp_name(tag.name) or not tag.is_file():
                            continue
                        try:
                            name = Name(host.name, namespace.name, model.name, tag.name)
                        except InvalidNameError:
                            log.debug("ignoring stray file in the model store: %s", tag)
                            continue
                        yield name, tag

    def find(self, name: Name | str) -> Name | None:
        """The stored name matching `name` case-insensitively, in its stored case, or None."""
        wanted = parse_name(name)
        found = _find_parts(self.manifests_dir, list(wanted.parts))
        if found is None:
            return None
        try:
            return Name(*found)
        except InvalidNameError:
            return None

    def _resolve(self, name: Name | str) -> Name:
        parsed = parse_name(name)
        stored = self.find(parsed)
        if stored is None:
            # Ollama quotes the name as the client wrote it
            raise ModelNotFoundError(name if isinstance(name, str) else parsed.display_shortest())
        return stored

    # -- reading ---------------------------------------------------------------------------

    def _read_manifest(self, name: Name) -> tuple[Manifest, bytes, int]:
        path = self.manifest_path(name)
        try:
            with path.open("rb") as f:
                data = f.read(MAX_MANIFEST_BYTES + 1)
                mtime_ns = os.fstat(f.fileno()).st_mtime_ns
        except FileNotFoundError:
            raise ModelNotFoundError(name.display_shortest()) from None
        return Manifest.parse(data), data, mtime_ns

    def manifest(self, name: Name | str) -> Manifest:
        return self._read_manifest(self._resolve(name))[0]

    def config(self, manifest: Manifest) -> ImageConfig:
        return ImageConfig.parse(self.blobs.read_bytes(manifest.config.digest, MAX_CONFIG_BYTES))

    def list_models(self) -> list[ModelEntry]:
        """Every readable model, newest first; unreadable ones are logged and skipped."""
        entries = []
        for name, _ in self._stored():
            try:
                manifest, data, mtime_ns = self._read_manifest(name)
                config = self.config(manifest)
            except (StoreError, OSError) as e:
                log.warning("skipping bad manifest %s: %s", name, e)
                continue
            entries.append(ModelEntry(name, manifest, digest_of(data).removeprefix("sha256:"),
                                      manifest.size, mtime_ns, config))
        entries.sort(key=lambda e: e.modified_ns, reverse=True)
        return entries

    def model(self, name: Name | str) -> Model:
        """Everything a runner and /api/show need to know about one model."""
        stored = self._resolve(name)
        manifest, data, mtime_ns = self._read_manifest(stored)
        return Model.from_manifest(stored, manifest, digest_of(data).removeprefix("sha256:"),
                                   mtime_ns, self.config(manifest), self.blobs)

    # -- writing ---------------------------------------------------------------------------

    def write_manifest(self, name: Name | str, manifest: Manifest) -> Name:
        """Publish a manifest atomically; returns the name it was stored under (an existing
        model's stored case wins, as in Ollama)."""
        parsed = parse_name(name)
        with self.lock:
            for digest in sorted(manifest.digests):
                # a manifest must never point at a blob that is not there
                if not self.blobs.exists(digest):
                    raise BlobNotFoundError(digest)
            stored = self.find(parsed) or parsed
            write_atomic(self.manifest_path(stored), manifest.to_json(),
                         f"writing the manifest of {stored.display_shortest()}")
        return stored

    def copy(self, src: Name | str, dst: Name | str) -> Name:
        """Copy the manifest file byte for byte (the blobs are shared); returns dst as stored."""
        target = parse_name(dst)
        with self.lock:
            source = self._resolve(src)
            _, data, _ = self._read_manifest(source)
            stored = self.find(target) or target
            write_atomic(self.manifest_path(stored), data,
                         f"writing the manifest of {stored.display_shortest()}")
        return stored

    def delete(self, name: Name | str) -> Name:
        """Remove a model's manifest, prune empty directories, and delete the blobs that no
        remaining manifest references; returns the name as it was stored."""
        with self.lock:
            stored = self._resolve(name)
            try:
                manifest: Manifest | None = self._read_manifest(stored)[0]
            except ManifestError as e:
                log.warning("deleting unreadable manifest %s (%s); its blobs are kept", stored, e)
                manifest = None
            path = self.manifest_path(stored)
            path.unlink()
            self._prune_empty_dirs(path.parent)
            if manifest is not None:
                self.remove_unreferenced(manifest.digests)
        return stored

    def _prune_empty_dirs(self, directory: Path) -> None:
        while directory != self.manifests_dir and self.manifests_dir in directory.parents:
            try:
                directory.rmdir()
            except OSError:  # not empty (or already gone): stop climbing
                return
            directory = directory.parent

    # -- garbage -------------------------------------------------------------------------

    def referenced_digests(self) -> frozenset[str] | None:
        """Digests of every blob some manifest references, or None if a manifest is unreadable
        (then nothing may be collected)."""
        referenced: set[str] = set()
        for name, _ in self._stored():
            try:
                referenced |= self._read_manifest(name)[0].digests
            except (StoreError, OSError) as e:
                log.warning("bad manifest %s (%s): skipping blob garbage collection", name, e)
                return None
        return frozenset(referenced)

    def remove_unreferenced(self, candidates: Iterable[str]) -> int:
        """Delete those of `candidates` that no manifest references; returns how many went."""
        with self.lock:
            referenced = self.referenced_digests()
            if referenced is None:
                return 0
            return sum(self.blobs.remove(d) for d in set(candidates) - referenced)

    def prune_blobs(self, min_age_s: float = 3600.0) -> int:
        """Start-up pruning (Ollama's PruneLayers): delete unreferenced blobs older than
        min_age_s; the grace period spares uploads a create has not referenced yet."""
        with self.lock:
            referenced = self.referenced_digests()
            if referenced is None:
                return 0
            now, removed = time.time(), 0
            for digest in list(self.blobs.digests()):
                if digest in referenced:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if now - self.blobs.path(digest).stat().st_mtime >= min_age_s:
                        removed += self.blobs.remove(digest)
            return removed

    def verify(self) -> list[str]:
        """Check the whole store, one line per problem (none: healthy): a blob whose bytes do
        not hash to its name (a truncated or bit-flipped file), a manifest that cannot be
        read, a manifest naming a missing blob. Reads every byte, so it runs only when asked;
        loading a model does not re-hash its weights (nor does Ollama)."""
        problems = []
        for digest in sorted(self.blobs.digests()):
            h = hashlib.sha256()
            try:
                with self.blobs.path(digest).open("rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
            except OSError as e:
                problems.append(f"blob {digest} cannot be read: {e}")
                continue
            if "sha256:" + h.hexdigest() != digest:
                problems.append(f"blob {digest} is corrupt: its content hashes to "
                                f"sha256:{h.hexdigest()}")
        for name, _ in self._stored():
            try:
                manifest = self._read_manifest(name)[0]
            except (StoreError, OSError) as e:
                problems.append(f"manifest {name.display_shortest()} is unreadable: {e}")
                continue
            problems += [f"manifest {name.display_shortest()} names the missing blob {digest}"
                         for digest in sorted(manifest.digests) if not self.blobs.exists(digest)]
        return problems

    def clean_temporary(self, min_age_s: float = 0.0) -> int:
        """Start-up cleaning: remove temp files a crashed writer left in blobs/ and manifests/."""
        removed = self.blobs.clean_temporary(min_age_s)
        now = time.time()
        for directory, _, files in os.walk(self.manifests_dir):
            for file in files:
                if not is_temp_name(file):
                    continue
                path = Path(directory, file)
                with contextlib.suppress(FileNotFoundError):
                    if now - path.lstat().st_mtime >= min_age_s:
                        path.unlink()
                        removed += 1
        return removed


def _entries(directory: Path) -> list[Path]:
    try:
        return sorted(directory.iterdir())
    except (NotADirectoryError, FileNotFoundError, PermissionError):
        return []


def _subdirs(directory: Path) -> list[Path]:
    return [p for p in _entries(directory) if p.is_dir()]


def _find_parts(directory: Path, parts: list[str]) -> list[str] | None:
    """Walk one path part per level, the exact spelling first, then case-insensitive matches
    (several spellings of one directory may exist on a case-sensitive file system)."""
    if not parts:
        return [] if directory.is_file() else None
    part, rest = parts[0], parts[1:]
    names = [p.name for p in _entries(directory)]
    candidates = [n for n in names if n == part] + [
        n for n in names if n != part and n.lower() == part.lower()]
    for candidate in candidates:
        found = _find_parts(directory / candidate, rest)
        if found is not None:
            return [candidate, *found]
    return None
