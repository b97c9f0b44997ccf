"""The registry client's shared vocabulary: where a model name lives, and what may go wrong.

Pulling and pushing speak the distribution protocol (`/v2/`, reference §8.6) to the host a
model name starts with (`registry.ollama.ai` by default):

    registry.py           names → endpoints, RegistryError, the limits below
    registry_auth.py      `WWW-Authenticate: Bearer` → token (realm on the registry's own host)
    registry_body.py      bounded reads of answers (decoded bytes counted, gzip bombs refused)
    registry_http.py      one registry conversation: redirects, auth, bounded bodies, errors
    registry_partial.py   a download's `-partial` files on disk: resume, verify, publish
    registry_download.py  parallel ranged downloads of one blob, shared by concurrent pulls
    registry_pull.py      /api/pull as a progress stream
    registry_push.py      /api/push as a progress stream

A registry is untrusted: whatever it sends is bounded (manifest bytes, layer count, token and
error bodies, decoded bytes of compressed answers), checked (every digest through
`parse_digest` before it names a file; blob sizes and `Content-Range` against the manifest;
sha256 before a blob becomes visible) and never followed anywhere but http(s).
"""

from __future__ import annotations

from dataclasses import dataclass

from ollamapy.store.errors import InvalidNameError, StoreError
from ollamapy.store.manifest import MAX_MANIFEST_BYTES
from ollamapy.store.names import Name

MAX_LAYERS = 1024  # Ollama's maxCreateFiles; real models have a handful of layers
MAX_SMALL_BODY = 64 * 1024  # a token answer or an error body
MAX_REDIRECTS = 10  # Go's http.Client default, as Ollama's download resolution uses
__all__ = ["MAX_LAYERS", "MAX_MANIFEST_BYTES", "MAX_REDIRECTS", "MAX_SMALL_BODY", "Endpoint",
           "RegistryError", "resolve"]


class RegistryError(StoreError):
    """A pull or push that failed; `http_status` is the registry's answer, when there was one."""

    def __init__(self, message: str, status: int | None = None,
                 http_status: int | None = None) -> None:
        super().__init__(message, status)
        self.http_status = http_status


class BlobMismatchError(RegistryError):
    """Downloaded bytes that do not hash to their digest (Ollama's errDigestMismatch text)."""

    def __init__(self, want: str, got: str) -> None:
        super().__init__(f"digest mismatch, file must be downloaded again: want {want}, "
                         f"got {got}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one model name lives: `<scheme>://<host>/v2/<namespace>/<model>/…`."""

    scheme: str  # "https", or "http" when the request said insecure
    host: str  # host[:port], exactly as the name has it
    repository: str  # "namespace/model"
    tag: str

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host}"

    def manifest_url(self) -> str:
        return f"{self.base}/v2/{self.repository}/manifests/{self.tag}"

    def blob_url(self, digest: str) -> str:
        return f"{self.base}/v2/{self.repository}/blobs/{digest}"

    def uploads_url(self) -> str:
        return f"{self.base}/v2/{self.repository}/blobs/uploads/"


def resolve(raw: str, insecure: bool) -> tuple[Name, Endpoint]:
    """A user's model name → its stored name and its registry endpoint.

    https unless the request is insecure (then http, as Ollama's makeRequest forces it); a
    name that spells out `http://` needs insecure (`insecure protocol http`), one that spells
    out `https://` stays https either way, and no other scheme names a registry."""
    if not isinstance(raw, str):
        raise InvalidNameError(str(raw))
    name = Name.parse(raw)  # InvalidNameError: 400 "invalid model name"
    scheme = raw.split("://", 1)[0].lower() if "://" in raw else ""
    if scheme not in ("", "http", "https"):
        raise InvalidNameError(raw)
    if scheme == "http" and not insecure:
        raise RegistryError("insecure protocol http")
    if not scheme:
        scheme = "http" if insecure else "https"
    return name, Endpoint(scheme, name.host, f"{name.namespace}/{name.model}", name.tag)
