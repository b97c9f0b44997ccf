"""The pre-tokenizer regexes that a GGUF's `tokenizer.ggml.pre` names, as llama.cpp has them.

A byte-level BPE vocabulary was trained on text cut into words by a regex; the GGUF only stores
the name of that split. This table maps the name to its regexes (llama.cpp's pre-type table in
src/llama-vocab.cpp). A list of several regexes is applied in order, each one cutting the pieces
the previous one left: matches and the text between them both become pieces (Hugging Face's
`Split(..., behavior="isolated")`).

Where llama.cpp rewrote a model's regex only because std::regex lacks Unicode classes such as
`\\p{Lu}` (tekken, gpt-4o), we keep the model's own regex: Oniguruma, which `tokenizers` uses,
has those classes. The case-insensitive contractions `(?i:'s|...)` are spelled out as
`'[sS]|...` the way llama.cpp does, so only ASCII letters fold.
"""

from __future__ import annotations

from dataclasses import dataclass

_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"

LLAMA3 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")

QWEN2 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")

QWEN35 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# upper-then-lower and all-upper words, so "HelloWorld" splits as "Hello" "World"
_UPPER = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]"
_LOWER = r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"
TEKKEN = (rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*"
          r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT4O = (rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTIONS}?"
         rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTIONS}?"
         r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# DeepSeek's splits: cased letters (the model's own list of ranges), ASCII/full-width
# punctuation, CJK runs and numbers, each isolated in turn. The escapes are letters that
# Unicode normalization would silently replace (OHM SIGN → Ω, KELVIN SIGN → K, ...)
_DEEPSEEK_LETTERS = (
    "A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗ"
    "ὙὛὝὟ-\u1f7dᾀ-ᾴᾶ-ᾼ\u1fbeῂ-ῄῆ-ῌῐ-\u1fd3ῖ-\u1fdbῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212a-ℭℯ-ℴℹℼ-ℿ"
    "ⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗ"
    "Ａ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃"
)
DEEPSEEK_LLM = (r"[\r\n]", rf"\s?[{_DEEPSEEK_LETTERS}]+", r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
                r"\s+$", r"[一-龥ࠀ-一가-퟿]+", r"\p{N}+")
DEEPSEEK_CODER = (r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", r"[一-龥ࠀ-一가-퟿]+", r"\p{N}")
DEEPSEEK_V3 = (r"\p{N}{1,3}", r"[一-龥぀-ゟ゠-ヿ]+",
               r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"
               r"| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

_BLOOM = r" ?[^(\s|.,!?…。，、।۔،)]+"


@dataclass(frozen=True, slots=True)
class PreTokenizer:
    regexes: tuple[str, ...]
    ignore_merges: bool = False  # a whole piece that is already a token is taken as it is
    add_bos: bool = False  # llama.cpp's default when the GGUF has no add_bos_token key


_DEFAULT = PreTokenizer((r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"))
_LLAMA3 = PreTokenizer((LLAMA3,), ignore_merges=True, add_bos=True)
_GPT2 = PreTokenizer((GPT2,))
_STARCODER = PreTokenizer((r"\p{N}", GPT2))  # every digit alone, then GPT-2's words
_QWEN2 = PreTokenizer((QWEN2,))


def _names(pre: PreTokenizer, *names: str) -> dict[str, PreTokenizer]:
    return dict.fromkeys(names, pre)


PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": _DEFAULT,
    **_names(_LLAMA3, "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
             "midm-2.0", "lfm2", "jina-v5-nano"),
    **_names(PreTokenizer((LLAMA3,)), "dbrx", "smaug-bpe", "glm4", "chatglm-bpe"),
    **_names(_GPT2, "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es",
             "jina-v2-de", "a.x-4.0", "mellum", "modern-bert", "mpt", "olmo", "jais",
             "trillion", "granite-docling", "exaone4", "jina-v1-en", "jina-v2-code",
             "roberta-bpe"),
    **_names(_STARCODER, "starcoder", "refact", "command-r", "smollm", "codeshell", "exaone",
             "minerva-7b", "mellum2"),
    **_names(_QWEN2, "qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2",
             "hunyuan", "solar-open"),
    "qwen35": PreTokenizer((QWEN35,)),
    "falcon": PreTokenizer((r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]")),
    "deepseek-llm": PreTokenizer(DEEPSEEK_LLM),
    "deepseek-coder": PreTokenizer(DEEPSEEK_CODER),
    **_names(PreTokenizer(DEEPSEEK_V3), "deepseek-v3", "hunyuan-dense", "joyai-llm"),
    "tekken": PreTokenizer((TEKKEN,), ignore_merges=True, add_bos=True),
    **_names(PreTokenizer((GPT4O,)), "gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"),
    **_names(PreTokenizer((_BLOOM,)), "poro-chat", "bloom", "gpt3-finnish"),
    "viking": PreTokenizer((_BLOOM, r"\p{N}")),
}


def pre_tokenizer(name: str | None) -> PreTokenizer:
    """The split for `tokenizer.ggml.pre`; a file without the key gets llama.cpp's default."""
    if not name:
        return _DEFAULT
    try:
        return PRE_TOKENIZERS[name]
    except KeyError:
        known = ", ".join(sorted(PRE_TOKENIZERS))
        raise ValueError(f"unknown pre-tokenizer {name!r} (tokenizer.ggml.pre); "
                         f"known: {known}") from None
