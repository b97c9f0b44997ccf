"""Structured outputs: whatever the logits, the masked output parses and validates.

The "model" here is random logits (seeded) plus a pull towards closing tokens that grows with
the step, like a model that wants to finish: strings without maxLength end in tens of steps
instead of hundreds, and every token is still chosen by the mask.
"""

from __future__ import annotations

import json
import random
import threading

import jsonschema
import pytest
import torch

from ollamapy.engine.grammar import (
    WHITESPACE,
    GrammarError,
    Grammars,
    Matcher,
    TokenRejected,
    constrains,
    mask_batch_,
)
from ollamapy.engine.seq import CLOSING_WINDOW
from tests.conftest import model_path

MAX_STEPS = 600

SCHEMAS: dict[str, dict] = {
    "flat": {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 150}},
        "required": ["name", "age"]},
    "nested_object": {"type": "object", "properties": {
        "user": {"type": "object", "properties": {
            "id": {"type": "integer"},
            "address": {"type": "object", "properties": {
                "city": {"type": "string", "maxLength": 12},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                "required": ["city", "zip"]}},
            "required": ["id", "address"]}},
        "required": ["user"]},
    "array_bounds": {"type": "object", "properties": {
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8},
                 "minItems": 1, "maxItems": 3}},
        "required": ["tags"]},
    "enum": {"type": "object", "properties": {
        "status": {"enum": ["todo", "in_progress", "done"]},
        "priority": {"type": "integer", "enum": [1, 2, 3]}},
        "required": ["status", "priority"]},
    "booleans_integers": {"type": "object", "properties": {
        "flag": {"type": "boolean"},
        "count": {"type": "integer", "minimum": 1, "maximum": 9}},
        "required": ["flag", "count"]},
    "numbers": {"type": "object", "properties": {
        "price": {"type": "number", "minimum": 0, "maximum": 1000},
        "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}},
        "required": ["price", "ratio"]},
    "string_lengths": {"type": "object", "properties": {
        "code": {"type": "string", "minLength": 3, "maxLength": 5},
        "note": {"type": "string", "minLength": 1, "maxLength": 2}},
        "required": ["code", "note"]},
    "nullable_type_list": {"type": "object", "properties": {
        "nickname": {"type": ["string", "null"], "maxLength": 10},
        "score": {"type": ["number", "null"]}},
        "required": ["nickname", "score"]},
    "nullable_anyof": {"type": "object", "properties": {
        "parent": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        "label": {"anyOf": [{"type": "string", "maxLength": 6}, {"type": "boolean"}]}},
        "required": ["parent", "label"]},
    "defs_ref": {"type": "object", "$defs": {
        "Point": {"type": "object", "properties": {
            "x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"]}},
        "properties": {"start": {"$ref": "#/$defs/Point"}, "end": {"$ref": "#/$defs/Point"}},
        "required": ["start", "end"]},
    "array_of_objects": {"type": "object", "properties": {
        "items": {"type": "array", "maxItems": 4, "items": {
            "type": "object", "properties": {
                "id": {"type": "integer"}, "done": {"type": "boolean"}},
            "required": ["id", "done"]}}},
        "required": ["items"]},
    "optional_only": {"type": "object", "properties": {
        "a": {"type": "integer"}, "b": {"type": "string", "maxLength": 4},
        "c": {"type": "boolean"}}},
    "const": {"type": "object", "properties": {
        "version": {"const": 2}, "kind": {"const": "event"},
        "payload": {"type": "object", "properties": {"ok": {"type": "boolean"}},
                    "required": ["ok"]}},
        "required": ["version", "kind", "payload"]},
    "deep_nesting": {"type": "object", "properties": {"a": {"type": "object", "properties": {
        "b": {"type": "object", "properties": {"c": {"type": "object", "properties": {
            "d": {"type": "array", "items": {"type": "integer"}, "maxItems": 2}},
            "required": ["d"]}}, "required": ["c"]}}, "required": ["b"]}},
        "required": ["a"]},
    "tuple": {"type": "array", "prefixItems": [
        {"type": "integer"}, {"type": "string", "maxLength": 5}, {"type": "boolean"}],
        "items": False, "minItems": 3},
    "patterns_formats": {"type": "object", "properties": {
        "phone": {"type": "string", "pattern": "^\\+?[0-9]{7,12}$"},
        "day": {"type": "string", "format": "date"},
        "id": {"type": "string", "format": "uuid"}},
        "required": ["phone", "day", "id"]},
    "root_array": {"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": 5},
                   "minItems": 2, "maxItems": 5},
    "pydantic_style": {  # what pydantic's model_json_schema() emits for a model with a sub-model
        "$defs": {"Pet": {"properties": {
            "name": {"title": "Name", "type": "string", "maxLength": 10},
            "species": {"enum": ["cat", "dog"], "title": "Species", "type": "string"}},
            "required": ["name", "species"], "title": "Pet", "type": "object"}},
        "properties": {
            "owner": {"title": "Owner", "type": "string", "maxLength": 10},
            "pets": {"items": {"$ref": "#/$defs/Pet"}, "title": "Pets", "type": "array",
                     "maxItems": 2},
            "age": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None,
                    "title": "Age"}},
        "required": ["owner", "pets"], "title": "Person", "type": "object"},
    "mixed_enum": {"type": "object", "properties": {
        "choice": {"enum": ["a", 1, True, None, {"k": "v"}]}}, "required": ["choice"]},
    "matrix": {"type": "object", "properties": {"rows": {"type": "array", "maxItems": 3,
        "items": {"type": "array", "minItems": 1, "maxItems": 3, "items": {"type": "number"}}}},
        "required": ["rows"]},
}


