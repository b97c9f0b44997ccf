"""Tiny llama GGUFs that write a chosen text: bigram machines for templates' output formats.

The weights make greedy decoding a lookup: one-hot embeddings, blocks that add nothing, and an
output matrix that maps each token to its successor in `chain`, every other token to EOS. So
the answer follows a fixed chain from the prompt's last token, and a test chooses what the
model "says" (a thinking trace, a tool call in a real template's format) by naming the pieces
as tokens of their own. Printable ASCII is in the vocabulary as GPT-2 byte-level tokens, so any
prompt tokenizes (and a newline).

`create_bigram_model` imports one through the official client, with a Go TEMPLATE or the GGUF's
own Jinja chat template, as a user would.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gguf
import numpy as np

BOS, EOS = "<s>", "</s>"


def byte_level(text: str) -> str:
    """GPT-2's byte-to-unicode spelling of ASCII: bytes up to the space take the characters
    from U+0100 on (a space is "Ġ", a newline "Ċ"), printable ones stand for themselves."""
    return "".join(chr(256 + ord(c)) if ord(c) <= 32 else c for c in text)


def write_bigram_gguf(path: Path, special: Sequence[str], chain: Mapping[str, str], *,
                      chat_template: str | None = None, control: Sequence[str] = ()) -> None:
    """special: multi-character tokens (user-defined: matched in text, shown in output);
    control: control tokens (hidden in output; "<|im_end|>" and the like end generation, as
    llama.cpp's end-of-turn texts do)."""
    chars = ["\n", *(chr(c) for c in range(32, 127))]
    pieces = [p for p in (*special, *control, *chain, *chain.values())
              if p not in (BOS, EOS) and len(p) > 1]
    special = list(dict.fromkeys(pieces))
    control_set = set(control)
    tokens = [BOS, EOS, *special, *(byte_level(c) for c in chars)]
    types = ([gguf.TokenType.CONTROL] * 2
             + [gguf.TokenType.CONTROL if t in control_set else gguf.TokenType.USER_DEFINED
                for t in special]
             + [gguf.TokenType.NORMAL] * len(chars))
    n, dim, ffn = len(tokens), max(128, len(tokens)), 32
    ids = {t: i for i, t in enumerate(tokens)}
    ids.update({c: ids[byte_level(c)] for c in chars})
    out = np.zeros((n, dim), np.float32)
    for i in range(n):  # every token leads to EOS unless the chain says otherwise
        out[ids[EOS], i] = 1.0
    for a, b in chain.items():
        out[ids[EOS], ids[a]] = 0.0
        out[ids[b], ids[a]] = 1.0
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(4096)
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
    if chat_template is not None:
        w.add_chat_template(chat_template)
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


def create_bigram_model(client: Any, name: str, path: Path, *, template: str | None = None,
                        **create: Any) -> str:
    """Import the GGUF at path as `name` through the official `ollama` client (its blob, then
    /api/create), greedy by default."""
    digest = client.create_blob(path)
    assert digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    params = {"temperature": 0, **create.pop("parameters", {})}
    client.create(model=name, files={path.name: digest}, parameters=params,
                  **({"template": template} if template is not None else {}), **create)
    return name


# -- two models several test modules drive ---------------------------------------------------

# A tools model: its Go TEMPLATE uses .Tools and ends the prompt with <|assistant|> (the chain
# writes a tool call) or, after a tool result, with <|answer|> (the chain answers).
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
ANSWER = "It is sunny in Paris."
TOOLS_TEMPLATE = (
    "{{- if .Tools }}<|tools|>{{ end }}{{- $role := \"\" }}"
    "{{- range .Messages }}{{ $role = .Role }}"
    "{{- if eq .Role \"user\" }}<|user|>{{ .Content }}"
    "{{- else if eq .Role \"assistant\" }}<|assistant|>"
    "{{- if .ToolCalls }}<tool_call>{{ range .ToolCalls }}{\"name\": \"{{ .Function.Name }}\", "
    "\"arguments\": {{ json .Function.Arguments }}}{{ end }}</tool_call>"
    "{{- else }}{{ .Content }}{{ end }}"
    "{{- else if eq .Role \"tool\" }}<|tool|>{{ .Content }}{{ end }}{{ end }}"
    "{{- if eq $role \"tool\" }}<|answer|>{{ else }}<|assistant|>{{ end }}")
TOOLS_CHAIN = {"<|assistant|>": "<tool_call>", "<tool_call>": CALL, CALL: "</tool_call>",
               "</tool_call>": EOS, "<|answer|>": ANSWER, ANSWER: EOS}
TOOLS_SPECIAL = ["<|user|>", "<|tool|>", "<|tools|>"]

# A thinking model: its Go TEMPLATE wraps a message's .Thinking in <think> tags (so it has the
# "thinking" capability); the chain thinks, then greets.
THOUGHT = "The user says hi, so I greet them back."
GREETING = "Hello! How can I help?"
THINK_TEMPLATE = (
    "{{- range .Messages }}{{ if eq .Role \"user\" }}<|user|>{{ .Content }}"
    "{{- else if eq .Role \"assistant\" }}<|assistant|>"
    "{{- if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}{{ end }}"
    "{{- end }}<|assistant|>")
THINK_CHAIN = {"<|assistant|>": "<think>", "<think>": THOUGHT, THOUGHT: "</think>",
               "</think>": GREETING, GREETING: EOS}


def create_tools_and_thinker(client: Any, folder: Path, prefix: str) -> dict[str, str]:
    """"tools" → the tools model, "thinker" → the thinking model, imported as PREFIX-tools and
    PREFIX-thinker."""
    tools, thinker = folder / "tools.gguf", folder / "thinker.gguf"
    write_bigram_gguf(tools, TOOLS_SPECIAL, TOOLS_CHAIN)
    write_bigram_gguf(thinker, ["<|user|>"], THINK_CHAIN)
    return {"tools": create_bigram_model(client, f"{prefix}-tools", tools,
                                         template=TOOLS_TEMPLATE),
            "thinker": create_bigram_model(client, f"{prefix}-thinker", thinker,
                                           template=THINK_TEMPLATE)}
