"""Structured outputs: Ollama's `format` ("json" or a JSON schema) as a token mask.

    grammars = Grammars(vocab, eos_ids, vocab_size)   # once per loaded model
    compiled = grammars.compile(request_format)       # cached per schema; GrammarError → 400
    matcher = compiled.matcher()                      # one per sequence
    matcher.mask_(logits)                             # disallowed tokens → -inf, every step
    matcher.accept(token)                             # the token that was sampled
    matcher.done                                      # only EOS may follow: stop here

The grammar work (schema → grammar → per-step allowed-token bitmask) is llguidance's, chosen
by measurement over xgrammar (benchmarks/bench_grammar_libs.py). This module owns the rules
around it: which `format` values are valid and the error texts for the others, the whitespace
and closed-object policy that keep a small model from wandering, the cache, and applying the
bitmask to a logits tensor on any device.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import llguidance
import numpy as np
import torch

# Between JSON tokens: nothing, one space, or one or two newlines and up to 20 spaces/tabs of
# indentation. llama.cpp's SPACE_RULE (the grammar Ollama's structured outputs ran on): pretty
# printing still fits, but a model can no longer emit the endless whitespace Ollama's docs warn of.
WHITESPACE = r"(?: |\n{1,2}[ \t]{0,20})?"
_OPTIONS = {
    "whitespace_pattern": WHITESPACE,
    # keywords llguidance cannot enforce (uniqueItems, not, if/then, contains, ...) are
    # ignored, as llama.cpp ignores them, rather than refusing a schema Ollama accepts;
    # Compiled.warnings names them
    "lenient": True,
}
_NUMPY_DTYPES = (torch.float32, torch.float16, torch.float64)  # bfloat16 has no numpy twin


class GrammarError(ValueError):
    """The request's `format` is not "json" nor a usable JSON schema (an HTTP 400)."""


class TokenRejected(RuntimeError):
    """accept() was handed a token the mask did not allow: a bug in the caller."""


def constrains(format: Any) -> bool:
    """False for the `format` values Ollama treats as not set (absent, null, "")."""
    return format is not None and format != ""


def _invalid_format(format: Any) -> GrammarError:
    # Ollama formats the raw JSON with Go's %q; json.dumps of it matches for printable text
    raw = json.dumps(format, separators=(",", ":"), ensure_ascii=False, default=repr)
    return GrammarError(f"invalid format: {json.dumps(raw, ensure_ascii=False)}; "
                        'expected "json" or a valid JSON Schema object')


