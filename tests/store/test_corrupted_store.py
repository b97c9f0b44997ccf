"""A damaged model store (hardening.md §7 item 22), served by the real app with the real runner.

The store holds one healthy model and one of each kind of damage, made on disk after the
models were created: a GGUF blob cut in half, a bit flipped in a GGUF's magic, a bit flipped
in a GGUF's tensor data, a bit flipped in a config blob, a zero-byte manifest, and a manifest
whose weights blob is gone. What is proved:

- the server starts on that store and `/api/tags` lists the healthy model; the two models
  whose manifest or config cannot be read are left out, the others are listed (as Ollama
  does: their damage is in blobs that only a load reads);
- show, generate (streamed or not), chat and the OpenAI route answer every damaged model with
  a JSON error that names the problem (never a traceback, never a dropped connection), and
  the healthy model still answers after each of them;
- a bit flip in tensor data is invisible to a load (neither ollamapy nor Ollama re-hashes
  weights on load) and is what `Store.verify` is for: it names every damaged blob by digest,
  the unreadable manifest and the missing blob, and nothing healthy;
- the damage is repairable while the server runs: the broken manifest can be deleted, and
  uploading the missing blob again makes that model load.

The models are tiny llama GGUFs written here with gguf-py (random weights, a one-character
vocabulary), so loading one takes milliseconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from ollamapy.scheduler import Scheduler
from ollamapy.server.app import create_app
from ollamapy.settings import Settings
from ollamapy.store import Store, create_model
from tests.store.conftest import upload

VOCAB, HIDDEN, FFN, HEADS, KV_HEADS, HEAD_DIM = 96, 32, 48, 2, 1, 16


def write_llama_gguf(path: Path, seed: int) -> Path:
    """A loadable one-layer llama: every tensor and key the loader needs, nothing more. The
    seed also sets the context length, so that no two models share a config blob either."""
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(128 + seed)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(1)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_file_type(0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(["<s>", "</s>", "Ġ"] + [chr(c) for c in range(33, 33 + VOCAB - 3)])
    w.add_token_types([gguf.TokenType.CONTROL] * 2 + [gguf.TokenType.NORMAL] * (VOCAB - 2))
    w.add_token_merges([])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.add_tensor("token_embd.weight", weight(VOCAB, HIDDEN))
    for name, shape in [("attn_norm", (HIDDEN,)), ("attn_q", (HEADS * HEAD_DIM, HIDDEN)),
                        ("attn_k", (KV_HEADS * HEAD_DIM, HIDDEN)),
                        ("attn_v", (KV_HEADS * HEAD_DIM, HIDDEN)),
                        ("attn_output", (HIDDEN, HEADS * HEAD_DIM)), ("ffn_norm", (HIDDEN,)),
                        ("ffn_gate", (FFN, HIDDEN)), ("ffn_up", (FFN, HIDDEN)),
                        ("ffn_down", (HIDDEN, FFN))]:
        w.add_tensor(f"blk.0.{name}.weight", weight(*shape))
    w.add_tensor("output_norm.weight", 1 + weight(HIDDEN))
    w.add_tensor("output.weight", weight(VOCAB, HIDDEN))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def flip_bit(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x04
    path.write_bytes(bytes(data))


@dataclass
class Served:
    client: TestClient
    store: Store
    blobs: dict[str, str]  # model → the digest of the blob its damage is in
    ggufs: dict[str, Path]  # model → the GGUF file it was created from


# model → (where the damage is, the text its error must contain)
DAMAGED = {
    "truncated": ("invalid GGUF", "past the end of the file"),
    "flipped-magic": ("invalid GGUF", "bad magic"),
    "missing-blob": ("missing-blob:latest: blob sha256:", "is missing from the model store"),
    "empty-manifest": ("invalid manifest", "not JSON"),
    "flipped-config": ("is corrupt", "does not match its digest"),
}
HEALTHY = "good"


@contextlib.contextmanager
def serve(tmp: Path, names: list[str]) -> Iterator[Served]:
    """Create `names` (HEALTHY and damaged ones), damage them on disk, start the app."""
    settings = Settings.from_env({"OLLAMA_MODELS": str(tmp / "models"), "OLLAMAPY_FAST": "0",
                                  "OLLAMAPY_COMPILE": "0", "OLLAMA_NUM_PARALLEL": "1"})
    store = Store(settings.models)
    blobs, ggufs = {}, {}
    for seed, name in enumerate(names):  # a seed each: no two models share a blob
        ggufs[name] = write_llama_gguf(tmp / f"{name}.gguf", seed)
        blobs[name] = upload(store, ggufs[name])
        list(create_model(store, name, files={"model.gguf": blobs[name]}, system=name))

    weights = {name: store.blobs.path(blobs[name]) for name in names}
    for name in names:
        if name == "truncated":
            weights[name].write_bytes(weights[name].read_bytes()[:-9000])
        elif name == "flipped-magic":
            flip_bit(weights[name], 0)
        elif name == "flipped-data":
            flip_bit(weights[name], weights[name].stat().st_size - 100)
        elif name == "missing-blob":
            weights[name].unlink()
        elif name == "empty-manifest":
            store.manifest_path(store.find(name)).write_bytes(b"")
        elif name == "flipped-config":
            blobs[name] = store.manifest(name).config.digest
            flip_bit(store.blobs.path(blobs[name]), 5)

    app = create_app(settings, Scheduler(settings))
    # raise_server_exceptions=False: the client sees what a real client sees, the 500 JSON,
    # rather than the exception re-raised into the test
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Served(client, store, blobs, ggufs)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Every kind of damage at once; the tests using it do not change the store."""
    with serve(tmp_path_factory.mktemp("corrupted"), [HEALTHY, "flipped-data", *DAMAGED]) as s:
        yield s