@pytest.fixture(scope="module")
def tokenizer():
    from ollamapy.loading.gguf import read_gguf
    from ollamapy.text.tokenizer import Tokenizer

    return Tokenizer.from_gguf_metadata(read_gguf(model_path("smollm2-135m.gguf")).metadata)


def vocab_of(tokenizer) -> list[bytes]:
    return [b"" if tokenizer.is_control(i) else tokenizer.token_bytes(i)
            for i in range(tokenizer.vocab_size)]


@pytest.fixture(scope="module")
def grammars(tokenizer) -> Grammars:
    return Grammars(vocab_of(tokenizer), tokenizer.eos_ids, tokenizer.vocab_size)


@pytest.fixture(scope="module")
def closers(tokenizer) -> torch.Tensor:
    # tokens that end something (a string, an object, an array) and EOS: the "wants to
    # finish" direction of the random model
    pull = torch.tensor([any(c in tokenizer.token_bytes(i) for c in b'"}]')
                         for i in range(tokenizer.vocab_size)], dtype=torch.float32)
    pull[list(tokenizer.eos_ids)] = 1.0
    return pull


def random_decode(matcher: Matcher, tokenizer, closers: torch.Tensor, seed: int) -> str:
    gen = torch.Generator().manual_seed(seed)
    out: list[int] = []
    for step in range(MAX_STEPS):
        logits = torch.randn(tokenizer.vocab_size, generator=gen) + closers * min(step / 50, 4)
        matcher.mask_(logits)
        token = int(logits.argmax())
        if token in tokenizer.eos_ids:
            break
        matcher.accept(token)
        out.append(token)
        if matcher.done:
            break
    else:
        pytest.fail(f"no complete document in {MAX_STEPS} steps: {tokenizer.decode(out)!r}")
    return tokenizer.decode(out)


class NotAllowed(Exception):
    """feed() found no allowed token that spells the rest of its text."""


def feed(matcher: Matcher, text: str, tokenizer, vocab: list[bytes]) -> list[float]:
    """Accepts `text` token by token (the longest allowed token that matches next) and
    returns EOS's masked logit before each step and after the last."""
    eos = min(tokenizer.eos_ids)
    rest, eos_logits = text.encode(), []
    while True:
        logits = torch.zeros(tokenizer.vocab_size)
        matcher.mask_(logits)
        eos_logits.append(float(logits[eos]))
        if not rest:
            return eos_logits
        allowed = torch.nonzero(logits == 0).flatten().tolist()
        spelled = [t for t in allowed if vocab[t] and rest.startswith(vocab[t])]
        if not spelled:
            raise NotAllowed(f"nothing allowed spells {rest!r}")
        token = max(spelled, key=lambda t: len(vocab[t]))
        matcher.accept(token)
        rest = rest[len(vocab[token]):]


# -- every output validates ---------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_random_logits_give_valid_documents(name, grammars, tokenizer, closers):
    schema = SCHEMAS[name]
    compiled = grammars.compile(schema)
    for seed in range(3):
        text = random_decode(compiled.matcher(), tokenizer, closers, seed)
        jsonschema.validate(json.loads(text), schema, format_checker=jsonschema.FormatChecker())


