"""Every native endpoint through the official `ollama` Python client against a live server
on the real models: generate, chat, embed, show, create, copy, delete, ps, blobs."""

from __future__ import annotations

import hashlib
import json
import math
import time
from datetime import datetime

import httpx
import ollama
import openai
import pytest

import ollamapy
from ollamapy.server.models import OLLAMA_VERSION
from tests.conftest import DATA

PROMPT = "Why is the sky blue?"
GREEDY = {"temperature": 0, "num_predict": 12}


def test_root_and_version(server) -> None:
    r = httpx.get(server.url)
    assert r.status_code == 200 and r.text == "Ollama is running"
    assert httpx.head(server.url).status_code == 200
    version = httpx.get(f"{server.url}/api/version").json()
    assert version == {"version": OLLAMA_VERSION, "ollamapy": ollamapy.__version__}
    # what clients compare: a release at or past the features they gate on (one editor's
    # Ollama provider needs 0.6.4)
    assert tuple(int(p) for p in version["version"].split(".")) >= (0, 6, 4)
    status = httpx.get(f"{server.url}/api/status")
    assert status.status_code == 200
    assert status.json() == {"cloud": {"disabled": True, "source": "none"}}


def test_tags_lists_the_imported_models(client) -> None:
    models = {m.model: m for m in client.list().models}
    assert {"smollm2:135m", "gemma3:270m", "all-minilm:latest"} <= set(models)
    smol = models["smollm2:135m"]
    assert smol.details.family == "llama" and smol.details.quantization_level == "Q4_1"
    assert smol.details.format == "gguf" and smol.details.parameter_size == "134.52M"
    assert len(smol.digest) == 64 and smol.size > 90_000_000


def test_generate_non_streaming(client) -> None:
    r = client.generate(model="smollm2:135m", prompt=PROMPT, options=GREEDY)
    assert r.done and r.done_reason == "length" and r.eval_count == 12
    assert r.response.strip()
    assert r.prompt_eval_count > 5 and r.total_duration >= r.eval_duration > 0
    assert r.load_duration is not None and r.context and len(r.context) > r.prompt_eval_count


def test_generate_streaming_equals_non_streaming(client) -> None:
    chunks = list(client.generate(model="smollm2:135m", prompt=PROMPT, options=GREEDY,
                                  stream=True))
    whole = client.generate(model="smollm2:135m", prompt=PROMPT, options=GREEDY)
    assert len(chunks) > 2 and chunks[-1].done and not any(c.done for c in chunks[:-1])
    assert "".join(c.response for c in chunks) == whole.response
    assert chunks[-1].eval_count == whole.eval_count


def test_generate_raw_and_system(client) -> None:
    raw = client.generate(model="smollm2:135m", prompt="The capital of France is",
                          raw=True, options=GREEDY)
    assert "Paris" in raw.response and raw.context is None
    plain = client.generate(model="smollm2:135m", prompt=PROMPT, options=GREEDY)
    pirate = client.generate(model="smollm2:135m", prompt=PROMPT, options=GREEDY,
                             system="You are a pirate. Answer like a pirate, matey.")
    assert pirate.prompt_eval_count != plain.prompt_eval_count
    assert pirate.response != plain.response


def test_chat_streaming_and_not(client) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    r = client.chat(model="smollm2:135m", messages=messages, options={"temperature": 0})
    assert r.message.role == "assistant" and "Paris" in r.message.content
    assert r.done_reason == "stop"
    chunks = list(client.chat(model="smollm2:135m", messages=messages,
                              options={"temperature": 0}, stream=True))
    assert "".join(c.message.content for c in chunks) == r.message.content


def test_chat_multi_turn_memory(client) -> None:
    history = [{"role": "user", "content": "The secret word is pineapple."},
               {"role": "assistant", "content": "Okay, the secret word is pineapple."},
               {"role": "user", "content": "What is the secret word?"}]
    with_memory = client.chat(model="smollm2:135m", messages=history,
                              options={"temperature": 0, "num_predict": 24})
    alone = client.chat(model="smollm2:135m", messages=history[-1:],
                        options={"temperature": 0, "num_predict": 24})
    assert "pineapple" in with_memory.message.content.lower()
    assert "pineapple" not in alone.message.content.lower()
    assert with_memory.prompt_eval_count > alone.prompt_eval_count


