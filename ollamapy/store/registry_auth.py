"""Bearer tokens from a registry's `WWW-Authenticate` challenge (the docker token protocol).

A registry answers 401 with `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`; the
client asks the realm for a token (`GET realm?service=…&scope=…`, answer `{"token": "…"}`)
and retries with `Authorization: Bearer <token>`. The realm is chosen by the registry, so a
rogue one could point it anywhere: the token request must stay on the registry's own host
and port (CVE-2025-51471, where Ollama sent its signed token to an attacker's realm), must not
downgrade https to http, and is never redirected. Its answer is read to a bounded size.

Tokens are asked for anonymously: Ollama signs this request with the user's ed25519 key for
ollama.com; ollamapy has no such key, so private ollama.com models are out of reach.
"""

from __future__ import annotations

import json
import re
import secrets
import time

import httpx

from ollamapy.store.registry import MAX_SMALL_BODY, RegistryError
from ollamapy.store.registry_body import read_capped

_PARAM = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)=(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))')
UNAUTHORIZED = "unauthorized: access denied"  # Ollama's errUnauthorized


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="x",scope="a,b"` → ("bearer", {"realm": "x", "scope": "a,b"})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for match in _PARAM.finditer(rest):
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
    return scheme.lower(), params


def origin(url: httpx.URL) -> tuple[str, str, int]:
    """(scheme, host, port) with the scheme's default port filled in."""
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.scheme, url.host.lower(), port


def realm_url(challenge: str, registry: httpx.URL) -> httpx.URL:
    """The token URL a challenge asks for, refused unless it is on the registry's host."""
    scheme, params = parse_challenge(challenge)
    if scheme != "bearer" or not params.get("realm"):
        raise RegistryError(UNAUTHORIZED, http_status=401)
    try:
        realm = httpx.URL(params["realm"])
    except httpx.InvalidURL:
        raise RegistryError("unauthorized: invalid auth realm", http_status=401) from None
    want, got = origin(registry), origin(realm) if realm.scheme in ("http", "https") else None
    if got is None or got[1:] != want[1:]:
        raise RegistryError(f"unauthorized: auth realm {realm.scheme}://{realm.netloc.decode()} "
                            f"is not on the registry host {registry.netloc.decode()}",
                            http_status=401)
    if want[0] == "https" and got[0] != "https":
        raise RegistryError("unauthorized: auth realm downgrades https to http", http_status=401)
    query: dict[str, str | list[str]] = {"ts": str(int(time.time())),
                                         "nonce": secrets.token_urlsafe(16)}
    if params.get("service"):
        query["service"] = params["service"]
    if params.get("scope"):
        query["scope"] = params["scope"].split(" ")
    return realm.copy_merge_params(query)


def fetch_token(client: httpx.Client, challenge: str, registry: httpx.URL) -> str:
    """Ask the challenge's realm for a token; raises RegistryError (never follows redirects)."""
    url = realm_url(challenge, registry)
    with client.stream("GET", url, follow_redirects=False) as response:
        body = read_capped(response, MAX_SMALL_BODY, truncate=response.status_code >= 400)
    if response.status_code >= 400:
        text = body.decode("utf-8", "replace").strip()
        raise RegistryError(f"{response.status_code}: {text}" if text else UNAUTHORIZED,
                            http_status=response.status_code)
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        answer = None
    token = (answer.get("token") or answer.get("access_token")) if isinstance(answer, dict) \
        else None
    if not isinstance(token, str) or not token or not token.isprintable():
        raise RegistryError("unauthorized: the auth realm sent no token", http_status=401)
    return token