def generate(client: TestClient, model: str, **fields: object) -> httpx.Response:
    return client.post("/api/generate", json={
        "model": model, "prompt": "hi", "stream": False,
        "options": {"num_predict": 2, "temperature": 0}, **fields})


def assert_healthy_answers(client: TestClient) -> None:
    r = generate(client, HEALTHY)
    assert r.status_code == 200, r.text
    assert r.json()["done"] is True and r.json()["done_reason"] in ("length", "stop")


def test_the_server_starts_and_lists_the_models_it_can_read(served: Served) -> None:
    r = served.client.get("/")
    assert r.status_code == 200 and r.text == "Ollama is running"
    r = served.client.get("/api/tags")
    assert r.status_code == 200
    listed = {m["name"] for m in r.json()["models"]}
    assert listed == {f"{n}:latest" for n in
                      (HEALTHY, "flipped-data", "truncated", "flipped-magic", "missing-blob")}
    assert_healthy_answers(served.client)


@pytest.mark.parametrize("model", list(DAMAGED))
def test_a_damaged_model_is_a_json_error_and_the_server_keeps_serving(served: Served,
                                                                      model: str) -> None:
    client = served.client
    answers = {
        "show": client.post("/api/show", json={"model": model}),
        "generate": generate(client, model),
        "generate (streamed)": generate(client, model, stream=True),
        "generate (load only)": client.post("/api/generate", json={"model": model}),
        "chat": client.post("/api/chat", json={
            "model": model, "messages": [{"role": "user", "content": "hi"}]}),
    }
    for what, r in answers.items():
        assert 400 <= r.status_code < 600, (what, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json"), (what, r.headers)
        body = r.json()
        assert list(body) == ["error"], (what, body)
        assert all(part in body["error"] for part in DAMAGED[model]), (what, body)
        assert "Traceback" not in r.text
    r = client.post("/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": "hi"}]})
    assert 400 <= r.status_code < 600 and "error" in r.json(), r.text
    assert_healthy_answers(client)
    assert f"{HEALTHY}:latest" in {m["name"] for m in client.get("/api/tags").json()["models"]}


def test_a_bit_flip_in_the_weights_loads_and_verify_reports_it(served: Served) -> None:
    """Nothing re-hashes weights on load (Ollama neither): the model answers, and `verify`
    is what finds the flipped digest."""
    r = generate(served.client, "flipped-data")
    assert r.status_code == 200 and r.json()["done"] is True

    problems = served.store.verify()
    report = "\n".join(problems)
    for model in ("flipped-data", "truncated", "flipped-magic", "flipped-config"):
        digest = served.blobs[model]
        assert f"blob {digest} is corrupt" in report, (model, report)
    assert f"names the missing blob {served.blobs['missing-blob']}" in report
    assert "manifest empty-manifest:latest is unreadable" in report
    assert served.blobs[HEALTHY] not in report and "good:latest" not in report
    assert len(problems) == 6, report
    # the digest a blob's content hashes to now is reported alongside the one it is named by
    flipped = served.store.blobs.path(served.blobs["flipped-data"]).read_bytes()
    assert f"sha256:{hashlib.sha256(flipped).hexdigest()}" in report
    # the same report from the command line, with a failing exit status
    cli = subprocess.run([sys.executable, "-m", "ollamapy.cli", "verify"], capture_output=True,
                         text=True, timeout=120,
                         env={**os.environ, "OLLAMA_MODELS": str(served.store.root)})
    assert cli.returncode == 1 and cli.stdout.splitlines() == problems, cli.stderr


def test_the_damage_can_be_repaired_without_a_restart(tmp_path: Path) -> None:
    with serve(tmp_path, [HEALTHY, "missing-blob", "empty-manifest"]) as served:
        repair(served)


def repair(served: Served) -> None:
    client = served.client
    assert generate(client, "missing-blob").status_code == 500
    r = client.request("DELETE", "/api/delete", json={"model": "empty-manifest"})
    assert r.status_code == 200
    assert client.post("/api/show", json={"model": "empty-manifest"}).status_code == 404

    digest = served.blobs["missing-blob"]
    data = served.ggufs["missing-blob"].read_bytes()
    assert client.post(f"/api/blobs/{digest}", content=data).status_code == 201
    r = generate(client, "missing-blob")
    assert r.status_code == 200, r.text
    assert r.json()["done"] is True
    show = client.post("/api/show", json={"model": "missing-blob"}).json()
    assert show["system"] == "missing-blob"
    assert show["model_info"]["general.architecture"] == "llama"
    assert_healthy_answers(client)