def test_stop_and_num_predict(client) -> None:
    full = client.generate(model="smollm2:135m", prompt=PROMPT, options={**GREEDY,
                                                                          "num_predict": 30})
    words = full.response.split()
    stop = words[3]
    cut = client.generate(model="smollm2:135m", prompt=PROMPT,
                          options={**GREEDY, "num_predict": 30, "stop": [stop]})
    assert cut.done_reason == "stop" and stop not in cut.response
    assert full.response.startswith(cut.response)
    short = client.generate(model="smollm2:135m", prompt=PROMPT,
                            options={**GREEDY, "num_predict": 3})
    assert short.eval_count == 3 and short.done_reason == "length"


def test_seed_reproducibility(client) -> None:
    opts = {"temperature": 1.2, "top_k": 0, "top_p": 1.0, "num_predict": 16}
    a = client.generate(model="smollm2:135m", prompt=PROMPT, options={**opts, "seed": 42})
    b = client.generate(model="smollm2:135m", prompt=PROMPT, options={**opts, "seed": 42})
    c = client.generate(model="smollm2:135m", prompt=PROMPT, options={**opts, "seed": 43})
    assert a.response == b.response and a.response != c.response


def test_gemma3_generates(client) -> None:
    r = client.generate(model="gemma3:270m", prompt="The capital of France is", raw=True,
                        options=GREEDY)
    assert r.eval_count == 12 and r.response.strip()


def test_embed_matches_the_reference(client) -> None:
    cases = json.loads((DATA / "embeddings_minilm.json").read_text())["cases"][:4]
    r = client.embed(model="all-minilm", input=[c["text"] for c in cases])
    assert len(r.embeddings) == len(cases)
    for vec, case in zip(r.embeddings, cases, strict=True):
        assert len(vec) == 384
        assert math.isclose(math.sqrt(sum(x * x for x in vec)), 1.0, abs_tol=1e-5)
        cosine = sum(a * b for a, b in zip(vec, case["embedding"], strict=True))
        assert cosine >= 0.9999
    assert r.prompt_eval_count == sum(len(c["input_ids"]) for c in cases)
    single = client.embed(model="all-minilm", input=cases[0]["text"])
    assert single.embeddings[0] == pytest.approx(r.embeddings[0], abs=1e-5)


def test_embed_dimensions_and_legacy_embeddings(client) -> None:
    short = client.embed(model="all-minilm", input="hello world", dimensions=64).embeddings[0]
    assert len(short) == 64
    assert math.isclose(math.sqrt(sum(x * x for x in short)), 1.0, abs_tol=1e-5)
    legacy = client.embeddings(model="all-minilm", prompt="hello world").embedding
    norm = math.sqrt(sum(x * x for x in legacy))
    assert len(legacy) == 384 and abs(norm - 1.0) > 1e-3  # not normalised
    full = client.embed(model="all-minilm", input="hello world").embeddings[0]
    assert [x / norm for x in legacy] == pytest.approx(full, abs=1e-5)


def test_show(client) -> None:
    info = client.show("smollm2:135m")
    assert info.modelinfo["llama.context_length"] == 8192
    assert info.modelinfo["general.architecture"] == "llama"
    assert info.modelinfo["tokenizer.ggml.tokens"] == []  # long arrays emptied
    assert "completion" in info.capabilities and "tools" not in info.capabilities
    assert "<|im_start|>" in info.template
    assert info.modelfile.startswith("# Modelfile generated by")
    assert "FROM " in info.modelfile
    assert info.details.family == "llama"
    embed_info = client.show("all-minilm")
    assert embed_info.capabilities == ["embedding"]


def test_create_from_existing_model_with_a_new_system(client, server) -> None:
    system = "You are a pirate. Answer like a pirate, matey."
    statuses = [p.status for p in client.create(model="pirate:1", from_="smollm2:135m",
                                                system=system, stream=True)]
    assert statuses[-1] == "success" and "writing manifest" in statuses
    assert any(s.startswith("using existing layer") for s in statuses)
    info = client.show("pirate:1")
    raw = httpx.post(f"{server.url}/api/show", json={"model": "pirate:1"}).json()
    assert raw["system"] == system and f"SYSTEM {system}" in info.modelfile
    base = client.show("smollm2:135m")
    # the weights blob is shared, not copied
    assert info.modelfile.split("FROM ")[1].split("\n")[0] == \
        base.modelfile.split("FROM ")[1].split("\n")[0]
    with_system = client.generate(model="pirate:1", prompt=PROMPT, options=GREEDY)
    explicit = client.generate(model="smollm2:135m", prompt=PROMPT, options=GREEDY,
                               system=system)
    assert with_system.response == explicit.response
    client.delete("pirate:1")


