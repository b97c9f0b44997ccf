"""Content digests: the one gate through which a digest string may become a file name.

Ollama accepts `sha256:<64 hex>` and `sha256-<64 hex>` in either case
(`^sha256[:-][0-9a-fA-F]{64}$`, ollama:manifest/paths.go). A digest that was never checked
once became a path (CVE-2024-37032: a manifest layer `sha256:../../etc/…` wrote outside the
store), so every digest from a request, a manifest or a registry goes through `parse_digest`
where it is parsed, and only its canonical result is ever turned into `blobs/sha256-<hex>`.
"""

from __future__ import annotations

import hashlib
import re

from ollamapy.store.errors import InvalidDigestError

_DIGEST = re.compile(r"sha256[:-]([0-9a-fA-F]{64})", re.ASCII)
_BLOB_FILE = re.compile(r"sha256-([0-9a-f]{64})", re.ASCII)


def parse_digest(raw: object) -> str:
    """Canonical `sha256:<lowercase hex>`, or InvalidDigestError ("invalid digest format")."""
    match = _DIGEST.fullmatch(raw) if isinstance(raw, str) else None
    if match is None:
        raise InvalidDigestError(str(raw))
    return "sha256:" + match.group(1).lower()


def blob_filename(digest: str) -> str:
    """`sha256-<hex>`: the blob's file name (':' is not portable in file names)."""
    return parse_digest(digest).replace(":", "-", 1)


def digest_from_filename(name: str) -> str | None:
    """The digest a file in blobs/ stands for, or None for temp, partial and stray files."""
    match = _BLOB_FILE.fullmatch(name)
    return "sha256:" + match.group(1) if match else None


def digest_hex(digest: str) -> str:
    """The 64 hex characters (what /api/tags shows as a model's digest)."""
    return parse_digest(digest)[len("sha256:"):]


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
