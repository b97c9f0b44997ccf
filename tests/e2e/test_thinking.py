"""Thinking through the live server: real thinking templates, tiny models made to think.

No model here thinks, so the tests make ones that do: bigram GGUFs (tests/bigram.py) whose
greedy answer is `<think>`, a reasoning, `</think>`, an answer, carrying the real chat templates
of Qwen3 and DeepSeek-R1 from the llama-cpp-python sdist (models/templates/), and a Go TEMPLATE
in the shape of Ollama's library qwen3. Driven with the `ollama` client, the `openai` SDK and
LangChain's ChatOllama, as users drive thinking models.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.bigram import create_bigram_model, write_bigram_gguf
from tests.conftest import require
from tests.llama_cpp import LLAMA_CPP

THOUGHT = "The user says hi, so I greet them back."
ANSWER = "Hello! How can I help?"
QUESTION = [{"role": "user", "content": "Hi there"}]
# Qwen3: the generation prompt ends "<|im_start|>assistant\n"; the model opens the tag itself
QWEN3_CHAIN = {"\n": "<think>", "<think>": THOUGHT, THOUGHT: "</think>", "</think>": ANSWER,
               ANSWER: "<|im_end|>"}
# DeepSeek-R1: the generation prompt ends "<think>\n" (thinking on) or "</think>" (off)
R1_CHAIN = {"\n": THOUGHT, THOUGHT: "</think>", "</think>": ANSWER,
            ANSWER: "<｜end▁of▁sentence｜>"}
# a model that never stops thinking (DeepSeek-R1's template)
PONDER = "Hmm. "
PONDER_CHAIN = {"\n": PONDER, PONDER: PONDER}
# Ollama's library qwen3 shape, writing every earlier answer's reasoning back
QWEN3_GO = """\
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Thinking }}<think>{{ .Thinking }}</think>
{{ end }}{{ .Content }}<|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}"""


def template(name: str) -> str:
    return require(LLAMA_CPP / "models" / "templates" / name).read_text()


@pytest.fixture(scope="module")
def thinkers(server, tmp_path_factory) -> dict[str, str]:
    """name → model: qwen3 (its Jinja template), r1 (DeepSeek-R1 Distill's), ponderer (R1's,
    never done thinking), qwen3-go (a Go TEMPLATE over the qwen3 weights)."""
    import ollama

    folder = tmp_path_factory.mktemp("thinkers")
    qwen3, r1, ponderer = (folder / f"{n}.gguf" for n in ("qwen3", "r1", "ponderer"))
    write_bigram_gguf(qwen3, [], QWEN3_CHAIN, control=["<|im_start|>", "<|im_end|>"],
                      chat_template=template("Qwen-Qwen3-0.6B.jinja"))
    write_bigram_gguf(r1, ["<think>"], R1_CHAIN,
                      control=["<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>"],
                      chat_template=template("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"))
    write_bigram_gguf(ponderer, ["<think>", "</think>"], PONDER_CHAIN,
                      control=["<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>"],
                      chat_template=template("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"))
    with ollama.Client(host=server.url) as client:
        return {"qwen3": create_bigram_model(client, "thinker-qwen3", qwen3),
                "r1": create_bigram_model(client, "thinker-r1", r1),
                "ponderer": create_bigram_model(client, "thinker-ponderer", ponderer),
                "qwen3-go": create_bigram_model(client, "thinker-qwen3-go", qwen3,
                                                template=QWEN3_GO)}


def test_thinking_templates_give_the_capability(client, thinkers) -> None:
    for model in thinkers.values():
        assert "thinking" in client.show(model).capabilities, model
    assert "thinking" not in client.show("smollm2:135m").capabilities


@pytest.mark.parametrize("which", ["qwen3", "r1", "qwen3-go"])
def test_reasoning_comes_apart_from_the_answer(client, thinkers, which: str) -> None:
    model = thinkers[which]
    # a thinking model thinks when think is unset, as Ollama's do since v0.12.4
    for think in (None, True, "high"):
        r = client.chat(model=model, messages=QUESTION, think=think)
        assert (r.message.thinking, r.message.content) == (THOUGHT, ANSWER), think
    chunks = list(client.chat(model=model, messages=QUESTION, stream=True))
    thinking = [c.message.thinking for c in chunks if c.message.thinking]
    content = [c.message.content for c in chunks if c.message.content]
    assert "".join(thinking) == THOUGHT and "".join(content) == ANSWER
    # reasoning streams first: no thinking chunk after the first content chunk
    first_content = next(i for i, c in enumerate(chunks) if c.message.content)
    assert not any(c.message.thinking for c in chunks[first_content:])
    g = client.generate(model=model, prompt="Hi there")
    assert (g.thinking, g.response) == (THOUGHT, ANSWER)


def test_think_false_leaves_the_text_alone(client, thinkers) -> None:
    # R1's template closes the tag itself when thinking is off: the answer alone
    r = client.chat(model=thinkers["r1"], messages=QUESTION, think=False)
    assert (r.message.thinking, r.message.content) == (None, ANSWER)
    # Qwen3's weights here think anyway: with think false nothing is parsed, as in Ollama
    r = client.chat(model=thinkers["qwen3"], messages=QUESTION, think=False)
    assert r.message.thinking is None
    assert r.message.content == f"<think>{THOUGHT}</think>{ANSWER}"


def test_reasoning_in_history_reaches_the_template(client, thinkers) -> None:
    model = thinkers["qwen3-go"]
    turn = [*QUESTION, {"role": "assistant", "content": ANSWER}, {"role": "user",
                                                                   "content": "Again"}]
    with_reasoning = [*QUESTION, {"role": "assistant", "content": ANSWER, "thinking": THOUGHT},
                      {"role": "user", "content": "Again"}]
    plain = client.chat(model=model, messages=turn)
    thought = client.chat(model=model, messages=with_reasoning)
    # <think>, the reasoning (one token) and </think>, and the newline after
    assert thought.prompt_eval_count == plain.prompt_eval_count + 4


def test_models_that_cannot_think_say_so(server, client) -> None:
    with pytest.raises(Exception) as e:
        client.chat(model="smollm2:135m", messages=QUESTION, think=True)
    assert e.value.status_code == 400
    assert e.value.error == '"smollm2:135m" does not support thinking'
    assert client.chat(model="smollm2:135m", messages=QUESTION, think=False,
                       options={"num_predict": 2}).message.thinking is None
    r = httpx.post(f"{server.url}/api/chat", json={"model": "smollm2:135m", "think": "deep",
                                                   "messages": QUESTION})
    assert r.status_code == 400
    assert r.json() == {"error": 'invalid think value: "deep" (must be "high", "medium", '
                                 '"low", "max", true, or false)'}


def test_openai_reasoning(server, thinkers) -> None:
    model = thinkers["qwen3"]
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x") as oai:
        r = oai.chat.completions.create(model=model, messages=QUESTION)
        message = r.choices[0].message
        assert (message.model_extra["reasoning"], message.content) == (THOUGHT, ANSWER)
        off = oai.chat.completions.create(model=thinkers["r1"], messages=QUESTION,
                                          reasoning_effort="none")
        assert "reasoning" not in off.choices[0].message.model_extra
        assert off.choices[0].message.content == ANSWER
        chunks = list(oai.chat.completions.create(model=model, messages=QUESTION, stream=True,
                                                  reasoning_effort="low"))
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        assert "".join(d.model_extra.get("reasoning") or "" for d in deltas) == THOUGHT
        assert "".join(d.content or "" for d in deltas) == ANSWER
        # a piece never carries reasoning and content together
        assert not any(d.content and d.model_extra.get("reasoning") for d in deltas)
        with pytest.raises(openai.BadRequestError) as e:
            oai.chat.completions.create(model=model, messages=QUESTION,
                                        extra_body={"reasoning_effort": "extreme"})
        assert "invalid reasoning value" in e.value.message
        # earlier reasoning goes back in as the message's `reasoning`
        again = oai.chat.completions.create(model=thinkers["qwen3-go"], messages=[
            *QUESTION, {"role": "assistant", "content": ANSWER, "reasoning": THOUGHT},
            {"role": "user", "content": "Again"}])
        plain = oai.chat.completions.create(model=thinkers["qwen3-go"], messages=[
            *QUESTION, {"role": "assistant", "content": ANSWER},
            {"role": "user", "content": "Again"}])
        assert again.usage.prompt_tokens == plain.usage.prompt_tokens + 4


def test_langchain_chat_ollama_reasoning(server, thinkers) -> None:
    from langchain_ollama import ChatOllama

    llm = ChatOllama(model=thinkers["qwen3"], base_url=server.url, reasoning=True)
    try:
        reply = llm.invoke("Hi there")
        assert reply.content == ANSWER
        assert reply.additional_kwargs["reasoning_content"] == THOUGHT
        # reasoning=False: think false, Ollama's raw text in the content
        raw = llm.bind(reasoning=False).invoke("Hi there")
        assert raw.content == f"<think>{THOUGHT}</think>{ANSWER}"
    finally:
        llm._client._client.close()  # ChatOllama keeps its httpx client open


def test_run_think_flags(server, thinkers) -> None:
    model = thinkers["qwen3"]
    shown = server.cli("run", model, "Hi there").stdout
    assert shown == f"Thinking...\n{THOUGHT}\n...done thinking.\n\n{ANSWER}\n"
    assert server.cli("run", model, "--hidethinking", "Hi there").stdout == f"{ANSWER}\n"
    raw = server.cli("run", model, "--think=false", "Hi there").stdout
    assert raw == f"<think>{THOUGHT}</think>{ANSWER}\n"
    assert server.cli("run", model, "--think=high", "Hi there").stdout == shown
    assert server.cli("run", model, "--think", "Hi there").stdout == shown
    bad = server.cli("run", model, "--think=deep", "Hi there", check=False)
    assert bad.returncode != 0
    assert 'invalid value for --think: "deep"' in bad.stderr
    refused = server.cli("run", "smollm2:135m", "--think", "Hi there", check=False)
    assert refused.returncode != 0
    assert '"smollm2:135m" does not support thinking' in refused.stderr


def test_repl_set_think_and_nothink(server, thinkers) -> None:
    from tests.e2e.test_cli import chat_on_terminal

    with chat_on_terminal(server, thinkers["qwen3"], columns=200) as send:
        assert f"{THOUGHT}\n...done thinking." in send("Hi there")
        assert "Set 'nothink' mode." in send("/set nothink")
        assert f"<think>{THOUGHT}</think>{ANSWER}" in send("Hi there")
        assert "Set 'think' mode to 'low'." in send("/set think low")
        assert "Thinking..." in send("Hi there")


@pytest.mark.parametrize("which", ["qwen3", "r1"])
def test_format_applies_once_the_reasoning_is_over(client, thinkers, which: str) -> None:
    """As Ollama's: a thinking model thinks freely, then its answer follows the format."""
    r = client.chat(model=thinkers[which], messages=QUESTION, format="json",
                    options={"num_predict": 48})
    assert r.message.thinking == THOUGHT
    assert isinstance(json.loads(r.message.content), dict | list)