def test_create_with_parameters_template_and_messages(client) -> None:
    client.create(model="tuned", from_="smollm2:135m",
                  parameters={"temperature": 0, "num_predict": 5, "stop": ["\n\n"]},
                  messages=[{"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": "Hello!"}],
                  template="{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}"
                           "<|im_end|>\n{{ end }}<|im_start|>assistant\n")
    info = client.show("tuned")
    assert "num_predict" in info.parameters and "temperature" in info.parameters
    assert "{{ range .Messages }}" in info.template
    r = client.generate(model="tuned", prompt=PROMPT)
    assert r.eval_count <= 5  # the model's num_predict parameter applies
    client.delete("tuned")


FIM_TEMPLATE = ("{{- if .Suffix }}<|fim_prefix|>{{ .Prompt }}<|fim_suffix|>{{ .Suffix }}"
                "<|fim_middle|>{{- else }}{{ .Prompt }}{{ end }}")


def test_a_suffix_needs_a_template_that_places_it(client, server) -> None:
    """Ollama's `insert` capability: a model whose template does not use .Suffix answers a
    suffix with a 400 and Ollama's text (natively and on /v1/completions), nothing changed;
    a Go TEMPLATE that uses it places the suffix (fill-in-the-middle)."""
    before = client.list().models
    with pytest.raises(ollama.ResponseError) as e:
        client.generate(model="smollm2:135m", prompt="def add(a, b):", suffix="return c")
    assert e.value.status_code == 400
    assert e.value.error == "registry.ollama.ai/library/smollm2:135m does not support insert"
    oai = openai.OpenAI(base_url=f"{server.url}/v1", api_key="ollamapy")
    with pytest.raises(openai.BadRequestError, match="smollm2:135m does not support insert"):
        oai.completions.create(model="smollm2:135m", prompt="def add(a, b):", suffix="c")
    assert client.list().models == before

    client.create(model="fim", from_="smollm2:135m", template=FIM_TEMPLATE)
    try:
        assert "insert" in client.show("fim").capabilities
        prompt, suffix = "def add(a, b):", "\n    return c\n"
        filled = client.generate(model="fim", prompt=prompt, suffix=suffix, options=GREEDY)
        # the model read the template's placement: the same tokens as that text sent raw
        placed = f"<|fim_prefix|>{prompt}<|fim_suffix|>{suffix}<|fim_middle|>"
        raw = client.generate(model="fim", prompt=placed, raw=True, options=GREEDY)
        assert filled.prompt_eval_count == raw.prompt_eval_count
        assert filled.response == raw.response
        plain = client.generate(model="fim", prompt=prompt, options=GREEDY)
        assert plain.prompt_eval_count < filled.prompt_eval_count
        completion = oai.completions.create(model="fim", prompt=prompt, suffix=suffix,
                                            max_tokens=12, temperature=0)
        assert completion.usage.prompt_tokens == filled.prompt_eval_count
    finally:
        client.delete("fim")


def test_copy_and_delete(client) -> None:
    client.copy("smollm2:135m", "smol-copy:v1")
    names = {m.model for m in client.list().models}
    assert "smol-copy:v1" in names
    r = client.generate(model="smol-copy:v1", prompt=PROMPT, options=GREEDY)
    assert r.response == client.generate(model="smollm2:135m", prompt=PROMPT,
                                         options=GREEDY).response
    client.delete("smol-copy:v1")
    assert "smol-copy:v1" not in {m.model for m in client.list().models}
    with pytest.raises(ollama.ResponseError) as e:
        client.generate(model="smol-copy:v1", prompt=PROMPT)
    assert e.value.status_code == 404
    # the shared weights are still there for the original
    assert client.generate(model="smollm2:135m", prompt=PROMPT, options=GREEDY).done


def test_ps_load_and_unload(client) -> None:
    client.generate(model="smollm2:135m", prompt="", keep_alive="10m")
    running = {m.model: m for m in client.ps().models}
    assert "smollm2:135m" in running
    m = running["smollm2:135m"]
    assert m.size > 50_000_000 and m.context_length == 4096 and m.size_vram == 0
    assert m.details.family == "llama"
    r = client.generate(model="smollm2:135m", prompt="", keep_alive=0)
    assert r.done_reason == "unload"
    assert "smollm2:135m" not in {m.model for m in client.ps().models}
    loaded = client.chat(model="smollm2:135m", messages=[])
    assert loaded.done_reason == "load" and loaded.message.content == ""
    assert "smollm2:135m" in {m.model for m in client.ps().models}


