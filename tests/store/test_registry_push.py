"""Pushing to a registry stand-in: Ollama's progress stream, the distribution upload sequence
(HEAD → POST → PUT ?digest=, manifest last), skipped blobs, and the same limits on where a
registry may send the client (upload locations, auth realms) as for pulls."""

from __future__ import annotations

import os

import pytest
from starlette.requests import Request
from starlette.responses import Response

from ollamapy.store import ModelNotFoundError, Store, create_model
from ollamapy.store.registry import RegistryError
from ollamapy.store.registry_pull import pull_model
from ollamapy.store.registry_push import push_model
from tests.store.conftest import write_gguf
from tests.store.standin import MANIFEST_TYPE, StandIn


@pytest.fixture
def model(store: Store, registry: StandIn, tmp_path) -> str:
    """A small model stored under the stand-in's name."""
    gguf = store.blobs.put_bytes(write_gguf(tmp_path / "tiny.gguf").read_bytes())
    name = f"{registry.url.removeprefix('http://')}/library/tiny:v1"
    list(create_model(store, name, files={"tiny.gguf": gguf}, system="Be brief."))
    return name


def test_push_uploads_every_blob_then_the_manifest(store: Store, registry: StandIn,
                                                   model: str, tmp_path) -> None:
    progress = list(push_model(store, model, insecure=True))
    manifest = store.manifest(model)
    statuses = [p["status"] for p in progress]
    assert statuses[0] == "retrieving manifest"
    assert statuses[-2:] == ["pushing manifest", "success"]
    assert list(dict.fromkeys(s for s in statuses if s.startswith("pushing "))) == [
        *(f"pushing {x.digest[7:19]}" for x in (*manifest.layers, manifest.config)),
        "pushing manifest"]
    for p in progress:
        if "digest" in p:
            assert p["total"] == store.blobs.size(p["digest"]) and p.get("completed") != 0

    # distribution's sequence: HEAD (absent) → POST → PUT <location>&digest=, manifest last
    first = manifest.layers[0].digest
    assert [(r.method, r.path.split("?")[0]) for r in registry.log[:2]] == [
        ("HEAD", f"/v2/library/tiny/blobs/{first}"), ("POST", "/v2/library/tiny/blobs/uploads/")]
    assert (registry.log[-1].method, registry.log[-1].path) == (
        "PUT", "/v2/library/tiny/manifests/v1")
    put = registry.log[2]
    assert put.method == "PUT"
    assert put.path.startswith("/uploads/") and "_state=opaque&digest=sha256%3A" in put.path
    assert registry.log[-1].headers["content-type"] == MANIFEST_TYPE
    assert registry.manifests["library/tiny:v1"] == manifest.to_json()
    assert set(registry.blobs) == manifest.digests

    # a second push finds every blob there: nothing is uploaded again
    registry.log.clear()
    again = list(push_model(store, model, insecure=True))
    assert [p["completed"] == p["total"] for p in again if "digest" in p] == [True] * 3
    assert {r.method for r in registry.log} == {"HEAD", "PUT"}  # HEADs, then the manifest

    # and what was pushed pulls back as the same model
    elsewhere = Store(tmp_path / "elsewhere")
    list(pull_model(elsewhere, model, insecure=True))
    assert elsewhere.manifest(model) == manifest
    assert elsewhere.model(model).system == "Be brief."


def test_push_of_a_model_that_is_not_there(store: Store, registry: StandIn) -> None:
    stream = push_model(store, f"{registry.url.removeprefix('http://')}/library/x:1",
                        insecure=True)
    assert next(stream) == {"status": "retrieving manifest"}
    assert next(stream) == {"status": "couldn't retrieve manifest"}
    with pytest.raises(ModelNotFoundError):
        next(stream)
    assert registry.log == []


def test_push_needs_insecure_for_http(store: Store, model: str) -> None:
    with pytest.raises(RegistryError, match="^insecure protocol http$"):
        push_model(store, f"http://{model}")


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/upload"])
def test_an_upload_location_of_another_scheme_is_refused(store: Store, registry: StandIn,
                                                         model: str, location: str) -> None:
    def elsewhere(request: Request) -> Response | None:
        if request.method == "POST":
            return Response(status_code=202, headers={"Location": location})
        return None

    registry.override = elsewhere
    with pytest.raises(RegistryError, match="^refusing to follow a redirect to a"):
        list(push_model(store, model, insecure=True))
    assert registry.manifests == {}


def test_a_push_realm_on_another_host_gets_no_request(store: Store, registry: StandIn,
                                                      other: StandIn, model: str) -> None:
    registry.token = "secret"
    registry.realm = f"{other.url}/token"
    with pytest.raises(RegistryError, match="^unauthorized: auth realm .* is not on the "
                                            "registry host"):
        list(push_model(store, model, insecure=True))
    assert other.log == [] and registry.manifests == {}


def test_push_with_a_bearer_token(store: Store, registry: StandIn, model: str) -> None:
    registry.token = "secret"
    list(push_model(store, model, insecure=True))
    assert "library/tiny:v1" in registry.manifests
    v2 = [r for r in registry.log if r.path.startswith("/v2/") and r.method != "GET"]
    assert all(r.headers.get("authorization") == "Bearer secret" for r in v2
               if r is not registry.log[0])


def test_a_blob_that_changed_on_disk_is_not_pushed(store: Store, registry: StandIn,
                                                   model: str) -> None:
    layer = store.manifest(model).layers[0]
    with store.blobs.path(layer.digest).open("ab") as f:
        f.write(os.urandom(10))
    with pytest.raises(Exception, match="the local model is damaged"):
        list(push_model(store, model, insecure=True))
    assert registry.manifests == {}
