"""A registry is untrusted (hardening.md §1, §7 items 4–6): a stand-in that lies about bytes,
digests, sizes, realms, redirects and answer sizes, or sends the server to an address where
a cloud metadata service answers, gets an error, and the store keeps nothing it sent: no blob
that does not hash to its name, no file outside the store, no manifest."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import socket
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ollamapy.store import Store
from ollamapy.store import registry_download as download
from ollamapy.store.registry import MAX_LAYERS, RegistryError, refused_address
from ollamapy.store.registry_pull import pull_model
from tests.steps import hang_guard
from tests.store.standin import MANIFEST_TYPE, StandIn, digest_of, manifest_json

MODEL = "application/vnd.ollama.image.model"


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "BACKOFF_S", 0.01)


def pull(store: Store, registry: StandIn, model: str = "m:1") -> list[dict]:
    host = registry.url.removeprefix("http://")
    return list(pull_model(store, f"{host}/library/{model}", insecure=True))


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def assert_nothing_stored(store: Store, digest: str | None = None) -> None:
    """No model, no blob; and of `digest`, not even a partial download."""
    assert store.list_models() == []
    assert list(store.blobs.digests()) == []
    if digest is not None:
        stem = "sha256-" + digest.removeprefix("sha256:")
        assert [p for p in store.blobs.root.iterdir() if p.name.startswith(stem)] == []


def serve_manifest(registry: StandIn, body: bytes, **headers: str) -> None:
    def answer(request: Request) -> Response | None:
        if "/manifests/" in request.url.path:
            return Response(body, headers={"Content-Type": MANIFEST_TYPE, **headers})
        return None

    registry.override = answer


def test_wrong_bytes_are_a_digest_mismatch_and_nothing_is_kept(store: Store,
                                                               registry: StandIn) -> None:
    data = os.urandom(5000)
    registry.add_model("library/m:1", [(MODEL, data)])
    digest = digest_of(data)
    registry.blobs[digest] = os.urandom(5000)  # same size, other bytes
    with pytest.raises(RegistryError) as info:
        pull(store, registry)
    assert str(info.value) == ("digest mismatch, file must be downloaded again: want "
                               f"{digest}, got {digest_of(registry.blobs[digest])}")
    # no blob, and no -partial data or part records of the bad one (the config's complete,
    # correct partial download stays for the next pull)
    assert_nothing_stored(store, digest)


def test_a_config_sharing_a_layers_digest_is_still_verified(store: Store,
                                                            registry: StandIn) -> None:
    """Ollama's TestPullModelDuplicateDigestVerifiesBlob: one digest named twice."""
    data = b'{"model_format":"gguf"}'
    digest = digest_of(data)
    registry.manifests["library/m:1"] = manifest_json((digest, len(data)),
                                                      [(MODEL, digest, len(data))])
    registry.blobs[digest] = b"attacker-controlled-bytes"[:len(data)].ljust(len(data), b"!")
    with pytest.raises(RegistryError, match="^digest mismatch, file must be downloaded again"):
        pull(store, registry)
    assert_nothing_stored(store, digest)


def test_a_shared_digest_redirected_elsewhere_is_still_verified(store: Store, registry: StandIn,
                                                               other: StandIn) -> None:
    """The same with the redirect of Ollama's test: both fetches of the one digest go to
    another host, which sends wrong bytes; digest mismatch, and no blob, partial file or
    manifest is kept."""
    data = b'{"model_format":"gguf"}'
    digest = digest_of(data)
    registry.manifests["library/m:1"] = manifest_json((digest, len(data)),
                                                      [(MODEL, digest, len(data))])
    other.blobs[digest] = b"!" * len(data)

    def to_cdn(request: Request) -> Response | None:
        if "/blobs/" in request.url.path:
            return Response(status_code=307, headers={"Location": f"{other.url}/cdn/{digest}"})
        return None

    registry.override = to_cdn
    with pytest.raises(RegistryError, match="^digest mismatch, file must be downloaded again"):
        pull(store, registry)
    assert other.requests_for("/cdn/")
    assert_nothing_stored(store, digest)


@pytest.mark.parametrize("digest", ["sha256:../../../../tmp/pwned", "sha256:" + "0" * 63,
                                    "../" + "a" * 64, "sha512:" + "a" * 128])
