"""Bounded reads of a registry's answers: never more bytes in memory than the caller allows.

Ollama read manifests and token answers with `io.ReadAll`, so a rogue registry could send a
gzip bomb and exhaust memory (CVE-2024-12886). Requests here say `Accept-Encoding: identity`
and bodies are read raw; a registry that compresses anyway is decoded here, by hand, with
zlib's `max_length`, so the *decoded* size is what the limit bounds, never the wire size.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import httpx

from ollamapy.store.registry import RegistryError


def _decoder(response: httpx.Response) -> zlib._Decompress | None:
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    raise RegistryError(f"registry answered with an unsupported content encoding {encoding!r}")


def decoded_chunks(response: httpx.Response, limit: int) -> Iterator[bytes]:
    """The body, decoded, chunk by chunk; RegistryError once it passes `limit` bytes."""
    decoder = _decoder(response)
    total = 0
    try:
        for raw in response.iter_raw():
            while raw:
                # max_length 0 would mean "unbounded" to zlib: always ask for at least 1 byte
                data = decoder.decompress(raw, limit + 1 - total) if decoder else raw
                raw = decoder.unconsumed_tail if decoder else b""
                total += len(data)
                if total > limit:
                    raise RegistryError(f"registry answer is larger than {limit} bytes")
                if data:
                    yield data
    except zlib.error as e:
        encoding = response.headers.get("content-encoding")
        raise RegistryError(f"registry answer is not valid {encoding}: {e}") from None


def read_capped(response: httpx.Response, limit: int, *, truncate: bool = False) -> bytes:
    """At most `limit` decoded bytes; more is an error, or (truncate) simply cut off."""
    declared = response.headers.get("content-length", "")
    if (not truncate and declared.isdigit() and int(declared) > limit
            and "content-encoding" not in response.headers):
        raise RegistryError(f"registry answer is larger than {limit} bytes")
    out = bytearray()
    try:
        for chunk in decoded_chunks(response, limit):
            out += chunk
    except RegistryError:
        if not truncate:
            raise
    return bytes(out[:limit])
