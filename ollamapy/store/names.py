"""Model names: Ollama's grammar, its defaults, and the four path parts a manifest lives under.

    [scheme://][host/][namespace/]model[:tag][@digest]
    defaults: host registry.ollama.ai, namespace library, tag latest

Parsing follows `ParseNameBare` in ollama:types/model/name.go (see reference §8.1): the tag is
cut at the last ':' only when it comes after the last '/', then '/' is cut from the right for
model, namespace and host; a separator that promises a part which is then empty makes the name
invalid. Every part is checked against an ASCII character class whose first character can be
neither '.' nor '-', and none may hold '/', so `..`, `.` or an absolute path can never become a
part: a valid `Name` is always a safe relative path below `manifests/`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ollamapy.store.errors import InvalidNameError

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_PARTS = {
    "host": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}", re.ASCII),
    "namespace": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}", re.ASCII),
    "model": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}", re.ASCII),
    "tag": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}", re.ASCII),
    "digest": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_:-]{0,79}", re.ASCII),
}


def _cut_last(s: str, sep: str, raw: str) -> tuple[str, str]:
    """Split at the last sep; a side left empty by the separator is a promised, missing part."""
    before, _, after = s.rpartition(sep)
    if not before or not after:
        raise InvalidNameError(raw)
    return before, after


@dataclass(frozen=True, slots=True)
class Name:
    host: str
    namespace: str
    model: str
    tag: str
    # "@digest" suffix as written; checked for its characters only (as Ollama does) and never
    # part of a path, so it takes no part in equality either
    digest: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for part in ("host", "namespace", "model", "tag"):
            if not _PARTS[part].fullmatch(getattr(self, part)):
                raise InvalidNameError(self._raw())
        if self.digest and not _PARTS["digest"].fullmatch(self.digest):
            raise InvalidNameError(self._raw())

    def _raw(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @classmethod
    def parse(cls, raw: str) -> Name:
        """Parse a user-supplied name, fill in the defaults, or raise InvalidNameError."""
        if not isinstance(raw, str) or not raw:
            raise InvalidNameError(str(raw))
        s, digest = raw, ""
        if "@" in s:
            s, digest = _cut_last(s, "@", raw)
        tag = DEFAULT_TAG
        if s.rfind(":") > s.rfind("/"):
            s, tag = _cut_last(s, ":", raw)
        host, namespace, model = DEFAULT_HOST, DEFAULT_NAMESPACE, s
        if "/" in s:
            s, model = _cut_last(s, "/", raw)
            namespace = s
            if "/" in s:
                s, namespace = _cut_last(s, "/", raw)
                # the scheme only says how to reach the registry; it is not part of the name
                host = s.split("://", 1)[1] if "://" in s else s
        return cls(host, namespace, model, tag, digest)

    @property
    def parts(self) -> tuple[str, str, str, str]:
        """The manifest's path below manifests/: host, namespace, model, tag (case as given)."""
        return (self.host, self.namespace, self.model, self.tag)

    @property
    def key(self) -> tuple[str, ...]:
        """Case-folded parts: names are matched case-insensitively (Ollama's EqualFold)."""
        return tuple(p.lower() for p in self.parts)

    def same_as(self, other: Name) -> bool:
        return self.key == other.key

    def display_shortest(self) -> str:
        """`smollm2:135m`, `user/model:tag`, `myreg.io:5000/ns/model:tag`: the tag always stays."""
        if self.host.lower() != DEFAULT_HOST:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace.lower() != DEFAULT_NAMESPACE:
            prefix = f"{self.namespace}/"
        else:
            prefix = ""
        return f"{prefix}{self.model}:{self.tag}"

    def __str__(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"


def parse_name(raw: str | Name) -> Name:
    """A Name as is, or a string parsed with the defaults."""
    return raw if isinstance(raw, Name) else Name.parse(raw)