def test_reasoning_that_would_use_up_the_budget_is_closed_in_time(client, thinkers) -> None:
    """Beyond Ollama: a model that would think past num_predict has its reasoning closed
    while there is budget left for a whole document ("length" says the budget did it)."""
    r = client.chat(model=thinkers["ponderer"], messages=QUESTION, format="json",
                    options={"num_predict": 48})
    assert r.message.thinking.startswith(PONDER) and set(r.message.thinking.split()) == {"Hmm."}
    assert r.done_reason == "length" and r.eval_count == 48
    assert isinstance(json.loads(r.message.content), dict | list)
    # without a format the reasoning simply runs to the budget
    free = client.chat(model=thinkers["ponderer"], messages=QUESTION,
                       options={"num_predict": 48})
    assert free.message.content == "" and free.done_reason == "length"


# gpt-oss: harmony messages, its real template; the channel tokens are control tokens, as in
# gpt-oss's vocabulary, and "assistant" one token so the answer can follow the prompt's
HARMONY_CONTROL = ["<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|return|>",
                   "<|call|>", "<|constrain|>"]
HARMONY_CHAIN = {"assistant": "<|channel|>", "<|channel|>": "analysis",
                 "analysis": "<|message|>", "<|message|>": THOUGHT, THOUGHT: "<|end|>",
                 "<|end|>": "<|start|>", "<|start|>": "assistant<|channel|>final<|message|>",
                 "assistant<|channel|>final<|message|>": ANSWER, ANSWER: "<|return|>"}