def _close_objects(schema: Any, close: bool = True) -> Any:
    """The schema with `additionalProperties: false` wherever properties are listed and extra
    ones are not mentioned. JSON Schema allows extra keys by default; llama.cpp's converter,
    and so Ollama, does not, and neither should a 135M model at temperature 0.8 (it invents
    keys and never ends). allOf members stay open: each must admit the keys the others add."""
    if isinstance(schema, list):
        return [_close_objects(s, close) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _VALUE_KEYWORDS:
            out[key] = value
        elif key in _NAME_MAPS and isinstance(value, dict):
            out[key] = {name: _close_objects(sub) for name, sub in value.items()}
        else:
            out[key] = _close_objects(value, close=key != "allOf")
    if close and "properties" in out and not (_OPEN_KEYWORDS & out.keys()):
        out["additionalProperties"] = False
    return out


_VALUE_KEYWORDS = {"enum", "const", "required", "examples", "default"}  # JSON data, no schemas
_NAME_MAPS = {"properties", "patternProperties", "$defs", "definitions"}  # name → subschema
_OPEN_KEYWORDS = {"additionalProperties", "patternProperties", "unevaluatedProperties", "allOf"}


class Matcher:
    """One sequence's position in the grammar."""

    def __init__(self, inner: llguidance.LLMatcher, vocab_size: int,
                 eos_ids: frozenset[int], digits: DigitRuns, closer: Closer) -> None:
        self._inner = inner
        self.vocab_size = vocab_size
        self._eos_ids = eos_ids
        self._digits = digits
        self._closer = closer
        self._run = 0  # digits at the end of the output so far
        # one bit per token, token i at bit i % 32 of word i // 32 (llguidance's layout)
        self._bits = torch.empty(1, (vocab_size + 31) // 32, dtype=torch.int32)

    def mask_(self, logits: torch.Tensor) -> None:
        """Sets every token the grammar forbids next to -inf, in place; (vocab,) logits."""
        if logits.shape != (self.vocab_size,):
            raise ValueError(f"logits {tuple(logits.shape)}, expected ({self.vocab_size},)")
        _fill(self._inner, self._bits[0])
        _apply_(logits.unsqueeze(0), self._bits)
        if self._run >= MAX_DIGIT_RUN:
            self._digits.end_run_(logits)

    def accept(self, token: int) -> None:
        token = int(token)
        if token in self._eos_ids and self._inner.is_accepting():
            self._inner.consume_token(token)  # the document is complete: EOS ends it
            return
        # try_consume, unlike consume, leaves the matcher usable when it refuses
        if self._inner.try_consume_tokens([token]) != 1:
            raise TokenRejected(f"token {token} is not allowed by the grammar here")
        self._run = self._digits.run_after(self._run, token)

    @property
    def done(self) -> bool:
        """The document is complete: the grammar allows nothing but EOS now."""
        return self._inner.is_stopped()

    def close_within(self, token: int, left: int) -> int | None:
        """None if the document can still be finished in `left` tokens after `token` (the
        one sampled); else the token to take instead: the first of the shortest-effort finish
        from here, so a budget that runs out ends on a complete document."""
        token = int(token)
        if token in self._eos_ids:
            return None
        after = self._inner.deep_copy()
        if after.try_consume_tokens([token]) != 1:  # accept() will say so
            return None
        if self._closer.finish(after, left) is not None:
            return None
        finish = self._closer.finish(self._inner, left + 1)
        return finish[0] if finish else None  # None: no finish fits even from here


class Compiled:
    """One `format`'s grammar, compiled for one vocabulary; shared by all its sequences."""

    def __init__(self, prototype: llguidance.LLMatcher, vocab_size: int,
                 eos_ids: frozenset[int], key: str, digits: DigitRuns, closer: Closer) -> None:
        self._prototype = prototype  # never advanced: each matcher() starts from a copy
        self.vocab_size = vocab_size
        self.eos_ids = eos_ids
        self._digits = digits
        self._closer = closer
        self.key = key
        self.warnings: tuple[str, ...] = tuple(prototype.get_grammar_warnings())

    def matcher(self) -> Matcher:
        # a copy shares the compiled lexer and parser tables: microseconds, not a recompile
        return Matcher(self._prototype.deep_copy(), self.vocab_size, self.eos_ids,
                       self._digits, self._closer)


class Grammars:
    """Compiles `format` values against one model's vocabulary; thread-safe, LRU-cached."""

    def __init__(self, vocab: Sequence[bytes], eos_ids: Iterable[int], vocab_size: int,
                 *, cache_size: int = 64) -> None:
        eos = sorted(i for i in set(eos_ids) if 0 <= i < vocab_size)
        if not eos:
            raise ValueError("a grammar needs an end-of-sequence token to end on")
        if len(vocab) > vocab_size:
            raise ValueError(f"{len(vocab)} tokens do not fit in vocab_size {vocab_size}")
        # llguidance marks special tokens with a 0xFF prefix (never valid UTF-8): control
        # tokens (b"") and the logits' padding rows past the tokenizer's list become
        # tokens no grammar text can match, EOS aside
        tokens = [bytes(b) if i < len(vocab) and b else b"\xff<|special_%d|>" % i
                  for i, b in enumerate(list(vocab) + [b""] * (vocab_size - len(vocab)))]
        special = [i for i, b in enumerate(tokens) if b[:1] == b"\xff"]
        # llguidance tokenizes forced text ('{"name":') to choose its first token; it asks a
        # Python callable. Greedy longest match over this vocabulary agrees with smollm2's BPE
        # on JSON keys and punctuation, and needs no tokenizer here: a second LLTokenizer
        # without slices gives it (~0.1 s once per model).
        greedy = llguidance.LLTokenizer(
            llguidance.TokenizerWrapper(_Vocab(tokens, special, eos, None)),
            n_vocab=vocab_size, eos_token=eos, slices=[])
        self._tokenizer = llguidance.LLTokenizer(
            llguidance.TokenizerWrapper(_Vocab(tokens, special, eos, greedy.greedy_tokenize)),
            n_vocab=vocab_size, eos_token=eos)
        self.vocab_size = vocab_size
        self.eos_ids = frozenset(eos)
        self._digits = DigitRuns(tokens)
        self._closer = Closer(tokens, self.eos_ids)
        self._cache: OrderedDict[str, Compiled] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def compile(self, format: str | Mapping[str, Any]) -> Compiled:
        if isinstance(format, str) and format == "json":
            schema: Any = {"type": "object"}  # Ollama's JSON mode: any object at the root
        elif isinstance(format, Mapping):
            schema = _close_objects(dict(format))
        else:
            raise _invalid_format(format)
        try:
            # key order kept: llguidance emits properties in schema order, so schemas that
            # differ only in order are different grammars
            key = json.dumps(schema, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise _invalid_format(format) from e
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        compiled = self._compile(key)  # outside the lock: llguidance drops the GIL to build
        with self._lock:
            compiled = self._cache.setdefault(key, compiled)  # a racing thread may have won
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return compiled

    def _compile(self, key: str) -> Compiled:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(key, overrides=_OPTIONS)
        prototype = llguidance.LLMatcher(self._tokenizer, grammar, log_level=0)
        if not prototype.is_error():
            # the first mask builds the lexer states every copy then shares; it also
            # surfaces a schema that cannot even start (e.g. an unsatisfiable pattern)
            _fill(prototype, torch.empty((self.vocab_size + 31) // 32, dtype=torch.int32))
        if prototype.is_error():
            detail = prototype.get_error().split("\n")[0]
            raise GrammarError(f"invalid JSON schema in format: {detail}")
        return Compiled(prototype, self.vocab_size, self.eos_ids, key, self._digits,
                        self._closer)


class DigitRuns:
    """Ends runaway numbers. JSON lets a number have any number of digits, and a small model
    at temperature 0.8 sometimes keeps writing them until num_predict cuts the document off.
    llama.cpp's schema grammars (which Ollama's structured outputs used) allow at most 16
    digits in a number's integral and decimal parts; here, once the output ends in 16 digits,
    tokens made only of digits are masked, so the grammar has to close the number. Never
    when nothing else is allowed (a pattern may ask for a long run of digits)."""

    def __init__(self, tokens: Sequence[bytes]) -> None:
        self.digit_tokens = [bool(t) and t.isdigit() for t in tokens]
        self.only_digits = torch.tensor(self.digit_tokens)  # (vocab,) bool
        # digits at the end of each token: its contribution to a run that continues
        self.trailing = [len(t) - len(t.rstrip(b"0123456789")) for t in tokens]

    def run_after(self, run: int, token: int) -> int:
        return run + self.trailing[token] if self.digit_tokens[token] else self.trailing[token]

    def end_run_(self, logits: torch.Tensor) -> None:
        only = self.only_digits.to(logits.device)
        if bool(torch.isfinite(logits.masked_fill(only, float("-inf"))).any()):
            logits.masked_fill_(only, float("-inf"))


MAX_DIGIT_RUN = 16


class Closer:
    """Finishes a document in few tokens from any state of its grammar: greedy walks that
    take the tokens the grammar forces, else the first allowed of a preference order, else
    the lowest allowed token id, until the document is complete; the shorter of two walks:
    CLOSING (end the open string, object or array, go on to the next member, then the
    shortest values) and the same with the brackets first (an empty object or array ends at
    once, where CLOSING would open a key). Not the shortest finish (finding that is a search);
    tests/engine/test_grammar.py checks that it finishes random partial documents of every
    test schema within seq.CLOSING_WINDOW tokens."""

    CLOSING = (b'"', b"}", b"]", b",", b"1", b"0", b"null", b"false", b'""', b"{}", b"[]",
               b"{", b"[", b":")
    BRACKETS_FIRST = (b"}", b"]", *(t for t in CLOSING if t not in (b"}", b"]")))

    def __init__(self, tokens: Sequence[bytes], eos_ids: frozenset[int]) -> None:
        first: dict[bytes, int] = {}
        for i, t in enumerate(tokens):
            first.setdefault(t, i)
        self.orders = [[first[t] for t in order if t in first]
                       for order in (self.CLOSING, self.BRACKETS_FIRST)]
        self._vocab_size = len(tokens)
        self._eos = torch.tensor(sorted(eos_ids))
        self._shifts = torch.arange(32, dtype=torch.int32)

    def finish(self, inner: llguidance.LLMatcher, limit: int) -> list[int] | None:
        """The shorter walk's tokens from inner's state (which is left as it is), or None if
        both would be more than `limit`."""
        walks = [w for w in (self._walk(inner, limit, order) for order in self.orders)
                 if w is not None]
        return min(walks, key=len) if walks else None

    def _walk(self, inner: llguidance.LLMatcher, limit: int, preferred: list[int]
              ) -> list[int] | None:
        m = inner.deep_copy()
        bits = torch.empty((self._vocab_size + 31) // 32, dtype=torch.int32)
        path: list[int] = []
        while len(path) <= limit:
            if m.is_accepting():
                return path
            if forced := m.compute_ff_tokens():
                m.consume_tokens(forced)
                path += forced
                continue
            _fill(m, bits)
            token = next((t for t in preferred if int(bits[t // 32]) >> (t % 32) & 1), None)
            if token is None:
                allowed = (bits.view(-1, 1) >> self._shifts & 1).flatten()[:self._vocab_size]
                allowed[self._eos] = 0
                if not allowed.any():
                    return None
                token = int(allowed.nonzero()[0])
            m.consume_token(token)
            path.append(token)
        return None


class _Vocab:
    """What llguidance.TokenizerWrapper reads from a tokenizer."""

    def __init__(self, tokens: list[bytes], special: list[int], eos: list[int],
                 greedy: Any) -> None:
        self.tokens, self.special_token_ids = tokens, special
        self.eos_token_id, self.bos_token_id = eos[0], None
        self._greedy = greedy

    def __call__(self, text: bytes) -> list[int]:
        if self._greedy is None:
            return []
        return self._greedy(text.decode("utf-8", errors="replace"))


def _fill(inner: llguidance.LLMatcher, bits: torch.Tensor) -> None:
    inner.unsafe_compute_mask_ptr(bits.data_ptr(), bits.numel() * bits.element_size())
    if inner.is_error():
        raise RuntimeError(f"grammar matcher failed: {inner.get_error()}")


def _apply_(logits: torch.Tensor, bits: torch.Tensor) -> None:
    """logits (B, vocab) on any device; bits (B, words) int32 on the CPU."""
    B, V = logits.shape
    if (logits.device.type == "cpu" and logits.dtype in _NUMPY_DTYPES
            and logits.is_contiguous() and not logits.requires_grad):
        # numpy runs this pass on the calling thread; torch's would wait on its intra-op
        # pool, which on a busy machine costs more than the pass (bench_constrained.py)
        allowed = np.unpackbits(bits.numpy().view(np.uint8), axis=1, count=V,
                                bitorder="little")  # (B, V) of 0/1; x86 and arm are LE
        np.putmask(logits.numpy(), allowed == 0, -np.inf)
        return
    # elsewhere (CUDA, bfloat16): ship the 6 KiB bitmask, not a 49k-entry mask, and unpack
    # it on the logits' device
    words = bits.to(logits.device)
    shifts = torch.arange(32, dtype=torch.int32, device=logits.device)
    allowed = ((words.unsqueeze(-1) >> shifts) & 1).view(B, -1)[:, :V]  # (B, V)
    logits.masked_fill_(allowed == 0, float("-inf"))


def mask_batch_(logits: torch.Tensor, matchers: Sequence[Matcher | None]) -> None:
    """mask_ for every row of (B, vocab) logits, with one pass over the logits; a None row is
    left unconstrained. The masks are computed one after the other, not on llguidance's
    LLExecutor thread pool: each mask takes microseconds and applying it is most of the cost,
    so the pool's hand-offs cost more than they save on a small CPU (README.md, "Speed")."""
    if len(matchers) != logits.shape[0]:
        raise ValueError(f"{len(matchers)} matchers for {logits.shape[0]} rows of logits")
    if all(m is None for m in matchers):
        return
    if any(m is not None and m.vocab_size != logits.shape[1] for m in matchers):
        raise ValueError(f"logits of {logits.shape[1]} tokens for another vocabulary")
    bits = torch.full((len(matchers), (logits.shape[1] + 31) // 32), -1,  # -1: all allowed
                      dtype=torch.int32)
    for row, m in enumerate(matchers):
        if m is not None:
            _fill(m._inner, bits[row])
    _apply_(logits, bits)
    for row, m in enumerate(matchers):
        if m is not None and m._run >= MAX_DIGIT_RUN:
            m._digits.end_run_(logits[row])
