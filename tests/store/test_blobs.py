"""Digests and blobs: the digest gate, verified streaming uploads, and temp-file hygiene."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from ollamapy.store import DigestMismatchError, InvalidDigestError, Store, parse_digest
from ollamapy.store.digests import blob_filename, digest_from_filename, digest_hex

HEX = hashlib.sha256(b"hello").hexdigest()
DIGEST = "sha256:" + HEX


def temp_files(store: Store) -> list[str]:
    return [p.name for p in store.blobs.root.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("raw", [DIGEST, "sha256-" + HEX, "sha256:" + HEX.upper(),
                                 "sha256-" + HEX.upper()])
def test_parse_digest_accepts_both_separators_and_cases(raw: str) -> None:
    assert parse_digest(raw) == DIGEST
    assert blob_filename(raw) == "sha256-" + HEX
    assert digest_hex(raw) == HEX


@pytest.mark.parametrize("raw", [
    "sha256:../../etc/passwd", "sha256-../../../tmp/pwned", "../" + HEX, "sha256:" + HEX[:-1],
    "sha256:" + HEX + "0", "sha512:" + HEX, "sha256:" + HEX[:-1] + "g", "sha256:" + HEX + "\n",
    " sha256:" + HEX, "sha256:" + HEX[:32] + "\x00" + HEX[33:], "SHA256:" + HEX, HEX,
    "sha256_" + HEX, "sha256:", "", None, 123, "%2e%2e%2f" + HEX,
])
def test_parse_digest_refuses_everything_else(raw: object) -> None:
    with pytest.raises(InvalidDigestError) as info:
        parse_digest(raw)
    assert str(info.value) == "invalid digest format"
    assert info.value.status == 400


def test_digest_from_filename_only_knows_blob_files() -> None:
    assert digest_from_filename("sha256-" + HEX) == DIGEST
    for name in (".tmp-abc", "sha256-" + HEX + "-partial", "sha256-" + HEX + "-partial-0",
                 "sha256:" + HEX, "notes.txt", "sha256-" + HEX.upper()):
        assert digest_from_filename(name) is None


def test_upload_creates_then_finds_it_present(store: Store) -> None:
    writer = store.blobs.writer(DIGEST)
    writer.write(b"hel")
    writer.write(b"lo")
    assert writer.commit() is True
    path = store.blobs.path(DIGEST)
    assert path == store.root / "blobs" / ("sha256-" + HEX)
    assert path.read_bytes() == b"hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert store.blobs.exists(DIGEST) and store.blobs.size(DIGEST) == 5
    mtime = path.stat().st_mtime_ns

    again = store.blobs.writer("sha256-" + HEX.upper())
    again.write(b"hello")
    assert again.commit() is False
    assert path.stat().st_mtime_ns == mtime  # the existing blob was not rewritten
    assert temp_files(store) == []


def test_mismatch_stores_nothing_and_names_both_digests(store: Store) -> None:
    writer = store.blobs.writer(DIGEST)
    writer.write(b"goodbye")
    with pytest.raises(DigestMismatchError) as info:
        writer.commit()
    got = hashlib.sha256(b"goodbye").hexdigest()
    assert str(info.value) == f'digest mismatch, expected "{DIGEST}", got "sha256:{got}"'
    assert info.value.status == 400
    assert not store.blobs.exists(DIGEST)
    assert not store.blobs.path("sha256:" + got).exists()
    assert list(store.blobs.root.iterdir()) == []


def test_mismatch_leaves_an_existing_blob_untouched(store: Store) -> None:
    store.blobs.put_bytes(b"hello")
    writer = store.blobs.writer(DIGEST)
    writer.write(b"evil")
    with pytest.raises(DigestMismatchError):
        writer.commit()
    assert store.blobs.path(DIGEST).read_bytes() == b"hello"
    assert temp_files(store) == []


def test_abort_and_exceptions_remove_the_temp_file(store: Store) -> None:
    writer = store.blobs.writer(DIGEST)
    writer.write(b"hel")
    assert len(temp_files(store)) == 1
    writer.abort()
    assert temp_files(store) == [] and not store.blobs.exists(DIGEST)

    with pytest.raises(RuntimeError), store.blobs.writer(DIGEST) as w:
        w.write(b"hel")
        raise RuntimeError("client went away")
    assert temp_files(store) == [] and not store.blobs.exists(DIGEST)


def test_writer_refuses_a_bad_digest_before_creating_anything(store: Store) -> None:
    with pytest.raises(InvalidDigestError):
        store.blobs.writer("sha256:../../etc/passwd")
    assert list(store.blobs.root.iterdir()) == []


def test_put_and_read_bytes(store: Store) -> None:
    digest = store.blobs.put_bytes(b"hello")
    assert digest == DIGEST
    assert store.blobs.read_bytes(digest, limit=5) == b"hello"
    with pytest.raises(Exception, match="larger than 4 bytes"):
        store.blobs.read_bytes(digest, limit=4)


def test_read_bytes_reports_a_corrupt_blob(store: Store) -> None:
    digest = store.blobs.put_bytes(b"hello")
    path = store.blobs.path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"jello")  # a bit flip on disk
    with pytest.raises(Exception, match="corrupt"):
        store.blobs.read_bytes(digest, limit=100)


def test_clean_temporary_removes_only_temp_files(store: Store) -> None:
    digest = store.blobs.put_bytes(b"hello")
    root = store.blobs.root
    (root / ".tmp-crashed").write_bytes(b"half a blob")
    partial = root / ("sha256-" + "0" * 64 + "-partial")  # a real Ollama's download: not ours
    partial.write_bytes(b"x")
    assert store.blobs.clean_temporary(min_age_s=3600) == 0  # too young
    assert store.blobs.clean_temporary() == 1
    assert sorted(p.name for p in root.iterdir()) == sorted([partial.name, blob_filename(digest)])
    assert list(store.blobs.digests()) == [digest]


def test_remove(store: Store) -> None:
    digest = store.blobs.put_bytes(b"hello")
    assert store.blobs.remove(digest) is True
    assert store.blobs.remove(digest) is False