def test_a_manifest_digest_never_becomes_a_path(tmp_path: Path, registry: StandIn,
                                                digest: str) -> None:
    store = Store(tmp_path / "models")
    before = files_under(tmp_path)
    serve_manifest(registry, manifest_json(("sha256:" + "a" * 64, 2), [(MODEL, digest, 5)]))
    with pytest.raises(RegistryError) as info:
        pull(store, registry)
    assert str(info.value) == "pull model manifest: invalid manifest: layer 0 digest: " \
                              "invalid digest format"
    assert [r for r in registry.log if "/blobs/" in r.path] == []  # nothing was fetched
    assert files_under(tmp_path) == before


def test_an_auth_realm_on_another_host_gets_no_request(store: Store, registry: StandIn,
                                                       other: StandIn) -> None:
    registry.add_model("library/m:1", [(MODEL, b"weights")])
    registry.token = "secret"
    registry.realm = f"{other.url}/token"  # same address, other port
    with pytest.raises(RegistryError) as info:
        pull(store, registry)
    assert str(info.value) == (f"pull model manifest: unauthorized: auth realm {other.url} is "
                               f"not on the registry host {registry.url.removeprefix('http://')}")
    assert other.log == []  # the token request never left
    assert_nothing_stored(store)


def test_a_bearer_token_from_the_registrys_own_realm(store: Store, registry: StandIn) -> None:
    registry.add_model("library/m:1", [(MODEL, os.urandom(3000))])
    registry.token = "secret"
    pull(store, registry)
    tokens = registry.requests_for("/token")
    assert tokens and all("service=standin&scope=repository%3Alibrary%2Fm%3Apull" in t.path
                          for t in tokens)
    authorized = [r for r in registry.log if r.headers.get("authorization") == "Bearer secret"]
    assert {r.path.split("/")[-2] for r in authorized} == {"manifests", "blobs"}
    assert len(store.list_models()) == 1


def test_a_blob_redirected_to_a_cdn_is_fetched_without_the_token(store: Store,
                                                                  registry: StandIn,
                                                                  other: StandIn) -> None:
    data = os.urandom(4000)
    registry.add_model("library/m:1", [(MODEL, data)])
    other.blobs.update(registry.blobs)
    registry.token = "secret"

    def to_cdn(request: Request) -> Response | None:
        if "/blobs/" in request.url.path and request.headers.get("authorization"):
            return Response(status_code=307, headers={
                "Location": f"{other.url}/cdn/{request.path_params['digest']}"})
        return None

    registry.override = to_cdn
    pull(store, registry)
    assert store.blobs.path(digest_of(data)).read_bytes() == data
    assert len(other.requests_for("/cdn/")) == 2  # the weights and the config
    assert all("authorization" not in r.headers for r in other.log)


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/x",
                                      "gopher://127.0.0.1:70/x", "data:text/plain,hi"])
def test_a_redirect_to_another_scheme_is_refused(store: Store, registry: StandIn,
                                                 location: str) -> None:
    registry.add_model("library/m:1", [(MODEL, b"weights")])

    def away(request: Request) -> Response | None:
        if "/blobs/" in request.url.path:
            return Response(status_code=302, headers={"Location": location})
        return None

    registry.override = away
    with pytest.raises(RegistryError) as info:
        pull(store, registry)
    assert str(info.value) in (
        f"refusing to follow a redirect to a {location.split(':')[0]} URL: only http and https "
        "are allowed",  # what httpx cannot even parse as a URL is refused as well:
        "registry answered with an invalid URL: For absolute URLs, path must be empty or "
        "begin with '/'")
    assert store.list_models() == [] and list(store.blobs.digests()) == []


def test_redirects_are_bounded(store: Store, registry: StandIn) -> None:
    def loop(request: Request) -> Response | None:
        return Response(status_code=302, headers={"Location": request.url.path})

    registry.override = loop
    with pytest.raises(RegistryError, match="^pull model manifest: stopped after 10 redirects$"):
        pull(store, registry)
    assert len(registry.log) == 11


