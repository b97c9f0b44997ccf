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

Where a registry may live (SSRF). The host part of a model name is a host the server will
connect to, so `/api/pull` is a way to make the server fetch URLs (CVE-2026-5530). The policy:

    refused, always   link-local addresses (169.254.0.0/16, fe80::/10), where cloud metadata
                      services answer (169.254.169.254 hands out credentials), the other
                      metadata addresses in METADATA_ADDRESSES, unspecified and multicast
                      addresses: no registry lives there, and what answers there is what an
                      attacker wants to read
    allowed           public hosts, and loopback and private (LAN) addresses: a registry on
                      localhost or on the LAN (a mirror, `registry:2` in a container) is a
                      normal set-up, and refusing it would break it for no gain on a server
                      that, bound to loopback, is reachable only from this machine

`check_registry_address` applies it to every address a host resolves to, before every request
(the first one and every redirect hop, so a registry cannot bounce the server to the metadata
service either); an IP literal in a model name is refused by `resolve`, before anything
streams. A host whose DNS answer changes between that check and the connection (DNS
rebinding) is not caught: that would need the check inside the connection itself. There is no
switch to allow more: a deployment that must reach such an address should not.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from ollamapy.store.errors import InvalidNameError, StoreError
from ollamapy.store.manifest import MAX_MANIFEST_BYTES
from ollamapy.store.names import Name

MAX_LAYERS = 1024  # Ollama's maxCreateFiles; real models have a handful of layers
MAX_SMALL_BODY = 64 * 1024  # a token answer or an error body
MAX_REDIRECTS = 10  # Go's http.Client default, as Ollama's download resolution uses
# cloud metadata services outside the link-local range: AWS over IPv6, Alibaba Cloud, and
# Azure's wire server
METADATA_ADDRESSES = frozenset(map(ipaddress.ip_address, (
    "fd00:ec2::254", "100.100.100.200", "168.63.129.16")))
__all__ = ["MAX_LAYERS", "MAX_MANIFEST_BYTES", "MAX_REDIRECTS", "MAX_SMALL_BODY", "Endpoint",
           "RegistryError", "check_registry_address", "resolve"]


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


def refused_address(address: str) -> str | None:
    """Why the registry policy refuses an IP address (see the module's docstring), or None."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone ("%eth0")
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_link_local:
        return "a link-local address (where cloud metadata services answer)"
    if ip.is_unspecified or ip.is_multicast:
        return "not a host address"
    return None


def _refuse(host: str, address: str, why: str) -> RegistryError:
    shown = host if host == address else f"{host} ({address})"
    return RegistryError(f"refusing to connect to registry host {shown}: {why}", status=403)


def check_registry_address(host: str, port: int) -> None:
    """Refuse (RegistryError, 403) a host any of whose addresses the policy refuses. A host
    that does not resolve passes: connecting to it fails with the usual error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        why = refused_address(address)
        if why is not None:
            raise _refuse(host, address, why)


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
        raise RegistryError("insecure protocol http", status=400)  # Ollama: 500
    literal = name.host.rsplit(":", 1)[0] if name.host.count(":") == 1 else name.host
    why = refused_address(literal)  # an IP literal is refused before anything streams
    if why is not None:
        raise _refuse(literal, literal, why)
    if not scheme:
        scheme = "http" if insecure else "https"
    return name, Endpoint(scheme, name.host, f"{name.namespace}/{name.model}", name.tag)
