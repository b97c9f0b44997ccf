"""A small HTTP client for the Ollama API, used by the `ollamapy` command line.

It talks to `OLLAMA_HOST` (parsed as Ollama's client parses it), streams NDJSON, and turns
`{"error": ...}` answers (a status before the stream, or a final line within it) into
`ClientError`. Local files become blobs the way Ollama's CLI uploads them: sha256 first, a
HEAD to skip what the server has, then the bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from ollamapy.settings import env, parse_host

CHUNK = 1 << 20


class ClientError(Exception):
    def __init__(self, message: str, status: int = -1) -> None:
        super().__init__(message)
        self.status = status


def _error_of(response: httpx.Response) -> ClientError:
    try:
        message = response.json().get("error") or response.text
    except ValueError:
        message = response.text
    return ClientError(message.strip() or f"HTTP {response.status_code}", response.status_code)


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            if progress:
                progress(len(chunk))
    return "sha256:" + h.hexdigest()


class Client:
    def __init__(self, host: str | None = None, timeout: float | None = None) -> None:
        self.base_url = parse_host(host if host is not None else env("OLLAMA_HOST")).url
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None
                ) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.ConnectError:
            raise ClientError(f"could not connect to ollamapy at {self.base_url}: is "
                              "`ollamapy serve` running?") from None
        if response.status_code >= 400:
            raise _error_of(response)
        return response.json() if response.content else {}

    def stream(self, path: str, body: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """POST with stream=true; yields each NDJSON object."""
        try:
            with self._http.stream("POST", path, json={**body, "stream": True}) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_of(response)
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    obj = json.loads(line)
                    if "error" in obj:
                        raise ClientError(obj["error"])
                    yield obj
        except httpx.ConnectError:
            raise ClientError(f"could not connect to ollamapy at {self.base_url}: is "
                              "`ollamapy serve` running?") from None

    def upload_blob(self, path: Path, progress: Callable[[int], None] | None = None) -> str:
        """Make the file a blob on the server; → its digest."""
        digest = sha256_file(path)
        head = self._http.head(f"/api/blobs/{digest}")
        if head.status_code == 200:
            if progress:
                progress(path.stat().st_size)
            return digest

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as f:
                while chunk := f.read(CHUNK):
                    if progress:
                        progress(len(chunk))
                    yield chunk

        response = self._http.post(f"/api/blobs/{digest}", content=chunks())
        if response.status_code >= 400:
            raise _error_of(response)
        return digest