@pytest.mark.parametrize("how", ["content-length", "chunked", "gzip bomb"])
def test_an_oversize_manifest_is_refused(store: Store, registry: StandIn, how: str) -> None:
    big = b'{"schemaVersion":2,"pad":"' + b" " * (5 << 20) + b'"}'
    if how == "content-length":
        serve_manifest(registry, big)
    elif how == "gzip bomb":  # 256 MiB of spaces in 250 KiB: the decoded bytes are capped
        bomb = gzip.compress(b'{"pad":"' + b" " * (256 << 20), compresslevel=9)
        assert len(bomb) < (256 << 10)
        serve_manifest(registry, bomb, **{"Content-Encoding": "gzip"})
    else:
        def chunked(request: Request) -> Response | None:
            async def body():
                for i in range(0, len(big), 1 << 16):
                    yield big[i:i + (1 << 16)]
            return StreamingResponse(body()) if "/manifests/" in request.url.path else None
        registry.override = chunked
    with hang_guard(120, "the pull"), pytest.raises(
            RegistryError, match="^pull model manifest: registry answer is larger than "
                                 "4194304 bytes$"):
        pull(store, registry)
    assert_nothing_stored(store)


def test_too_many_layers_are_refused(store: Store, registry: StandIn) -> None:
    layers = [(MODEL, "sha256:" + f"{i:064x}", 1) for i in range(MAX_LAYERS + 1)]
    serve_manifest(registry, manifest_json(("sha256:" + "f" * 64, 2), layers))
    with pytest.raises(RegistryError, match=f"^pull model manifest: too many layers "
                                            f"\\({MAX_LAYERS + 1}, at most {MAX_LAYERS}\\)$"):
        pull(store, registry)
    assert [r for r in registry.log if "/blobs/" in r.path] == []


def test_a_manifest_that_is_not_json(store: Store, registry: StandIn) -> None:
    serve_manifest(registry, b"[" * 100000)
    with pytest.raises(RegistryError, match="^pull model manifest: invalid manifest: not JSON"):
        pull(store, registry)


def test_one_digest_with_two_sizes_is_refused(store: Store, registry: StandIn) -> None:
    digest = "sha256:" + "b" * 64
    serve_manifest(registry, manifest_json((digest, 10), [(MODEL, digest, 20)]))
    with pytest.raises(RegistryError, match="is declared with two sizes"):
        pull(store, registry)


def test_reading_stops_at_the_declared_size(store: Store, registry: StandIn) -> None:
    """A blob answer that never ends: exactly the declared bytes are read, then verified."""
    data = os.urandom(3000)
    registry.add_model("library/m:1", [(MODEL, data)])

    def endless(request: Request) -> Response | None:
        if request.url.path.endswith(digest_of(data)):
            async def body():
                yield data
                for _ in range(1024):  # 64 MiB more than declared (no end in sight)
                    await asyncio.sleep(0)
                    yield b"\0" * 65536
            return StreamingResponse(body(), 200)
        return None

    registry.override = endless
    pull(store, registry)
    assert store.blobs.path(digest_of(data)).read_bytes() == data


def test_a_range_answer_must_match_the_declared_size(store: Store, registry: StandIn) -> None:
    data = os.urandom(3000)
    registry.add_model("library/m:1", [(MODEL, data)])
    registry.blobs[digest_of(data)] = data + b"more"  # Content-Range says 3004 in all
    with pytest.raises(RegistryError, match=f"^blob {digest_of(data)} has 3004 bytes but the "
                                            "manifest declares 3000$"):
        pull(store, registry)
    assert store.list_models() == [] and list(store.blobs.digests()) == []


def test_an_encoded_blob_is_refused(store: Store, registry: StandIn) -> None:
    data = os.urandom(3000)
    registry.add_model("library/m:1", [(MODEL, data)])

    def gzipped(request: Request) -> Response | None:
        if request.url.path.endswith(digest_of(data)):
            return Response(gzip.compress(data), 206, headers={
                "Content-Encoding": "gzip", "Content-Range": f"bytes 0-2999/{len(data)}"})
        return None

    registry.override = gzipped
    with pytest.raises(RegistryError, match="encoded as gzip$"):
        pull(store, registry)


def test_a_short_blob_answer_is_retried(store: Store, registry: StandIn) -> None:
    data = os.urandom(300_000)
    registry.add_model("library/m:1", [(MODEL, data)])
    registry.chunk = 50_000
    registry.cut_after = 100_000  # a dropped connection after a third ...
    calls = []

    def heal(request: Request) -> Response | None:
        calls.append(request.headers.get("range"))
        if len(calls) == 2:  # ... and a 503 on the first retry
            registry.cut_after = None
            return Response("try later", 503)
        return None

    registry.override = lambda r: heal(r) if r.url.path.endswith(digest_of(data)) else None
    pull(store, registry)
    assert store.blobs.path(digest_of(data)).read_bytes() == data
    assert calls[0] == "bytes=0-299999" and calls[-1] == "bytes=100000-299999"


