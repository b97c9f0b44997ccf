"""A `format` grammar that waits for a thinking model's reasoning to end.

Ollama constrains a thinking model's answer only after its reasoning: it generates freely
until the first token of content, then restarts with the grammar (../shared/reference/
ollama-api.md §3.2). Here the same is done in one pass: the grammar wraps in `ReasoningFirst`,

- before anything is written, the opening tag is allowed besides what the grammar allows, so
  the model either starts to think or starts the document;
- while it thinks, nothing is masked; once the closing tag is written the grammar applies;
- when the budget (num_predict) runs low while it still thinks, the closing tag is forced,
  so the rest of the budget is left for a complete document (`Seq` then says "length").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum, auto

import torch

from ollamapy.engine.seq import CLOSING_WINDOW, Constraint


class _Stage(Enum):
    START = auto()  # nothing written yet: reasoning or the document may begin
    THINKING = auto()
    DOCUMENT = auto()


class ReasoningFirst:
    def __init__(self, grammar: Constraint, *, opening_ids: Sequence[int],
                 closing_ids: Sequence[int], closing: bytes,
                 token_bytes: Callable[[int], bytes], opened: bool) -> None:
        """opening_ids: the tokens that are the whole opening tag; closing_ids: the closing
        tag tokenized; opened: the prompt already ends with the opening tag."""
        self.grammar = grammar
        self._opening = torch.tensor(sorted(opening_ids), dtype=torch.long)
        self._closing_ids, self._closing = list(closing_ids), closing
        self._token_bytes = token_bytes
        self._stage = _Stage.THINKING if opened else _Stage.START
        self._thought = b""
        self._forcing: list[int] | None = None  # closing-tag tokens still to force

    def mask_(self, logits: torch.Tensor) -> None:
        if self._stage is _Stage.DOCUMENT:
            self.grammar.mask_(logits)
        elif self._stage is _Stage.START:
            opening = logits[self._opening].clone()
            self.grammar.mask_(logits)
            logits[self._opening] = opening

    def accept(self, token: int) -> None:
        if self._stage is _Stage.DOCUMENT:
            self.grammar.accept(token)
        elif self._stage is _Stage.START:
            if token in self._opening.tolist():
                self._stage = _Stage.THINKING
            else:
                self._stage = _Stage.DOCUMENT
                self.grammar.accept(token)
        else:
            self._thought += self._token_bytes(token)
            if self._forcing and token == self._forcing[0]:
                self._forcing.pop(0)
            if self._closing in self._thought:
                self._stage = _Stage.DOCUMENT

    @property
    def done(self) -> bool:
        return self._stage is _Stage.DOCUMENT and self.grammar.done

    def close_within(self, token: int, left: int) -> int | None:
        if self._stage is not _Stage.THINKING:
            return self.grammar.close_within(token, left)
        if left >= CLOSING_WINDOW // 2 or not self._closing_ids:
            return None
        # the reasoning would leave too little budget for the document: close it now
        if self._forcing is None:
            self._forcing = list(self._closing_ids)
        if not self._forcing or token == self._forcing[0]:
            return None
        return self._forcing[0]
