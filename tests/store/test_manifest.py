"""Manifests and the config blob: round trips, Go-identical bytes, and hostile input."""

from __future__ import annotations

import json

import pytest

from ollamapy.store import ImageConfig, Layer, Manifest, ManifestError
from ollamapy.store.goformat import (
    format_go_syntax,
    format_value,
    json_bytes,
    json_float,
    json_line,
    quote,
)
from ollamapy.store.manifest import (
    MAX_MANIFEST_BYTES,
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_MODEL,
    MEDIA_TYPE_TENSOR,
    is_relative_file_path,
)

A, B, C = ("sha256:" + c * 64 for c in "abc")


def manifest_dict(**layer_changes: object) -> dict:
    layer = {"mediaType": MEDIA_TYPE_MODEL, "digest": B, "size": 10, **layer_changes}
    return {"schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": MEDIA_TYPE_CONFIG, "digest": A, "size": 3},
            "layers": [layer]}


def test_round_trip_and_go_encoding() -> None:
    m = Manifest(config=Layer(MEDIA_TYPE_CONFIG, A, 3),
                 layers=(Layer(MEDIA_TYPE_MODEL, B, 10, from_="base:latest"),
                         Layer(MEDIA_TYPE_TENSOR, C, 7, name="1_Pooling/config.json")))
    data = m.to_json()
    # what Go's json.Encoder writes: compact, struct field order, omitempty, trailing newline
    assert data == (
        b'{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
        b'"config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"'
        + A.encode() + b'","size":3},"layers":[{"mediaType":"application/vnd.ollama.image.model",'
        b'"digest":"' + B.encode() + b'","size":10,"from":"base:latest"},{"mediaType":'
        b'"application/vnd.ollama.image.tensor","digest":"' + C.encode()
        + b'","size":7,"name":"1_Pooling/config.json"}]}\n')
    assert Manifest.parse(data) == m
    assert m.size == 20 and m.digests == {A, B, C}


def test_parse_ignores_unknown_keys_and_canonicalizes_digests() -> None:
    raw = manifest_dict(digest="sha256-" + "B" * 64, extra=1)
    raw["annotations"] = {"x": "y"}
    m = Manifest.parse(json.dumps(raw).encode())
    assert m.layers[0].digest == "sha256:" + "b" * 64


@pytest.mark.parametrize("digest", ["sha256:../../etc/passwd", "../../../tmp/pwned",
                                    "sha256:" + "a" * 63, None, 5, ""])
def test_parse_refuses_a_traversal_digest(digest: object) -> None:
    with pytest.raises(ManifestError, match="invalid digest format"):
        Manifest.parse(json.dumps(manifest_dict(digest=digest)).encode())
    bad_config = manifest_dict()
    bad_config["config"]["digest"] = digest
    with pytest.raises(ManifestError, match="config digest"):
        Manifest.parse(json.dumps(bad_config).encode())


@pytest.mark.parametrize("size", [-1, 1.5, "10", True, None, 2**64])
def test_parse_refuses_bad_sizes(size: object) -> None:
    with pytest.raises(ManifestError, match="non-negative integer"):
        Manifest.parse(json.dumps(manifest_dict(size=size)).encode())


@pytest.mark.parametrize("name", ["../x", "/abs", "a/../../b", "a//b", ".", "C:x", "a\\b"])
def test_parse_refuses_layer_names_that_escape(name: str) -> None:
    with pytest.raises(ManifestError, match="not a relative path"):
        Manifest.parse(json.dumps(manifest_dict(name=name)).encode())


@pytest.mark.parametrize("data", [
    b"", b"not json", b"[]", b'"x"', b"null", b'{"layers": {}}', b'{"config": []}',
    b'{"schemaVersion": "2", "config": {}}', b"[" * 100_000 + b"]" * 100_000,
])
def test_parse_refuses_malformed_manifests(data: bytes) -> None:
    with pytest.raises(ManifestError):
        Manifest.parse(data)


def test_parse_caps_the_manifest_size() -> None:
    raw = manifest_dict()
    raw["padding"] = "x" * MAX_MANIFEST_BYTES
    with pytest.raises(ManifestError, match="larger than"):
        Manifest.parse(json.dumps(raw).encode())


def test_relative_file_paths() -> None:
    for ok in ("config.json", "1_Pooling/config.json", ".gitattributes", "a/b/c.safetensors"):
        assert is_relative_file_path(ok)
    for bad in ("", ".", "..", "../x", "/x", "x/", "a//b", "a/./b", "a\\b", "c:x", "a\nb"):
        assert not is_relative_file_path(bad)


def test_config_round_trip_keeps_unknown_keys() -> None:
    # an older Ollama's config blob, with rootfs and a key we have never heard of
    data = (b'{"model_format":"gguf","model_family":"llama","model_families":["llama"],'
            b'"model_type":"8.0B","file_type":"Q4_0","architecture":"amd64","os":"linux",'
            b'"rootfs":{"type":"layers","diff_ids":["sha256:' + b"a" * 64 + b'"]},'
            b'"future":42}\n')
    config = ImageConfig.parse(data)
    assert (config.model_family, config.model_type, config.file_type) == ("llama", "8.0B", "Q4_0")
    assert config.model_families == ("llama",)
    assert config.extra["rootfs"]["type"] == "layers" and config.extra["future"] == 42
    assert config.to_json() == data


def test_config_omits_empty_optional_fields_like_go() -> None:
    config = ImageConfig(model_format="gguf", model_family="bert", model_families=("bert",),
                         model_type="22.71M", file_type="F32", capabilities=("embedding",))
    assert config.to_json() == (
        b'{"model_format":"gguf","model_family":"bert","model_families":["bert"],'
        b'"model_type":"22.71M","file_type":"F32","capabilities":["embedding"],'
        b'"architecture":"amd64","os":"linux"}\n')


def test_config_tolerates_nulls_and_wrong_types() -> None:
    config = ImageConfig.parse(b'{"model_families":null,"context_length":"big","os":"linux"}')
    assert config.model_families == () and config.context_length == 0


def test_go_json_encoding() -> None:
    assert json_line({"stop": ["<|im_end|>", "a&b"], "temperature": 0.7}) == \
        b'{"stop":["\\u003c|im_end|\\u003e","a\\u0026b"],"temperature":0.7}\n'
    assert json_bytes([1.0, 1e21, 1e-7, 1e20, 0.000001, -0.5, 100, True, None, "é\n"]) == \
        '[1,1e+21,1e-7,100000000000000000000,0.000001,-0.5,100,true,null,"é\\n"]'.encode()
    assert json_float(123456789.0) == "123456789"
    with pytest.raises(ValueError):
        json_bytes(float("nan"))


def test_go_fmt_verbs() -> None:
    assert [format_value(v) for v in (0.7, 4096.0, 1e6, 1e-5, 24, True, "x")] == \
        ["0.7", "4096", "1e+06", "1e-05", "24", "true", "x"]
    assert format_go_syntax("<|eot_id|>") == '"<|eot_id|>"'
    assert quote('a "b"\n\t\x01é\u2028') == '"a \\"b\\"\\n\\t\\x01é\\u2028"'