def test_json_mode_gives_an_object(grammars, tokenizer, closers):
    compiled = grammars.compile("json")
    for seed in range(5):
        assert isinstance(json.loads(random_decode(compiled.matcher(), tokenizer, closers, seed)),
                          dict)


def test_json_mode_refuses_a_bare_value(grammars, tokenizer):
    matcher = grammars.compile("json").matcher()
    for text in ("[", '"', "1", "true"):
        with pytest.raises(TokenRejected):
            matcher.accept(tokenizer.encode(text, add_special=False)[0])


def test_listed_properties_close_the_object(grammars, tokenizer):
    # as in llama.cpp's converter: no invented keys unless the schema asks for them
    vocab = vocab_of(tokenizer)
    closed = grammars.compile({"type": "object", "properties": {"a": {"type": "integer"}}})
    with pytest.raises(NotAllowed):
        feed(closed.matcher(), '{"b":1}', tokenizer, vocab)
    feed(closed.matcher(), '{"a":1}', tokenizer, vocab)
    open_ = grammars.compile({"type": "object", "properties": {"a": {"type": "integer"}},
                              "additionalProperties": True})
    feed(open_.matcher(), '{"b":1}', tokenizer, vocab)


# -- EOS and done ---------------------------------------------------------------------------------
def test_eos_is_masked_until_the_document_is_complete(grammars, tokenizer):
    matcher = grammars.compile(SCHEMAS["flat"]).matcher()
    eos = feed(matcher, '{"name": "Ann", "age": 42}', tokenizer, vocab_of(tokenizer))
    assert all(v == float("-inf") for v in eos[:-1])
    assert eos[-1] == 0.0 and matcher.done


def test_done_only_at_the_end(grammars, tokenizer):
    matcher = grammars.compile("json").matcher()
    feed(matcher, '{"a": [1, {"b": null}]', tokenizer, vocab_of(tokenizer))
    assert not matcher.done
    feed(matcher, "}", tokenizer, vocab_of(tokenizer))
    assert matcher.done


def test_accepting_eos_ends_a_complete_document(grammars, tokenizer):
    vocab, eos = vocab_of(tokenizer), min(tokenizer.eos_ids)
    matcher = grammars.compile("json").matcher()
    feed(matcher, '{"a":1}', tokenizer, vocab)
    matcher.accept(eos)  # the engine may hand the sampled EOS back: fine once done
    with pytest.raises(TokenRejected):
        matcher.accept(tokenizer.encode(" ", add_special=False)[0])
    # a bare integer could go on ("12" → "123") yet is complete: EOS allowed, then done
    number = grammars.compile({"type": "integer"}).matcher()
    assert feed(number, "12", tokenizer, vocab)[-1] == 0.0 and not number.done
    number.accept(eos)
    assert number.done


def test_a_disallowed_token_raises_and_the_matcher_goes_on(grammars, tokenizer):
    matcher = grammars.compile(SCHEMAS["flat"]).matcher()
    with pytest.raises(TokenRejected, match="not allowed"):
        matcher.accept(tokenizer.encode("hello", add_special=False)[0])
    with pytest.raises(TokenRejected):
        matcher.accept(min(tokenizer.eos_ids))  # EOS before anything
    feed(matcher, '{"name":"x","age":1}', tokenizer, vocab_of(tokenizer))
    assert matcher.done


def test_whitespace_is_bounded(grammars, tokenizer):
    # WHITESPACE: one space, or 1-2 newlines and up to 20 spaces/tabs, between tokens
    assert WHITESPACE == r"(?: |\n{1,2}[ \t]{0,20})?"
    vocab = vocab_of(tokenizer)
    feed(grammars.compile("json").matcher(), '{\n  "a": 1,\n\n\t"b": 2\n}', tokenizer, vocab)
    for runaway in ("{  ", "{\n\n\n", "{\n" + " " * 21):
        with pytest.raises(NotAllowed):
            feed(grammars.compile("json").matcher(), runaway, tokenizer, vocab)


# -- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("format", "shown"), [
    ("xml", '"\\"xml\\""'), (5, '"5"'), ([], '"[]"'), ("JSON", '"\\"JSON\\""'),
    (None, '"null"'), (True, '"true"'),
])
def test_formats_that_are_not_schemas(grammars, format, shown):
    # Ollama: fmt.Errorf("invalid format: %q; ...", req.Format), %q of the raw JSON
    with pytest.raises(GrammarError) as e:
        grammars.compile(format)
    assert str(e.value) == f'invalid format: {shown}; expected "json" or a valid JSON Schema object'


