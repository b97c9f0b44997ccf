"""The store's exceptions: each carries Ollama's message text and the HTTP status it maps to.

The HTTP layer turns any `StoreError` into `{"error": str(e)}` with `e.status`; where Ollama
words one failure differently per endpoint (`model 'x' not found` for show, `model "x" not
found` for copy), the exception keeps the pieces (`.name`) so the handler can word it.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class; `status` is the HTTP status Ollama answers with."""

    status: int = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class InvalidNameError(StoreError, ValueError):
    status = 400

    def __init__(self, raw: str) -> None:
        super().__init__("invalid model name")
        self.raw = raw


class InvalidDigestError(StoreError, ValueError):
    status = 400

    def __init__(self, raw: str) -> None:
        super().__init__("invalid digest format")
        self.raw = raw


class DigestMismatchError(StoreError, ValueError):
    status = 400

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f'digest mismatch, expected "{expected}", got "{got}"')
        self.expected = expected
        self.got = got


class BlobNotFoundError(StoreError, FileNotFoundError):
    def __init__(self, digest: str, status: int | None = None) -> None:
        super().__init__(f'blob "{digest}" not found', status)
        self.digest = digest


class ModelNotFoundError(StoreError, LookupError):
    status = 404

    def __init__(self, name: str) -> None:
        super().__init__(f'model "{name}" not found')
        self.name = name


class ManifestError(StoreError, ValueError):
    """A manifest or config blob that cannot be trusted: bad JSON, bad digest, bad size."""


class ModelfileError(StoreError, ValueError):
    status = 400


class DiskFullError(StoreError):
    """The file system refused a write for want of room (ENOSPC, EDQUOT, EFBIG).

    507 Insufficient Storage where Ollama answers 500 with the raw `write …: no space left on
    device`: the operation left nothing half-written and can simply be retried once there is
    room again, without a restart (Ollama #1731)."""

    status = 507

    def __init__(self, what: str) -> None:
        super().__init__(f"no space left on device while {what}")


class CreateError(StoreError):
    """An /api/create request that cannot be carried out; 400 unless said otherwise."""

    status = 400