HARMONY_CALL_CHAIN = {"assistant": "<|channel|>",
                      "<|channel|>": "commentary to=functions.get_weather ",
                      "commentary to=functions.get_weather ": "<|constrain|>",
                      "<|constrain|>": "json", "json": "<|message|>",
                      "<|message|>": '{"city": "Paris"}', '{"city": "Paris"}': "<|call|>"}


@pytest.fixture(scope="module")
def gpt_oss(server, tmp_path_factory) -> dict[str, str]:
    import ollama

    folder = tmp_path_factory.mktemp("gpt-oss")
    with ollama.Client(host=server.url) as client:
        models = {}
        for name, chain in (("talks", HARMONY_CHAIN), ("calls", HARMONY_CALL_CHAIN)):
            path = folder / f"{name}.gguf"
            write_bigram_gguf(path, ["assistant"], chain, control=HARMONY_CONTROL,
                              chat_template=template("openai-gpt-oss-120b.jinja"))
            models[name] = create_bigram_model(client, f"harmony-{name}", path)
        return models


def test_gpt_oss_channels(client, server, gpt_oss) -> None:
    model = gpt_oss["talks"]
    assert "thinking" in client.show(model).capabilities
    for think in (None, "low", "high"):
        r = client.chat(model=model, messages=QUESTION, think=think)
        assert (r.message.thinking, r.message.content) == (THOUGHT, ANSWER), think
    streamed = list(client.chat(model=model, messages=QUESTION, stream=True))
    assert "".join(c.message.thinking or "" for c in streamed) == THOUGHT
    assert "".join(c.message.content for c in streamed) == ANSWER
    # the reasoning goes back into the template as the analysis channel of a tool-call turn
    weather = [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    call = client.chat(model=gpt_oss["calls"], messages=QUESTION, tools=weather)
    assert [(c.function.name, dict(c.function.arguments)) for c in call.message.tool_calls] \
        == [("get_weather", {"city": "Paris"})]
    assert call.message.content == ""
    history = [*QUESTION, call.message, {"role": "tool", "content": "Sunny",
                                         "tool_name": "get_weather"}]
    assert client.chat(model=gpt_oss["calls"], messages=history, tools=weather).done
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x") as oai:
        r = oai.chat.completions.create(model=model, messages=QUESTION,
                                        reasoning_effort="high")
        assert (r.choices[0].message.model_extra["reasoning"],
                r.choices[0].message.content) == (THOUGHT, ANSWER)
