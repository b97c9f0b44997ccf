"""The store against a directory laid out by hand exactly as a real Ollama lays it out."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest

from ollamapy.store import (
    BlobNotFoundError,
    ImageConfig,
    Layer,
    Manifest,
    ModelNotFoundError,
    Name,
    Store,
)
from ollamapy.store.manifest import (
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_LICENSE,
    MEDIA_TYPE_MODEL,
    MEDIA_TYPE_PARAMS,
    MEDIA_TYPE_SYSTEM,
    MEDIA_TYPE_TEMPLATE,
)

TEMPLATE = "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
CONFIG = (b'{"model_format":"gguf","model_family":"llama","model_families":["llama"],'
          b'"model_type":"134.52M","file_type":"Q4_1","architecture":"amd64","os":"linux",'
          b'"rootfs":{"type":"layers","diff_ids":[]}}')


def blob(root: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / f"sha256-{digest}").write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def ollama_model(root: Path, name_path: str, weights: bytes = b"GGUF fake weights",
                 system: bytes = b"You are a pirate.", mtime: int | None = None) -> bytes:
    """Write manifests/<name_path> and its blobs the way Ollama does; returns the manifest."""
    layers = [
        {"mediaType": MEDIA_TYPE_MODEL, **blob(root, weights)},
        {"mediaType": MEDIA_TYPE_TEMPLATE, **blob(root, TEMPLATE.encode())},
        {"mediaType": MEDIA_TYPE_SYSTEM, **blob(root, system)},
        {"mediaType": MEDIA_TYPE_LICENSE, **blob(root, b"Apache 2.0")},
        {"mediaType": MEDIA_TYPE_PARAMS,
         **blob(root, b'{"stop":["\\u003c|im_end|\\u003e"],"temperature":0.6}\n')},
    ]
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": MEDIA_TYPE_CONFIG, **blob(root, CONFIG)}, "layers": layers,
    }, indent=2).encode()  # Ollama's registry serves indented JSON; any formatting must do
    path = root / "manifests" / name_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(manifest)
    if mtime is not None:
        os.utime(path, ns=(mtime, mtime))
    return manifest


def blob_names(root: Path) -> set[str]:
    return {p.name for p in (root / "blobs").iterdir()}


def test_a_real_ollama_directory_is_listed_and_read(tmp_path: Path) -> None:
    manifest = ollama_model(tmp_path, "registry.ollama.ai/library/x/latest", mtime=2 * 10**18)
    ollama_model(tmp_path, "myreg.io:5000/team/y/v1", weights=b"other", mtime=10**18)
    store = Store(tmp_path)

    entries = store.list_models()
    assert [e.name.display_shortest() for e in entries] == ["x:latest",
                                                            "myreg.io:5000/team/y:v1"]
    x = entries[0]
    assert x.digest == hashlib.sha256(manifest).hexdigest()
    assert x.size == sum(layer["size"] for layer in json.loads(manifest)["layers"]) + len(CONFIG)
    assert x.modified_ns == 2 * 10**18 and x.modified_at.year == 2033
    assert (x.config.model_family, x.config.model_type, x.config.file_type) == \
        ("llama", "134.52M", "Q4_1")

    model = store.model("x")
    assert model.model_path == tmp_path / "blobs" / ("sha256-" + hashlib.sha256(
        b"GGUF fake weights").hexdigest())
    assert model.template == TEMPLATE and model.system == "You are a pirate."
    assert model.params == {"stop": ["<|im_end|>"], "temperature": 0.6}
    assert model.licenses == ("Apache 2.0",) and model.messages == ()
    assert model.digest == x.digest and model.format == "gguf" and model.parent_model == ""
    assert model.config.extra["rootfs"] == {"type": "layers", "diff_ids": []}


def test_listing_survives_stray_and_broken_files(tmp_path: Path, caplog) -> None:
    ollama_model(tmp_path, "registry.ollama.ai/library/good/latest")
    manifests = tmp_path / "manifests"
    (manifests / "stray.txt").write_text("x")
    (manifests / "registry.ollama.ai" / "library" / "good" / ".tmp-123").write_text("{")
    (manifests / "registry.ollama.ai" / "library" / "empty").mkdir()
    broken = manifests / "registry.ollama.ai" / "library" / "broken" / "latest"
    broken.parent.mkdir()
    broken.write_bytes(b'{"schemaVersion": 2, "config": {"digest": "sha256:')  # crash-truncated
    evil = manifests / "registry.ollama.ai" / "library" / "evil" / "latest"
    evil.parent.mkdir()
    evil.write_text(json.dumps({"config": {"digest": "sha256:../../../etc/passwd", "size": 1},
                                "layers": []}))
    missing = manifests / "registry.ollama.ai" / "library" / "noconfig" / "latest"
    missing.parent.mkdir()
    missing.write_text(json.dumps({"config": {"digest": "sha256:" + "f" * 64, "size": 1}}))
    (manifests / "bad host!" / "ns" / "m").mkdir(parents=True)
    (manifests / "bad host!" / "ns" / "m" / "t").write_text("{}")

    with caplog.at_level(logging.WARNING):
        names = [e.name.display_shortest() for e in Store(tmp_path).list_models()]
    assert names == ["good:latest"]
    assert "broken" in caplog.text and "evil" in caplog.text and "noconfig" in caplog.text


def test_find_is_case_insensitive_and_keeps_stored_case(tmp_path: Path) -> None:
    ollama_model(tmp_path, "registry.ollama.ai/library/SmolLM2/135M")
    store = Store(tmp_path)
    found = store.find("smollm2:135m")
    assert found is not None and found.parts == ("registry.ollama.ai", "library", "SmolLM2",
                                                 "135M")
    assert store.find(Name.parse("REGISTRY.OLLAMA.AI/LIBRARY/SMOLLM2:135m")) == found
    assert store.find("smollm2") is None  # tag latest does not exist
    assert store.model("SMOLLM2:135m").name == found
    with pytest.raises(ModelNotFoundError) as info:
        store.model("nope")
    assert str(info.value) == 'model "nope" not found' and info.value.status == 404


def test_find_searches_every_spelling_of_a_directory(tmp_path: Path) -> None:
    ollama_model(tmp_path, "registry.ollama.ai/library/Foo/v1")
    ollama_model(tmp_path, "registry.ollama.ai/library/foo/v2")
    store = Store(tmp_path)
    assert store.find("FOO:v1").model == "Foo"
    assert store.find("FOO:v2").model == "foo"


def test_copy_copies_the_manifest_bytes_and_shares_blobs(tmp_path: Path) -> None:
    manifest = ollama_model(tmp_path, "registry.ollama.ai/library/x/latest")
    store = Store(tmp_path)
    before = blob_names(tmp_path)
    assert store.copy("X", "backup/x:saved").display_shortest() == "backup/x:saved"
    copied = tmp_path / "manifests/registry.ollama.ai/backup/x/saved"
    assert copied.read_bytes() == manifest
    assert blob_names(tmp_path) == before
    with pytest.raises(ModelNotFoundError, match='model "nope" not found'):
        store.copy("nope", "y")


def test_copy_onto_an_existing_name_keeps_its_case(tmp_path: Path) -> None:
    ollama_model(tmp_path, "registry.ollama.ai/library/a/latest")
    ollama_model(tmp_path, "registry.ollama.ai/library/B/latest", weights=b"b")
    store = Store(tmp_path)
    assert store.copy("a", "b").model == "B"
    assert [e.name.model for e in store.list_models()].count("B") == 1
    assert not (tmp_path / "manifests/registry.ollama.ai/library/b").exists()


def test_delete_collects_only_unshared_blobs_and_prunes_dirs(tmp_path: Path) -> None:
    ollama_model(tmp_path, "registry.ollama.ai/library/a/latest", system=b"I am a")
    ollama_model(tmp_path, "registry.ollama.ai/team/b/latest", system=b"I am b")
    store = Store(tmp_path)
    a, b = store.model("a"), store.model("team/b")
    shared = a.model_path
    assert shared == b.model_path
    a_system = store.manifest("a").layers_of(MEDIA_TYPE_SYSTEM)[0].digest

    store.delete("A:latest")
    assert store.find("a") is None
    assert shared is not None and shared.exists()  # still used by b
    assert not store.blobs.exists(a_system)
    assert not (tmp_path / "manifests/registry.ollama.ai/library").exists()
    assert (tmp_path / "manifests").is_dir()

    store.delete("team/b")
    assert not shared.exists()
    assert blob_names(tmp_path) == set()
    assert list((tmp_path / "manifests").iterdir()) == []
    with pytest.raises(ModelNotFoundError):
        store.delete("team/b")


def test_delete_keeps_blobs_while_another_manifest_is_unreadable(tmp_path: Path) -> None:
    ollama_model(tmp_path, "registry.ollama.ai/library/a/latest")
    broken = tmp_path / "manifests/registry.ollama.ai/library/broken/latest"
    broken.parent.mkdir(parents=True)
    broken.write_text("{")
    store = Store(tmp_path)
    before = blob_names(tmp_path)
    store.delete("a")
    # the broken manifest might reference any of them: nothing may be collected
    assert blob_names(tmp_path) == before
    store.delete("broken")  # a broken manifest itself can still be deleted
    assert store.find("broken") is None


def test_write_manifest_refuses_missing_blobs(store: Store) -> None:
    config = store.blobs.put_bytes(ImageConfig().to_json())
    m = Manifest(config=Layer(MEDIA_TYPE_CONFIG, config, 1),
                 layers=(Layer(MEDIA_TYPE_MODEL, "sha256:" + "e" * 64, 5),))
    with pytest.raises(BlobNotFoundError):
        store.write_manifest("x", m)
    assert store.find("x") is None


def test_write_manifest_then_read_back(store: Store) -> None:
    config = store.blobs.put_bytes(ImageConfig(model_format="gguf").to_json())
    weights = store.blobs.put_bytes(b"weights")
    m = Manifest(config=Layer(MEDIA_TYPE_CONFIG, config, 10),
                 layers=(Layer(MEDIA_TYPE_MODEL, weights, 7),))
    stored = store.write_manifest("ns/x:t", m)
    assert store.manifest_path(stored).read_bytes() == m.to_json()
    assert store.manifest("NS/X:T") == m


def test_prune_blobs_spares_young_and_referenced_blobs(tmp_path: Path) -> None:
    ollama_model(tmp_path, "registry.ollama.ai/library/a/latest")
    store = Store(tmp_path)
    orphan = store.blobs.put_bytes(b"uploaded, not yet used by a create")
    assert store.prune_blobs(min_age_s=3600) == 0
    assert store.prune_blobs(min_age_s=0) == 1
    assert not store.blobs.exists(orphan)
    assert store.model("a").model_path.exists()


def test_clean_temporary_removes_temp_files_everywhere(tmp_path: Path) -> None:
    ollama_model(tmp_path, "registry.ollama.ai/library/a/latest")
    store = Store(tmp_path)
    (tmp_path / "blobs" / ".tmp-1").write_bytes(b"x")
    (tmp_path / "manifests/registry.ollama.ai/library/a/.tmp-2").write_bytes(b"{")
    assert store.clean_temporary() == 2
    assert not list(tmp_path.rglob(".tmp-*"))
    assert store.find("a") is not None


def test_model_reads_a_corrupt_layer_as_an_error(tmp_path: Path) -> None:
    ollama_model(tmp_path, "registry.ollama.ai/library/a/latest")
    store = Store(tmp_path)
    system = store.manifest("a").layers_of(MEDIA_TYPE_SYSTEM)[0].digest
    store.blobs.path(system).write_bytes(b"tampered")
    with pytest.raises(Exception, match="corrupt"):
        store.model("a")
    assert [e.name.model for e in store.list_models()] == ["a"]  # listing needs no layers
