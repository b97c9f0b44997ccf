"""Model names: Ollama's grammar (reference §8.1), defaults, display forms, and that no name,
however crafted, yields a path outside manifests/."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ollamapy.store import InvalidNameError, Name, Store

VALID = [
    # raw → (host, namespace, model, tag)
    ("smollm2", ("registry.ollama.ai", "library", "smollm2", "latest")),
    ("smollm2:135m", ("registry.ollama.ai", "library", "smollm2", "135m")),
    ("user/model:tag", ("registry.ollama.ai", "user", "model", "tag")),
    ("myreg.io:5000/ns/model:tag", ("myreg.io:5000", "ns", "model", "tag")),
    ("myreg.io:5000/ns/model", ("myreg.io:5000", "ns", "model", "latest")),
    ("https://example.com/ns/m:v1", ("example.com", "ns", "m", "v1")),
    ("http://example.com/ns/m", ("example.com", "ns", "m", "latest")),
    ("llama3.2:3b-instruct-q4_K_M", ("registry.ollama.ai", "library", "llama3.2",
                                     "3b-instruct-q4_K_M")),
    ("_x/_y:_z", ("registry.ollama.ai", "_x", "_y", "_z")),
    ("Mixed/Case:TAG", ("registry.ollama.ai", "Mixed", "Case", "TAG")),
    ("a" * 80 + ":" + "t" * 80, ("registry.ollama.ai", "library", "a" * 80, "t" * 80)),
    ("h" * 350 + "/ns/m", ("h" * 350, "ns", "m", "latest")),
    ("a..b", ("registry.ollama.ai", "library", "a..b", "latest")),  # not a path element
]

INVALID = [
    "", ":", "/", "@", ":tag", "model:", "/model", "ns/", "ns//model", "host/ns/",
    "a/b/c/d",  # a fourth part has nowhere to go: host would be "a/b"
    "../x", "a/../../b", "x:..", "..", ".", "./x", "x/..", "../../etc/passwd",
    "/etc/passwd", "host/../m:t", "-m", ".hidden", "m:-t", "m:.t", "ns.dot/m",
    "host/name:space/m:t", "model:tag:extra", "a\\b", "a b", "m\x00", "m\n", "mödel", "m:t@",
    "m@", "@sha256:abc", "a" * 81, "m:" + "t" * 81, "h" * 351 + "/ns/m", "ns" * 41 + "/m",
    "http://model", "m@sha256/x",
]


@pytest.mark.parametrize(("raw", "parts"), VALID)
def test_valid_names_parse_with_defaults(raw: str, parts: tuple[str, ...]) -> None:
    assert Name.parse(raw).parts == parts


@pytest.mark.parametrize("raw", INVALID)
def test_invalid_names_are_refused(raw: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        Name.parse(raw)
    assert str(info.value) == "invalid model name"
    assert info.value.status == 400


def test_non_string_names_are_refused() -> None:
    for raw in (None, 5, b"model"):
        with pytest.raises(InvalidNameError):
            Name.parse(raw)  # type: ignore[arg-type]


def test_digest_suffix_is_kept_but_not_part_of_the_name() -> None:
    name = Name.parse("m:t@sha256-" + "a" * 64)
    assert name.parts == ("registry.ollama.ai", "library", "m", "t")
    assert name.digest == "sha256-" + "a" * 64
    assert name == Name.parse("m:t")
    assert str(name) == "registry.ollama.ai/library/m:t"


@pytest.mark.parametrize(("raw", "shortest"), [
    ("smollm2:135m", "smollm2:135m"),
    ("smollm2", "smollm2:latest"),
    ("registry.ollama.ai/library/smollm2:135m", "smollm2:135m"),
    ("REGISTRY.ollama.ai/Library/x", "x:latest"),  # the defaults match case-insensitively
    ("user/model:tag", "user/model:tag"),
    ("myreg.io:5000/ns/model:tag", "myreg.io:5000/ns/model:tag"),
    ("myreg.io/library/model", "myreg.io/library/model:latest"),
])
def test_display_shortest(raw: str, shortest: str) -> None:
    assert Name.parse(raw).display_shortest() == shortest


def test_canonical_string() -> None:
    assert str(Name.parse("smollm2:135m")) == "registry.ollama.ai/library/smollm2:135m"
    assert str(Name.parse("u/m")) == "registry.ollama.ai/u/m:latest"


def test_case_insensitive_comparison_keeps_case() -> None:
    a, b = Name.parse("SmolLM2:135M"), Name.parse("smollm2:135m")
    assert a != b and a.same_as(b) and a.key == b.key
    assert a.model == "SmolLM2"
    assert not a.same_as(Name.parse("smollm2:136m"))


def test_constructor_validates_parts() -> None:
    with pytest.raises(InvalidNameError):
        Name("registry.ollama.ai", "library", "..", "latest")
    with pytest.raises(InvalidNameError):
        Name("registry.ollama.ai", "lib/rary", "m", "latest")


NAME_CHARS = st.sampled_from(list("aZ09_.-:/@\\ \x00é") + ["..", "../", "sha256:"])


@given(st.lists(NAME_CHARS, max_size=12).map("".join))
def test_no_parsable_name_leaves_the_manifests_dir(raw: str) -> None:
    try:
        name = Name.parse(raw)
    except InvalidNameError:
        return
    for part in name.parts:
        assert part not in ("", ".", "..") and "/" not in part and "\\" not in part
    base = os.path.normpath("/srv/models/manifests")
    path = os.path.normpath(os.path.join(base, *name.parts))
    assert os.path.commonpath([base, path]) == base


def test_store_rechecks_paths_of_forged_names(tmp_path) -> None:
    store = Store(tmp_path)
    forged = Name.parse("x")
    object.__setattr__(forged, "model", "..")  # bypass the grammar, as a bug elsewhere might
    with pytest.raises(InvalidNameError):
        store.manifest_path(forged)
    object.__setattr__(forged, "model", "m")
    object.__setattr__(forged, "namespace", "../../..")
    with pytest.raises(InvalidNameError):
        store.manifest_path(forged)


def test_a_part_too_long_for_a_directory_name_is_invalid_not_a_crash(tmp_path) -> None:
    """The grammar allows a 350-character host, but no file system a 350-byte directory
    name: the store refuses it as an invalid name (400) instead of failing the write (500)."""
    store = Store(tmp_path)
    assert store.manifest_path(Name.parse("h" * 255 + "/ns/m")).parent.parent.parent.name \
        == "h" * 255
    for raw in ("h" * 256 + "/ns/m", "h" * 350 + "/ns/m"):
        with pytest.raises(InvalidNameError):
            store.manifest_path(Name.parse(raw))
    assert list(store.manifests_dir.iterdir()) == []
