"""A tool-calling round trip (call → tool result → final answer) through the `ollama` client
and the `openai` SDK.

No model here ships a tools-aware template, so the test writes one: a tiny llama GGUF whose
weights make it a bigram machine (one-hot embeddings, zeroed blocks, an output matrix that
maps each token to its successor), so greedy decoding follows a fixed chain from the prompt's
last token, and a Go TEMPLATE that uses .Tools and ends the prompt with <|assistant|> (the
chain writes a tool call) or, after a tool result, with <|answer|> (the chain answers)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import gguf
import numpy as np
import openai
import pytest

CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
ANSWER = "It is sunny in Paris."
SPECIAL = ["<|user|>", "<|assistant|>", "<|answer|>", "<|tool|>", "<|tools|>", "<tool_call>",
           CALL, "</tool_call>", ANSWER]
CHAIN = {"<|assistant|>": "<tool_call>", "<tool_call>": CALL, CALL: "</tool_call>",
         "</tool_call>": "</s>", "<|answer|>": ANSWER, ANSWER: "</s>"}
TEMPLATE = (
    "{{- if .Tools }}<|tools|>{{ end }}{{- $role := \"\" }}"
    "{{- range .Messages }}{{ $role = .Role }}"
    "{{- if eq .Role \"user\" }}<|user|>{{ .Content }}"
    "{{- else if eq .Role \"assistant\" }}<|assistant|>"
    "{{- if .ToolCalls }}<tool_call>{{ range .ToolCalls }}{\"name\": \"{{ .Function.Name }}\", "
    "\"arguments\": {{ json .Function.Arguments }}}{{ end }}</tool_call>"
    "{{- else }}{{ .Content }}{{ end }}"
    "{{- else if eq .Role \"tool\" }}<|tool|>{{ .Content }}{{ end }}{{ end }}"
    "{{- if eq $role \"tool\" }}<|answer|>{{ else }}<|assistant|>{{ end }}")
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "required": ["city"],
                   "properties": {"city": {"type": "string", "description": "The city"}}}}}]
QUESTION = {"role": "user", "content": "What is the weather in Paris?"}


def byte_level(text: str) -> str:
    """GPT-2's byte-to-unicode spelling of printable ASCII: a space is "Ġ"."""
    return "".join("Ġ" if c == " " else c for c in text)


def write_bigram_gguf(path: Path) -> None:
    chars = [chr(c) for c in range(32, 127)]
    tokens = ["<s>", "</s>", *SPECIAL, *(byte_level(c) for c in chars)]
    types = ([gguf.TokenType.CONTROL] * 2 + [gguf.TokenType.USER_DEFINED] * len(SPECIAL)
             + [gguf.TokenType.NORMAL] * len(chars))
    n, dim, ffn = len(tokens), 128, 32
    ids = {t: i for i, t in enumerate(tokens)}
    out = np.zeros((n, dim), np.float32)
    for i in range(n):  # every token leads to EOS unless the chain says otherwise
        out[ids["</s>"], i] = 1.0
    for a, b in CHAIN.items():
        out[ids["</s>"], ids[a]] = 0.0
        out[ids[b], ids[a]] = 1.0
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(256)
    w.add_embedding_length(dim)
    w.add_block_count(1)
    w.add_feed_forward_length(ffn)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.add_add_bos_token(False)
    embed = np.zeros((n, dim), np.float32)
    embed[np.arange(n), np.arange(n)] = 1.0  # one-hot: the residual stream carries the token
    tensors = {"token_embd.weight": embed, "output_norm.weight": np.ones(dim, np.float32),
               "output.weight": out, "blk.0.attn_norm.weight": np.ones(dim, np.float32),
               "blk.0.ffn_norm.weight": np.ones(dim, np.float32)}
    for name, shape in (("attn_q", (dim, dim)), ("attn_k", (dim, dim)), ("attn_v", (dim, dim)),
                        ("attn_output", (dim, dim)), ("ffn_gate", (ffn, dim)),
                        ("ffn_up", (ffn, dim)), ("ffn_down", (dim, ffn))):
        tensors[f"blk.0.{name}.weight"] = np.zeros(shape, np.float32)  # blocks add nothing
    for name, t in tensors.items():
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def tool_model(server, tmp_path_factory) -> str:
    import ollama

    path = tmp_path_factory.mktemp("bigram") / "bigram.gguf"
    write_bigram_gguf(path)
    with ollama.Client(host=server.url) as client:
        digest = client.create_blob(path)
        assert digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        client.create(model="weather-bot", files={"bigram.gguf": digest}, template=TEMPLATE,
                      parameters={"temperature": 0})
    return "weather-bot"


def test_the_template_makes_it_tools_capable(client, tool_model) -> None:
    assert "tools" in client.show(tool_model).capabilities


def test_round_trip_with_the_ollama_client(client, tool_model) -> None:
    first = client.chat(model=tool_model, messages=[QUESTION], tools=TOOLS)
    assert first.message.content == ""
    (call,) = first.message.tool_calls
    assert call.function.name == "get_weather"
    assert dict(call.function.arguments) == {"city": "Paris"}
    assert first.done_reason == "stop"
    history = [QUESTION, first.message,
               {"role": "tool", "content": "Sunny, 25 C", "tool_name": "get_weather"}]
    final = client.chat(model=tool_model, messages=history, tools=TOOLS)
    assert final.message.content == ANSWER and not final.message.tool_calls
    streamed = list(client.chat(model=tool_model, messages=[QUESTION], tools=TOOLS,
                                stream=True))
    calls = [c for chunk in streamed for c in (chunk.message.tool_calls or [])]
    assert [c.function.name for c in calls] == ["get_weather"]
    assert "".join(chunk.message.content for chunk in streamed) == ""


def test_without_tools_the_same_model_just_talks(client, tool_model) -> None:
    r = client.chat(model=tool_model, messages=[QUESTION])
    assert r.message.content == "<tool_call>" + CALL + "</tool_call>"
    assert not r.message.tool_calls


def test_round_trip_with_the_openai_sdk(server, tool_model) -> None:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x") as oai:
        first = oai.chat.completions.create(model=tool_model, messages=[QUESTION], tools=TOOLS)
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls
        assert call.type == "function" and call.id.startswith("call_") and len(call.id) == 13
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        history = [QUESTION, choice.message.model_dump(exclude_none=True),
                   {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 25 C"}]
        final = oai.chat.completions.create(model=tool_model, messages=history, tools=TOOLS)
        assert final.choices[0].message.content == ANSWER
        assert final.choices[0].finish_reason == "stop"
        chunks = list(oai.chat.completions.create(model=tool_model, messages=[QUESTION],
                                                  tools=TOOLS, stream=True))
        deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        assert [d.function.name for d in deltas] == ["get_weather"]
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
