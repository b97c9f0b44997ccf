"""/api/create's server side on small GGUFs: progress, layers, config, and every refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ollamapy.store import (
    CreateError,
    InvalidNameError,
    Store,
    StoreError,
    create_model,
)
from ollamapy.store.manifest import (
    MEDIA_TYPE_LICENSE,
    MEDIA_TYPE_MESSAGES,
    MEDIA_TYPE_MODEL,
    MEDIA_TYPE_PARAMS,
    MEDIA_TYPE_PROJECTOR,
    MEDIA_TYPE_PROMPT,
    MEDIA_TYPE_SYSTEM,
    MEDIA_TYPE_TEMPLATE,
    Layer,
    Manifest,
)
from ollamapy.store.modelinfo import human_number
from tests.store.conftest import upload, write_gguf


@pytest.fixture
def gguf(store: Store, tmp_path: Path) -> str:
    return upload(store, write_gguf(tmp_path / "tiny.gguf", file_type=15))


def run(store: Store, name: str, **kwargs) -> list[dict]:
    return list(create_model(store, name, **kwargs))


def test_progress_layers_and_config(store: Store, gguf: str) -> None:
    progress = run(store, "tiny:v1", files={"tiny.gguf": gguf}, template="{{ .Prompt }}",
                   system="Be brief.", parameters={"temperature": 0.5, "stop": ["<end>"]},
                   messages=[{"role": "user", "content": "hi"}], license=["MIT", "BSD"])
    manifest = store.manifest("tiny:v1")
    kinds = [layer.media_type for layer in manifest.layers]
    assert kinds == [MEDIA_TYPE_MODEL, MEDIA_TYPE_TEMPLATE, MEDIA_TYPE_SYSTEM, MEDIA_TYPE_LICENSE,
                     MEDIA_TYPE_LICENSE, MEDIA_TYPE_PARAMS, MEDIA_TYPE_MESSAGES]
    assert progress == [
        {"status": "parsing GGUF"},
        {"status": f"using existing layer {gguf}"},
        *({"status": f"creating new layer {layer.digest}"} for layer in manifest.layers[1:]),
        {"status": "writing manifest"},
        {"status": "success"},
    ]
    params = manifest.layers_of(MEDIA_TYPE_PARAMS)[0]
    assert store.blobs.path(params.digest).read_bytes() == \
        b'{"stop":["\\u003cend\\u003e"],"temperature":0.5}\n'
    messages = manifest.layers_of(MEDIA_TYPE_MESSAGES)[0]
    assert json.loads(store.blobs.path(messages.digest).read_bytes()) == [
        {"role": "user", "content": "hi"}]

    config = json.loads(store.blobs.path(manifest.config.digest).read_bytes())
    assert config == {"model_format": "gguf", "model_family": "llama",
                      "model_families": ["llama"], "model_type": "4K", "file_type": "Q4_K_M",
                      "capabilities": ["completion"], "context_length": 256,
                      "embedding_length": 64, "architecture": "amd64", "os": "linux"}
    model = store.model("tiny:v1")
    assert model.system == "Be brief." and model.licenses == ("MIT", "BSD")


def test_a_second_create_reuses_layers(store: Store, gguf: str) -> None:
    run(store, "a", files={"tiny.gguf": gguf}, system="same")
    progress = run(store, "b", files={"tiny.gguf": gguf}, system="same")
    assert progress[2]["status"].startswith("using existing layer")
    assert store.manifest("a") == store.manifest("b")


def test_embedding_gguf_and_file_type_names(store: Store, tmp_path: Path) -> None:
    digest = upload(store, write_gguf(tmp_path / "e.gguf", arch="bert", pooling=True,
                                      file_type=32))
    run(store, "embed", files={"e.gguf": digest})
    config = store.model("embed").config
    assert config.capabilities == ("embedding",) and config.file_type == "BF16"
    assert config.model_family == "bert"


def test_projector_gguf_becomes_a_projector_layer(store: Store, tmp_path: Path,
                                                  gguf: str) -> None:
    proj = upload(store, write_gguf(tmp_path / "mmproj.gguf", arch="clip", file_type=1))
    run(store, "vision", files={"model.gguf": gguf, "mmproj.gguf": proj})
    model = store.model("vision")
    assert model.model_path == store.blobs.path(gguf)
    assert model.projector_paths == (store.blobs.path(proj),)
    # layers follow the sorted file names, as in Ollama
    assert [la.media_type for la in model.manifest.layers] == [MEDIA_TYPE_PROJECTOR,
                                                               MEDIA_TYPE_MODEL]


def test_from_merges_parameters_and_replaces_singletons(store: Store, gguf: str) -> None:
    run(store, "base", files={"tiny.gguf": gguf}, template="old", system="old",
        parameters={"temperature": 0.5, "stop": ["a"]}, license="L1",
        messages=[{"role": "user", "content": "old"}])
    progress = run(store, "child", from_="BASE", system="new", parameters={"temperature": 0.9},
                   messages=[{"role": "user", "content": "new"}], license="L2")
    assert progress[0]["status"].startswith("using existing layer")
    assert "parsing GGUF" not in [p["status"] for p in progress]
    child = store.model("child")
    assert child.template == "old" and child.system == "new"
    assert child.params == {"stop": ["a"], "temperature": 0.9}
    assert child.messages == ({"role": "user", "content": "new"},)
    assert child.licenses == ("L1", "L2")
    assert child.parent_model == "base:latest"
    assert child.model_path == store.model("base").model_path
    assert child.config == store.model("base").config
    inherited = [la for la in child.manifest.layers if la.from_ == "base:latest"]
    assert {la.media_type for la in inherited} == {MEDIA_TYPE_MODEL, MEDIA_TYPE_TEMPLATE,
                                                   MEDIA_TYPE_LICENSE}


def test_template_replaces_a_legacy_prompt_layer(store: Store, gguf: str) -> None:
    run(store, "base", files={"tiny.gguf": gguf})
    m = store.manifest("base")
    prompt = store.blobs.put_bytes(b"{{ .Prompt }}")
    store.write_manifest("legacy", Manifest(m.config, (*m.layers, Layer(MEDIA_TYPE_PROMPT,
                                                                         prompt, 13))))
    assert store.model("legacy").template == "{{ .Prompt }}"
    run(store, "modern", from_="legacy", template="{{ .System }}")
    kinds = [la.media_type for la in store.manifest("modern").layers]
    assert MEDIA_TYPE_PROMPT not in kinds and kinds.count(MEDIA_TYPE_TEMPLATE) == 1
    assert store.model("modern").template == "{{ .System }}"


def test_recreating_a_name_keeps_its_case_and_collects_old_layers(store: Store,
                                                                  gguf: str) -> None:
    run(store, "Mixed", files={"tiny.gguf": gguf}, system="first")
    first_system = store.manifest("Mixed").layers_of(MEDIA_TYPE_SYSTEM)[0].digest
    run(store, "mixed", files={"tiny.gguf": gguf}, system="second")
    assert [e.name.model for e in store.list_models()] == ["Mixed"]
    assert store.model("mixed").system == "second"
    assert not store.blobs.exists(first_system)
    assert store.blobs.exists(gguf)


def test_an_abandoned_create_leaves_no_model(store: Store, gguf: str) -> None:
    stream = create_model(store, "never", files={"tiny.gguf": gguf}, system="x")
    assert next(stream) == {"status": "parsing GGUF"}
    stream.close()  # the client went away
    assert store.find("never") is None and store.list_models() == []


@pytest.mark.parametrize("path", ["../x.gguf", "/abs.gguf", "a/../../b.gguf", "a//b.gguf",
                                  ".", "C:x.gguf", "a\\b.gguf", "x/", ""])
def test_file_paths_must_be_relative(store: Store, gguf: str, path: str) -> None:
    with pytest.raises(CreateError) as info:
        create_model(store, "x", files={path: gguf})
    assert str(info.value) == "file path must be relative"
    assert info.value.status == 400


@pytest.mark.parametrize(("kwargs", "status", "message"), [
    ({}, 400, "neither 'from' or 'files' was specified"),
    ({"files": {}}, 400, "neither 'from' or 'files' was specified"),
    ({"files": {"x.gguf": ""}}, 400, "invalid digest format"),
    ({"files": {"x.gguf": "sha256:../../etc/passwd"}}, 400,
     "invalid digest for x.gguf: invalid digest format"),
    ({"from_": "bad name!"}, 400, "invalid model name"),
    # a missing `from` is pulled first (tests/store/test_registry_pull.py), after its name
    # and registry are checked
    ({"from_": "http://127.0.0.1:1/library/nope:1"}, 400, "insecure protocol http"),
    ({"from_": "x", "adapters": {"lora.gguf": "sha256:" + "a" * 64}}, 400,
     "ADAPTER is not supported by ollamapy"),
    ({"from_": "x", "quantize": "q4_K_M"}, 400, "quantization is not supported by ollamapy"),
])
def test_request_errors_are_raised_before_streaming(store: Store, kwargs: dict, status: int,
                                                    message: str) -> None:
    with pytest.raises(StoreError) as info:
        create_model(store, "x", **kwargs)
    assert (info.value.status, str(info.value)) == (status, message)


def test_invalid_target_name(store: Store, gguf: str) -> None:
    with pytest.raises(InvalidNameError, match="^invalid model name$"):
        create_model(store, "../../etc/x", files={"tiny.gguf": gguf})


def test_a_blob_that_was_never_uploaded(store: Store) -> None:
    missing = "sha256:" + "d" * 64
    with pytest.raises(CreateError) as info:
        create_model(store, "x", files={"model.gguf": missing})
    assert info.value.status == 400
    assert str(info.value) == (f"blob {missing} for model.gguf is not in the store: upload it "
                               f"with POST /api/blobs/{missing} first")


def test_files_that_are_not_gguf(store: Store, gguf: str) -> None:
    text = store.blobs.put_bytes(b"just some text")
    with pytest.raises(CreateError, match="^supplied file was not in GGUF format$"):
        create_model(store, "x", files={"model.gguf": text})
    with pytest.raises(CreateError, match="^supplied file was not in GGUF format: notes.txt$"):
        create_model(store, "x", files={"model.gguf": gguf, "notes.txt": text})
    with pytest.raises(CreateError, match="mixed model file types"):
        create_model(store, "x", files={"model.gguf": gguf, "model.safetensors": text,
                                        "config.json": text})
    with pytest.raises(CreateError, match="config.json"):
        create_model(store, "x", files={"model.safetensors": text})


def test_a_malformed_gguf_is_refused_before_streaming(store: Store) -> None:
    """The header is parsed while the request is checked, so even a streaming create answers
    400 naming the defect (checklist item 8), and nothing is written."""
    bad = store.blobs.put_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 16)
    with pytest.raises(CreateError, match=r"^model.gguf: invalid GGUF: tensor count") as info:
        create_model(store, "x", files={"model.gguf": bad})
    assert info.value.status == 400
    assert store.find("x") is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"arch": "mamba"}, r"^model.gguf: unsupported architecture 'mamba' \(supported: llama, "),
    ({"raw_type": "IQ2_XXS", "n_embd": 256},
     r"^model.gguf: unsupported tensor type IQ2_XXS \(tensor blk.0.ffn_up.weight\)$"),
])
def test_a_model_we_cannot_run_is_refused_before_streaming(store: Store, tmp_path: Path,
                                                           kwargs: dict, message: str) -> None:
    """An architecture or tensor type the engine lacks is a 400 naming it at create time,
    not a stored model that fails when it is first loaded; nothing is written."""
    before = store.list_models()
    blob = upload(store, write_gguf(tmp_path / "m.gguf", **kwargs))
    with pytest.raises(CreateError, match=message) as info:
        create_model(store, "x", files={"model.gguf": blob})
    assert info.value.status == 400
    assert store.find("x") is None and store.list_models() == before


def test_every_supported_family_and_type_passes_the_check(store: Store, tmp_path: Path
                                                          ) -> None:
    from ollamapy.loading.families import ENCODER_ARCHS, FAMILIES
    from ollamapy.loading.ggml_types import DEQUANTIZABLE
    from ollamapy.loading.quants import DEQUANTIZE

    assert set(DEQUANTIZE) == DEQUANTIZABLE  # the torch-free list is the dequantizer's table
    for i, arch in enumerate([*FAMILIES, *ENCODER_ARCHS]):
        blob = upload(store, write_gguf(tmp_path / f"{arch}.gguf", arch=arch))
        assert run(store, f"m{i}", files={"model.gguf": blob})[-1] == {"status": "success"}
    blob = upload(store, write_gguf(tmp_path / "q.gguf", raw_type="IQ4_XS", n_embd=256))
    assert run(store, "iq4", files={"model.gguf": blob})[-1] == {"status": "success"}


def test_an_adapter_gguf_is_refused(store: Store, tmp_path: Path) -> None:
    lora = upload(store, write_gguf(tmp_path / "lora.gguf", general_type="adapter"))
    with pytest.raises(CreateError, match="ADAPTER is not supported by ollamapy"):
        run(store, "x", files={"lora.gguf": lora})


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"license": 5}, "license must be a string or a list of strings"),
    ({"license": ["a", 1]}, "license must be a string or a list of strings"),
    ({"messages": [{"content": "no role"}]}, "invalid message"),
    ({"parameters": {"temperature": float("nan")}}, "invalid parameters"),
    ({"parameters": ["temperature"]}, "parameters must be an object"),
])
def test_bad_fields(store: Store, gguf: str, kwargs: dict, message: str) -> None:
    with pytest.raises(CreateError, match=message):
        create_model(store, "x", files={"tiny.gguf": gguf}, **kwargs)


@pytest.mark.parametrize(("count", "text"), [
    (0, "0"), (999, "999"), (1000, "1K"), (1_000_000, "1M"), (125_000_000, "125M"),
    (134_515_008, "134.52M"), (22_713_728, "22.71M"), (500_500_000, "500.50M"),
    (1_000_000_000, "1B"), (2_850_000_000, "2.9B"), (8_030_261_248, "8.0B"),
    (1_000_000_000_000, "1000B"),
])
def test_human_number_is_ollamas(count: int, text: str) -> None:
    assert human_number(count) == text
