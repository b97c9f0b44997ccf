"""One conversation with a registry: requests with redirects checked by hand, bearer auth,
and the registry's errors in Ollama's words.

httpx is told never to follow redirects by itself: each `Location` is checked here first, so
a registry can redirect a blob to its CDN (another host, as registry.ollama.ai does) but never
to `file:`, `ftp:` or any scheme but http(s), never from https down to http unless the pull is
insecure, and no further than MAX_REDIRECTS hops. Before any request is sent, its host must
pass the registry address policy (`check_registry_address`: never a link-local or cloud
metadata address). The bearer token is sent only to the registry's own origin: a CDN (or
anything a redirect names) never sees it.

Errors (`makeRequestWithRetry` in ollama:server/images.go): 404 → `file does not exist`, 401
after a fresh token → `unauthorized: access denied`, other ≥ 400 → `<code>: <body>` with the
body cut to a few KiB.
"""

from __future__ import annotations

import functools
import ssl
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType

import httpx

from ollamapy import __version__
from ollamapy.store.registry import (
    MAX_REDIRECTS,
    MAX_SMALL_BODY,
    Endpoint,
    RegistryError,
    check_registry_address,
)
from ollamapy.store.registry_auth import UNAUTHORIZED, fetch_token, origin
from ollamapy.store.registry_body import read_capped

USER_AGENT = f"ollamapy/{__version__}"
TIMEOUT = httpx.Timeout(30.0)  # also the stall detector: a read silent this long is retried
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

Body = Callable[[], bytes | Iterable[bytes]]  # called again for every (re)send


@functools.cache
def _tls() -> ssl.SSLContext:
    """httpx's default verifying context, built once: loading the CA bundle costs more than a
    small request, and a pull opens a session per blob. An SSLContext may be shared between
    connections."""
    return httpx.create_ssl_context()


def registry_error(response: httpx.Response) -> RegistryError:
    """A ≥ 400 answer as Ollama words it; the body is read, but only a little of it."""
    status = response.status_code
    if status == 404:
        return RegistryError("file does not exist", http_status=404)
    if status == 401:
        return RegistryError(UNAUTHORIZED, http_status=401)
    try:
        text = read_capped(response, MAX_SMALL_BODY, truncate=True)
    except (RegistryError, httpx.HTTPError):
        text = b""
    message = text[:2048].decode("utf-8", "replace").strip()
    return RegistryError(f"{status}: {message}" if message else str(status), http_status=status)


class Session:
    """A connection pool to one registry and the token it granted; safe to share between the
    threads of one download."""

    def __init__(self, endpoint: Endpoint, *, insecure: bool = False) -> None:
        self.endpoint = endpoint
        self.insecure = insecure
        self.registry = httpx.URL(endpoint.base)
        self._client = httpx.Client(
            verify=_tls(), timeout=TIMEOUT, follow_redirects=False,
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        self._token: str | None = None
        self._token_lock = threading.Lock()
        self._checked: set[tuple[str, int]] = set()  # (host, port) that passed the policy

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @contextmanager
    def open(self, method: str, url: str | httpx.URL, *,
             headers: Mapping[str, str] | None = None, body: Body | None = None,
             allow: Collection[int] = ()) -> Iterator[httpx.Response]:
        """Send a request and yield its streaming response (closed on exit).

        Redirects are followed after `check_redirect`; a 401 from the registry earns one token
        and one retry; an answer ≥ 400 raises RegistryError unless its status is in allow."""
        response = self._send(method, httpx.URL(url), dict(headers or {}), body, allow)
        try:
            yield response
        finally:
            response.close()

    def _send(self, method: str, url: httpx.URL, headers: dict[str, str], body: Body | None,
              allow: Collection[int]) -> httpx.Response:
        token_tried, redirects = False, 0
        while True:
            self._check_address(url)
            own = origin(url) == origin(self.registry)
            sent = dict(headers)
            if own and self._token:
                sent["Authorization"] = f"Bearer {self._token}"
            request = self._client.build_request(method, url, headers=sent,
                                                 content=body() if body else None)
            try:
                response = self._client.send(request, stream=True)
            except httpx.InvalidURL as e:  # httpx parses a Location even when not following it
                raise RegistryError(f"registry answered with an invalid URL: {e}") from None
            status = response.status_code
            if status in _REDIRECTS:
                location = response.headers.get("location", "")
                response.close()
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise RegistryError(f"stopped after {MAX_REDIRECTS} redirects")
                url = self.check_redirect(url, location)
                if status == 303:  # "see other": fetch the answer, do not send again
                    method, body = "GET", None
                continue
            if status == 401 and own and not token_tried:
                challenge = response.headers.get("www-authenticate", "")
                response.close()
                self._refresh_token(challenge)
                token_tried = True
                continue
            if status >= 400 and status not in allow:
                try:
                    raise registry_error(response)
                finally:
                    response.close()
            return response

    def _check_address(self, url: httpx.URL) -> None:
        _, host, port = origin(url)
        if (host, port) not in self._checked:
            check_registry_address(host, port)
            self._checked.add((host, port))

    def check_redirect(self, current: httpx.URL, location: str) -> httpx.URL:
        """The URL a `Location` names, if it may be followed."""
        try:
            target = current.join(location)
        except httpx.InvalidURL:
            raise RegistryError("registry redirected to an invalid URL") from None
        if not location or target.scheme not in ("http", "https") or not target.host:
            raise RegistryError(f"refusing to follow a redirect to a {target.scheme or 'bad'} "
                                "URL: only http and https are allowed")
        if current.scheme == "https" and target.scheme == "http" and not self.insecure:
            raise RegistryError("refusing to follow a redirect from https to http")
        return target

    def _refresh_token(self, challenge: str) -> None:
        old = self._token
        with self._token_lock:
            if self._token == old:  # another thread may have fetched one meanwhile
                self._token = fetch_token(self._client, challenge, self.registry)
