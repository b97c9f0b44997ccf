"""The sampling chain: each filter keeps what llama.cpp's would, draws follow the softmax,
and a seed fixes the draws."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from ollamapy.engine.options import Options
from ollamapy.engine.sampling import apply_penalties, make_generator, sample

PROBS = [0.5, 0.3, 0.15, 0.05]


def logits_of(probs: list[float]) -> torch.Tensor:
    return torch.tensor([math.log(p) for p in probs])


def draws(logits: torch.Tensor, n: int = 3000, history: list[int] | None = None,
          **options) -> Counter[int]:
    opts = Options(**{"top_k": 0, "top_p": 1.0, "temperature": 1.0} | options)
    rng = make_generator(1234)
    return Counter(sample(logits, history or [], opts, rng) for _ in range(n))


def test_temperature_zero_is_argmax() -> None:
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    assert draws(logits, 20, temperature=0.0) == Counter({int(logits.argmax()): 20})


def test_draws_follow_the_softmax() -> None:
    n = 20000
    counts = draws(logits_of(PROBS), n)
    for token, p in enumerate(PROBS):
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(counts[token] - n * p) < 5 * sigma, (token, counts)


def test_temperature_sharpens_and_flattens() -> None:
    n = 3000
    for temperature, token in ((0.25, 0), (4.0, 3)):
        counts = draws(logits_of(PROBS), n, temperature=temperature)
        weights = [p ** (1 / temperature) for p in PROBS]
        p = weights[token] / sum(weights)  # 0.879 for the best at 0.25, 0.169 for the worst at 4
        assert abs(counts[token] - n * p) < 5 * math.sqrt(n * p * (1 - p)), counts


def test_top_k_keeps_the_k_best() -> None:
    assert set(draws(logits_of(PROBS), top_k=2)) == {0, 1}
    assert set(draws(logits_of(PROBS), top_k=1, temperature=5.0)) == {0}


def test_top_p_keeps_the_smallest_prefix_reaching_p() -> None:
    assert set(draws(logits_of(PROBS), top_p=0.7)) == {0, 1}
    assert set(draws(logits_of(PROBS), top_p=0.85)) == {0, 1, 2}
    assert set(draws(logits_of(PROBS), top_p=0.0)) == {0}  # always at least one


def test_min_p_is_relative_to_the_best() -> None:
    assert set(draws(logits_of(PROBS), min_p=0.5)) == {0, 1}  # p >= 0.25
    assert set(draws(logits_of(PROBS), min_p=0.2)) == {0, 1, 2}  # p >= 0.1


def test_typical_p_can_drop_the_most_likely_token() -> None:
    # entropy ≈ 1.505 nats; -log 0.4 = 0.916 is further from it than -log 0.15 = 1.897
    probs = [0.4, 0.15, 0.15, 0.15, 0.15]
    assert set(draws(logits_of(probs), typical_p=0.5)) == {1, 2, 3, 4}
    assert 0 in draws(logits_of(probs), typical_p=1.0)


def test_filters_see_temperature_one_probabilities() -> None:
    # at temperature 4 token 2 would pass min_p 0.5; llama.cpp filters before temperature
    assert set(draws(logits_of(PROBS), min_p=0.5, temperature=4.0)) == {0, 1}


def test_same_seed_same_draws_other_seed_other_draws() -> None:
    logits = torch.randn(5000, generator=torch.Generator().manual_seed(1))
    opts = Options(temperature=1.5, top_k=0, top_p=1.0)

    def run(seed: int) -> list[int]:
        rng = make_generator(seed)
        return [sample(logits, [], opts, rng) for _ in range(50)]

    assert run(7) == run(7)
    assert run(7) != run(8)


def penalised(logits: list[float], history: list[int], **options) -> list[float]:
    opts = Options(**options)
    return apply_penalties(torch.tensor(logits), history, opts, num_ctx=8).tolist()


def test_repeat_penalty_divides_positive_and_multiplies_negative() -> None:
    out = penalised([2.0, -2.0, 1.0], [0, 1], repeat_penalty=2.0)
    assert out == [1.0, -4.0, 1.0]


def test_frequency_and_presence_penalties_count_occurrences() -> None:
    out = penalised([1.0, 1.0, 1.0], [0, 0, 0, 1], frequency_penalty=0.5, presence_penalty=0.25)
    assert out == pytest.approx([1.0 - 1.5 - 0.25, 1.0 - 0.5 - 0.25, 1.0])


def test_repeat_last_n_bounds_the_window() -> None:
    history = [0, 1, 2]
    assert penalised([2.0, 2.0, 2.0], history, repeat_penalty=2.0, repeat_last_n=1) == [
        2.0, 2.0, 1.0]
    assert penalised([2.0, 2.0, 2.0], history, repeat_penalty=2.0, repeat_last_n=0) == [
        2.0, 2.0, 2.0]
    # -1 means num_ctx (8 here): the whole history
    assert penalised([2.0, 2.0, 2.0], history, repeat_penalty=2.0, repeat_last_n=-1) == [
        1.0, 1.0, 1.0]


def test_penalties_change_the_greedy_choice() -> None:
    logits = torch.tensor([3.0, 2.0, 0.0])
    opts = Options(temperature=0.0, repeat_penalty=2.0)
    assert sample(logits, [0], opts, make_generator(0)) == 1
    assert logits.tolist() == [3.0, 2.0, 0.0]  # the caller's logits are not modified


@pytest.mark.parametrize("options", [
    # found by tests/e2e/test_openapi.py: a frequency_penalty beyond float32 made +inf scores,
    # their softmax NaN, and torch.multinomial raised (a 500)
    {"repeat_penalty": -2.5e-101, "frequency_penalty": -3.7e240, "top_p": 2.5e295,
     "min_p": -0.33},
    {"repeat_penalty": 0.0}, {"presence_penalty": 1e300, "frequency_penalty": -1e300},
    {"temperature": 1e300, "top_p": 0.5},  # -inf / inf: NaN
    {"temperature": 1e-300}, {"temperature": 1e-300, "presence_penalty": -1e300},
])
def test_options_at_the_edge_of_float_range_still_sample(options: dict) -> None:
    """Ollama takes any float for these options; whatever they do to the scores, a token in
    the vocabulary comes out (never NaN probabilities)."""
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    counts = draws(logits, 50, history=list(range(40)) * 2, **options)
    assert sum(counts.values()) == 50 and all(0 <= t < 1000 for t in counts)


def test_huge_temperatures_are_uniform_and_tiny_ones_greedy() -> None:
    logits = logits_of(PROBS)
    assert draws(logits, 50, temperature=1e-300) == Counter({0: 50})
    counts = draws(logits, 4000, temperature=1e300)
    assert all(abs(counts[t] - 1000) < 5 * math.sqrt(1000 * 0.75) for t in range(4)), counts