def test_registry_errors_in_ollamas_words(store: Store, registry: StandIn) -> None:
    with pytest.raises(RegistryError, match="^pull model manifest: file does not exist$"):
        pull(store, registry, "unknown:1")
    registry.override = lambda r: Response(json.dumps({"errors": ["boom"]}), 500)
    with pytest.raises(RegistryError, match='^pull model manifest: 500: {"errors": \\["boom"\\]}$'):
        pull(store, registry)
    registry.override = lambda r: Response(status_code=401)  # 401 and no challenge
    with pytest.raises(RegistryError, match="^pull model manifest: unauthorized: access denied$"):
        pull(store, registry)


# -- where a registry may live (SSRF, hardening.md §7 item 6) ------------------------------


@pytest.mark.parametrize(("address", "refused"), [
    ("169.254.169.254", True), ("::ffff:169.254.169.254", True), ("fe80::1%eth0", True),
    ("100.100.100.200", True), ("fd00:ec2::254", True), ("168.63.129.16", True),
    ("0.0.0.0", True), ("::", True), ("224.0.0.1", True),
    # allowed by the documented policy: a registry on this machine or the LAN
    ("127.0.0.1", False), ("::1", False), ("10.0.0.1", False), ("192.168.1.10", False),
    ("172.16.0.1", False), ("8.8.8.8", False),
])
def test_the_address_policy(address: str, refused: bool) -> None:
    """Link-local, cloud-metadata, unspecified and multicast addresses are refused (IPv4
    mapped into IPv6 too); loopback, private (LAN) and public ones are allowed, as the policy
    in ollamapy/store/registry.py documents."""
    assert (refused_address(address) is not None) == refused


@pytest.mark.parametrize("host", ["169.254.169.254", "169.254.169.254:80", "100.100.100.200",
                                  "168.63.129.16:32526", "0.0.0.0:5000"])
def test_a_metadata_address_in_the_name_is_refused_before_streaming(store: Store,
                                                                     host: str) -> None:
    """An IP literal the policy refuses is a 403 before the pull's stream starts."""
    for insecure in (False, True):
        with pytest.raises(RegistryError) as info:
            pull_model(store, f"{host}/x/y", insecure=insecure)  # raised before the stream
        assert info.value.status == 403
        assert str(info.value).startswith(
            f"refusing to connect to registry host {host.split(':')[0]}: ")
    assert_nothing_stored(store)


def test_a_host_that_resolves_to_a_metadata_address_is_never_contacted(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The DNS answer is checked before connecting: with the check missing, the connection
    to 169.254.169.254 would fail with another message (or reach the metadata service)."""
    real = socket.getaddrinfo

    def fake_dns(host, port, *args, **kwargs):
        if host == "metadata.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_dns)
    with pytest.raises(RegistryError) as info:
        list(pull_model(store, "metadata.example/x/y", insecure=True))
    assert str(info.value) == (
        "pull model manifest: refusing to connect to registry host metadata.example "
        "(169.254.169.254): a link-local address (where cloud metadata services answer)")
    assert_nothing_stored(store)


def test_a_redirect_to_a_metadata_address_is_refused(
        store: Store, registry: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every redirect hop is checked: a registry cannot bounce the server to 169.254.169.254,
    which is never even connected to (every connection this process opens is recorded)."""
    registry.add_model("library/m:1", [(MODEL, os.urandom(3000))])
    connected: list[object] = []
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: object) -> None:
        connected.append(address)
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)

    def to_metadata(request: Request) -> Response | None:
        if "/blobs/" in request.url.path:
            return Response(status_code=307, headers={
                "Location": "http://169.254.169.254/latest/meta-data/iam/"})
        return None

    registry.override = to_metadata
    with hang_guard(120, "the pull"), pytest.raises(
            RegistryError, match="refusing to connect to registry host 169.254.169.254: a "
                                 "link-local address"):
        pull(store, registry)
    assert connected, "the pull's connections were not recorded"
    assert not [a for a in connected if "169.254.169.254" in str(a)], connected
    assert store.list_models() == [] and list(store.blobs.digests()) == []