@pytest.mark.parametrize("schema", [
    {"type": "nonsense"},
    {"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}},
    {"type": "integer", "minimum": 5, "maximum": 1},
    {"type": "string", "pattern": "(?<=a)b"},
])
def test_invalid_schemas(grammars, schema):
    with pytest.raises(GrammarError, match="^invalid JSON schema in format: .+"):
        grammars.compile(schema)


def test_grammar_error_is_a_value_error():
    assert issubclass(GrammarError, ValueError)


def test_unset_formats():
    assert not constrains(None) and not constrains("")
    assert constrains("json") and constrains({}) and constrains("xml")


def test_keywords_it_cannot_enforce_are_warned_not_refused(grammars):
    # Ollama (llama.cpp) ignores uniqueItems & co; refusing them would break its clients
    compiled = grammars.compile({"type": "array", "items": {"type": "integer"},
                                 "uniqueItems": True})
    assert any("uniqueItems" in w for w in compiled.warnings)


# -- cache, threads -----------------------------------------------------------------------------
def test_the_cache_returns_the_same_compiled_grammar(grammars):
    a = grammars.compile(json.loads(json.dumps(SCHEMAS["flat"])))
    assert grammars.compile(json.loads(json.dumps(SCHEMAS["flat"]))) is a
    assert grammars.compile("json") is grammars.compile("json")
    # property order is output order: a reordered schema is another grammar
    reordered = dict(reversed(list(SCHEMAS["flat"].items())))
    reordered["properties"] = dict(reversed(list(SCHEMAS["flat"]["properties"].items())))
    assert grammars.compile(reordered) is not a


def test_the_cache_evicts_the_least_recently_used(tokenizer):
    small = Grammars(vocab_of(tokenizer), tokenizer.eos_ids, tokenizer.vocab_size, cache_size=2)
    a, b = small.compile(SCHEMAS["flat"]), small.compile(SCHEMAS["enum"])
    assert small.compile(SCHEMAS["flat"]) is a  # a is now the most recent
    small.compile(SCHEMAS["const"])  # evicts b
    assert small.compile(SCHEMAS["flat"]) is a
    assert small.compile(SCHEMAS["enum"]) is not b


def test_compile_from_many_threads(grammars, tokenizer, closers):
    names = sorted(SCHEMAS)[:8]
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            compiled = grammars.compile(SCHEMAS[names[i % len(names)]])
            compiled.matcher().mask_(torch.zeros(tokenizer.vocab_size))
            results[i] = compiled
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(len(names)):
        assert results[i] is results[i + len(names)]


# -- the mask itself ---------------------------------------------------------------------------
def test_batched_masks_equal_single_masks(grammars, tokenizer):
    vocab = vocab_of(tokenizer)
    matchers: list[Matcher | None] = [grammars.compile(SCHEMAS[n]).matcher()
                                      for n in ("flat", "enum", "tuple")]
    feed(matchers[0], '{"name":"', tokenizer, vocab)
    matchers.insert(1, None)
    logits = torch.randn(len(matchers), tokenizer.vocab_size, generator=torch.Generator()
                         .manual_seed(0))
    expected = logits.clone()
    for row, m in enumerate(matchers):
        if m is not None:
            m.mask_(expected[row])
    mask_batch_(logits, matchers)
    assert torch.equal(logits, expected)
    assert torch.isfinite(logits[1]).all()  # the unconstrained row is untouched


def test_the_torch_path_equals_the_numpy_path(grammars, tokenizer):
    # bfloat16 has no numpy twin: it takes the path CUDA logits take
    matcher = grammars.compile(SCHEMAS["enum"]).matcher()
    feed(matcher, '{"status":"', tokenizer, vocab_of(tokenizer))
    logits = torch.randn(tokenizer.vocab_size, generator=torch.Generator().manual_seed(1))
    fast, slow = logits.clone(), logits.clone().to(torch.bfloat16)
    matcher.mask_(fast)
    matcher.mask_(slow)
    assert torch.equal(torch.isinf(fast), torch.isinf(slow))
    assert 0 < int(torch.isfinite(fast).sum()) < 10  # "todo", "in_progress", "done" pieces


def test_logits_wider_than_the_tokenizer(tokenizer):
    # models pad the output layer past the tokenizer's list; those rows are never allowed
    vocab = vocab_of(tokenizer)
    wide = Grammars(vocab, tokenizer.eos_ids, len(vocab) + 64)
    logits = torch.zeros(len(vocab) + 64)
    wide.compile("json").matcher().mask_(logits)
    assert torch.isinf(logits[len(vocab):]).all() and torch.isfinite(logits).any()
    with pytest.raises(ValueError, match="expected"):
        wide.compile("json").matcher().mask_(torch.zeros(len(vocab)))


def test_a_runaway_number_is_ended_after_sixteen_digits(grammars, tokenizer):
    """Logits that always prefer another digit: the number still ends (llama.cpp's limit)."""
    vocab = vocab_of(tokenizer)
    digit = next(i for i, b in enumerate(vocab) if b == b"7")
    matcher = grammars.compile({"type": "object", "properties": {"n": {"type": "number"}},
                                "required": ["n"]}).matcher()
    out = b""
    for _ in range(200):
        logits = torch.zeros(grammars.vocab_size)
        logits[digit] = 10.0  # the model wants digits forever
        matcher.mask_(logits)
        token = int(torch.argmax(logits))
        if token in tokenizer.eos_ids:
            break
        matcher.accept(token)
        out += vocab[token]
        if matcher.done:
            break
    doc = json.loads(out)
    assert isinstance(doc["n"], int | float) and len(str(doc["n"]).replace(".", "")) <= 20


def test_a_pattern_may_still_ask_for_long_digit_runs(grammars, tokenizer):
    vocab = vocab_of(tokenizer)
    matcher = grammars.compile({"type": "object", "properties": {
        "id": {"type": "string", "pattern": "^[0-9]{24}$"}}, "required": ["id"]}).matcher()
    out = b""
    for _ in range(200):
        logits = torch.zeros(grammars.vocab_size)
        matcher.mask_(logits)
        token = int(torch.argmax(logits))
        if token in tokenizer.eos_ids:
            break
        matcher.accept(token)
        out += vocab[token]
        if matcher.done:
            break
    assert len(json.loads(out)["id"]) == 24


def test_any_partial_document_is_finished_within_the_closing_window(grammars, tokenizer
                                                                    ) -> None:
    """Random allowed tokens (a model that rambles), cut anywhere in its first 60 tokens: the
    finish the budget would take is at most CLOSING_WINDOW tokens and gives a document that
    parses and validates, for every test schema."""
    vocab = vocab_of(tokenizer)
    rng = random.Random(0)
    eos = torch.tensor(sorted(tokenizer.eos_ids))
    for name, schema in SCHEMAS.items():
        compiled = grammars.compile(schema)
        for _ in range(6):
            matcher, tokens = compiled.matcher(), []
            for _ in range(rng.randint(0, 60)):
                if matcher.done:
                    break
                logits = torch.zeros(tokenizer.vocab_size)
                matcher.mask_(logits)
                logits[eos] = float("-inf")
                token = rng.choice(torch.nonzero(logits == 0).flatten().tolist())
                matcher.accept(token)
                tokens.append(token)
            finish = matcher._closer.finish(matcher._inner, CLOSING_WINDOW)
            assert finish is not None, (name, tokens)
            text = b"".join(vocab[t] for t in tokens + finish).decode()
            jsonschema.validate(json.loads(text), schema)


def test_close_within_takes_the_finish_only_when_the_budget_needs_it(grammars, tokenizer
                                                                     ) -> None:
    vocab = vocab_of(tokenizer)
    matcher = grammars.compile(SCHEMAS["flat"]).matcher()
    feed(matcher, '{"name": "Ada', tokenizer, vocab)
    finish = matcher._closer.finish(matcher._inner, CLOSING_WINDOW)
    assert finish is not None
    letter = next(i for i, t in enumerate(vocab) if t == b"x")  # the string goes on
    assert matcher.close_within(letter, len(finish)) is None  # room to finish after it
    assert matcher.close_within(letter, len(finish) - 1) == finish[0]  # no room: finish now
    assert matcher.close_within(min(tokenizer.eos_ids), 0) is None  # EOS is never replaced


def test_an_open_object_is_closed_at_once_when_that_is_shortest(grammars, tokenizer) -> None:
    """`{` then whitespace: the bracket-first walk ends it with `}` where the string-first
    one would open a key, a colon and a value first."""
    vocab = vocab_of(tokenizer)
    matcher = grammars.compile("json").matcher()
    feed(matcher, "{\n", tokenizer, vocab)
    finish = matcher._closer.finish(matcher._inner, CLOSING_WINDOW)
    assert b"".join(vocab[t] for t in finish).strip() == b"}"