def test_keep_alive_zero_unloads_after_the_request(client) -> None:
    client.generate(model="gemma3:270m", prompt="Hi", raw=True, options=GREEDY, keep_alive=0)
    assert "gemma3:270m" not in {m.model for m in client.ps().models}


def test_keep_alive_values_over_http(server) -> None:
    """keep_alive (hardening.md §7 item 17): durations ("5m", 300, "1h30m", 90.5) set
    /api/ps's expires_at to that long after the request (between its start and its answer,
    whatever the time in between); negative values ("-1m", -1) keep the model forever, and an
    omitted one leaves the current setting; "2s" unloads the model no sooner than 2 s after
    the request started, and does unload it; 0 and "0" unload right after it (an empty
    prompt with 0: test_ps_load_and_unload); an invalid string is a 400."""
    def running() -> dict[str, dict]:
        return {m["name"]: m for m in httpx.get(f"{server.url}/api/ps").json()["models"]}

    def expires_at(name: str) -> float:
        return datetime.fromisoformat(running()[name]["expires_at"]).timestamp()

    def embed(**keep_alive) -> tuple[float, float]:
        """→ the wall-clock times just before the request and just after its answer."""
        sent = time.time()
        r = httpx.post(f"{server.url}/api/embed", timeout=300, json={
            "model": "all-minilm", "input": "keep me", **keep_alive})
        assert r.status_code == 200, r.text
        return sent, time.time()

    minilm = "all-minilm:latest"
    for value, seconds in (("5m", 300), (300, 300), ("1h30m", 5400), (90.5, 90.5)):
        sent, answered = embed(keep_alive=value)
        # the keep_alive runs from the end of the request, which lies between the two
        # (1 ms: the microseconds expires_at is written in, and float rounding)
        assert sent + seconds - 1e-3 <= expires_at(minilm) <= answered + seconds + 1e-3, value
    forever = 200 * 365 * 86400
    for value in (-1, "-1m", "-5s"):
        embed(keep_alive=value)
        assert expires_at(minilm) - time.time() > forever, value
    embed()  # omitted: the current keep_alive stays
    assert expires_at(minilm) - time.time() > forever

    started = time.monotonic()  # the server's timer starts at the end of the request
    embed(keep_alive="2s")
    while minilm in running():
        assert time.monotonic() - started < 120, (
            "hang guard: still loaded 120 s after a 2 s keep_alive")
        time.sleep(0.05)
    # both clocks are the machine's monotonic one (the server times keep_alive with it);
    # 10 ms: an event loop's timer granularity
    assert time.monotonic() - started >= 2.0 - 0.01, "unloaded before its 2 s keep_alive"

    for value in (0, "0"):
        embed(keep_alive=value)
        assert minilm not in running(), value

    for value, error in (("forever", 'time: invalid duration "forever"'),
                         ("10", 'time: missing unit in duration "10"'),
                         ("5 m", 'time: unknown unit " m" in duration "5 m"')):
        r = httpx.post(f"{server.url}/api/embed", json={"model": "all-minilm", "input": "x",
                                                        "keep_alive": value})
        assert (r.status_code, r.json()) == (400, {"error": error})


def test_num_ctx_change_reloads_with_the_new_window(client) -> None:
    # 128: a window other tests ask for too, so its compiled steps are shared
    client.generate(model="smollm2:135m", prompt="Hi", options={**GREEDY, "num_ctx": 128})
    running = {m.model: m for m in client.ps().models}
    assert running["smollm2:135m"].context_length == 128


def test_blob_upload_with_digest_check(client, server, tmp_path) -> None:
    data = b"some bytes for a blob\n" * 100
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    digest = client.create_blob(path)
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert httpx.head(f"{server.url}/api/blobs/{digest}").status_code == 200
    again = httpx.post(f"{server.url}/api/blobs/{digest}", content=data)
    assert again.status_code == 200  # already there
    other = "sha256:" + hashlib.sha256(b"other").hexdigest()
    bad = httpx.post(f"{server.url}/api/blobs/{other}", content=data)
    assert bad.status_code == 400
    assert bad.json()["error"] == f'digest mismatch, expected "{other}", got "{digest}"'
    assert httpx.head(f"{server.url}/api/blobs/{other}").status_code == 404
    assert httpx.head(f"{server.url}/api/blobs/sha256:xyz").status_code == 400
