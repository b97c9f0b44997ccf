"""Prefix reuse through the live server (issue 14, item 3): the next turn of a chat prefills
only its new message, the K/V of the earlier turns coming from the slot that kept them, and
answers exactly what a cold prefill of the whole conversation answers.

The official `openai` client reads OpenAI's usage.prompt_tokens_details.cached_tokens (beyond
Ollama, which reports no cache use); the cold answer is taken after the model was unloaded
(keep_alive 0), so its prompt meets empty slots."""

from __future__ import annotations

import httpx
import openai

MODEL = "smollm2:135m"


def ask(client: openai.OpenAI, messages: list[dict]) -> tuple[str, int, int]:
    """→ (answer, prompt tokens, prompt tokens served from a slot's cache)."""
    r = client.chat.completions.create(model=MODEL, messages=messages, temperature=0,
                                       max_tokens=16, seed=1)
    details = r.usage.prompt_tokens_details
    return (r.choices[0].message.content or "", r.usage.prompt_tokens,
            details.cached_tokens if details is not None and details.cached_tokens else 0)


def unload(server) -> None:
    r = httpx.post(f"{server.url}/api/generate", json={"model": MODEL, "keep_alive": 0},
                   timeout=120)
    assert r.status_code == 200 and r.json()["done_reason"] == "unload"


def test_the_next_turn_prefills_only_its_new_message(server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="ollamapy")
    unload(server)
    first = [{"role": "system", "content": "You answer in one short sentence."},
             {"role": "user", "content": "What is the capital of France?"}]
    answer, prompt_tokens, cached = ask(client, first)
    assert cached == 0 and answer
    second = [*first, {"role": "assistant", "content": answer},
              {"role": "user", "content": "And of Italy?"}]
    warm, warm_prompt, warm_cached = ask(client, second)
    # the whole first prompt came from the cache (its answer too, where the template wrote
    # it as it was generated); only the new turn was run
    assert prompt_tokens <= warm_cached < warm_prompt
    unload(server)
    cold, cold_prompt, cold_cached = ask(client, second)
    assert cold_cached == 0 and cold_prompt == warm_prompt
    assert warm == cold
