"""The registry client's small pieces on their own: names → endpoints, challenge parsing, the
realm rule, the download plan, and partial files that cannot be trusted."""

from __future__ import annotations

import httpx
import pytest

from ollamapy.store import InvalidNameError, Store
from ollamapy.store.registry import RegistryError, resolve
from ollamapy.store.registry_auth import parse_challenge, realm_url
from ollamapy.store.registry_partial import MAX_PARTS, MIN_PART, Part, PartialBlob, plan


@pytest.mark.parametrize(("raw", "insecure", "url"), [
    ("llama3.2", False, "https://registry.ollama.ai/v2/library/llama3.2/manifests/latest"),
    ("user/m:7b", False, "https://registry.ollama.ai/v2/user/m/manifests/7b"),
    ("127.0.0.1:5000/library/smollm2:135m", True,
     "http://127.0.0.1:5000/v2/library/smollm2/manifests/135m"),
    ("127.0.0.1:5000/library/smollm2:135m", False,
     "https://127.0.0.1:5000/v2/library/smollm2/manifests/135m"),
    ("http://reg.example:8080/ns/m:t", True, "http://reg.example:8080/v2/ns/m/manifests/t"),
    ("https://reg.example/ns/m:t", True, "https://reg.example/v2/ns/m/manifests/t"),
])
def test_names_name_their_registry(raw: str, insecure: bool, url: str) -> None:
    name, endpoint = resolve(raw, insecure)
    assert endpoint.manifest_url() == url
    assert endpoint.blob_url("sha256:" + "a" * 64).endswith("/blobs/sha256:" + "a" * 64)
    assert "://" not in str(name)


def test_plain_http_needs_insecure_and_other_schemes_name_nothing() -> None:
    with pytest.raises(RegistryError, match="^insecure protocol http$"):
        resolve("http://reg.example/ns/m:t", False)
    for raw in ("ftp://reg.example/ns/m:t", "file://x/ns/m:t", "../x", ""):
        with pytest.raises(InvalidNameError):
            resolve(raw, True)


def test_challenges_are_parsed_with_quoted_commas() -> None:
    scheme, params = parse_challenge('Bearer realm="https://r.io/token",service="r.io",'
                                     'scope="repository:a/b:pull,push",error="x\\"y"')
    assert scheme == "bearer"
    assert params == {"realm": "https://r.io/token", "service": "r.io",
                      "scope": "repository:a/b:pull,push", "error": 'x"y'}


@pytest.mark.parametrize(("realm", "ok"), [
    ("https://r.io/token", True), ("https://r.io:443/v2/token", True),
    ("https://R.IO/token", True), ("https://r.io:444/token", False),
    ("https://evil.io/token", False), ("https://r.io.evil.io/token", False),
    ("http://r.io/token", False), ("file:///etc/passwd", False), ("//r.io/x", False),
])
def test_the_realm_must_be_the_registrys_own_host(realm: str, ok: bool) -> None:
    challenge = f'Bearer realm="{realm}",service="r.io",scope="repository:a/b:pull"'
    if ok:
        url = realm_url(challenge, httpx.URL("https://r.io"))
        assert url.params.get("service") == "r.io" and url.params.get("scope") == \
            "repository:a/b:pull" and url.params.get("nonce")
    else:
        with pytest.raises(RegistryError, match="^unauthorized: "):
            realm_url(challenge, httpx.URL("https://r.io"))


def test_basic_challenges_are_unauthorized() -> None:
    with pytest.raises(RegistryError, match="^unauthorized: access denied$"):
        realm_url('Basic realm="registry"', httpx.URL("https://r.io"))


@pytest.mark.parametrize("size", [0, 1, MIN_PART - 1, MIN_PART, 3 * MIN_PART + 7,
                                  100 * MIN_PART])
def test_the_plan_tiles_the_blob(size: int) -> None:
    parts = plan(size)
    assert sum(p.size for p in parts) == size
    assert [p.offset for p in parts] == [sum(q.size for q in parts[:i]) for i in range(len(parts))]
    assert len(parts) <= MAX_PARTS and all(p.size >= min(size, MIN_PART) for p in parts)


def test_partial_files_that_do_not_fit_are_started_over(store: Store) -> None:
    digest = "sha256:" + "c" * 64
    blob = PartialBlob(store.blobs, digest, 100)
    parts = blob.prepare()
    assert [(p.offset, p.size, p.completed) for p in parts] == [(0, 100, 0)]
    assert blob.data.stat().st_size == 100 and blob.completed() == 0
    parts[0].completed = 40
    blob.record(parts[0])
    assert blob.completed() == 40 and blob.prepare()[0].completed == 40  # resumable

    blob.record_path(0).write_text('{"N": 0, "Offset": 0, "Size": 100, "Completed": 400}')
    assert blob.read_parts() is None  # more than the part: not trusted
    blob.record(Part(0, 0, 100, 40))
    blob.record(Part(1, 60, 40, 0))  # overlaps part 0
    assert blob.read_parts() is None
    blob.record_path(1).unlink()
    blob.data.write_bytes(b"short")  # data file of the wrong size
    assert blob.read_parts() is None
    assert blob.prepare()[0].completed == 0  # started over
    blob.discard()
    assert list(store.blobs.root.iterdir()) == []
