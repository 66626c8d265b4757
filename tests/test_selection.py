"""The keep rules against a naive, token-by-token reference."""

from __future__ import annotations

import math

import pytest
import torch

from sdtp_adapter.pruning.selection import select_indices, select_mask, select_padded


def naive_keep(scores: list[float], protected: list[bool], budget: int, candidates: list[bool]) -> set[int]:
    """Protected tokens, then candidates by score (NaN lowest, ties to the earlier position)."""

    def key(i: int):
        s = scores[i]
        return (0 if protected[i] else 1, math.inf if math.isnan(s) else -s, i)

    ranked = sorted((i for i in range(len(scores)) if candidates[i]), key=key)
    return set(ranked[:budget])


def random_case(seed: int, rows: int, n: int, poison: bool):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(rows, n, generator=g)
    scores[:, ::5] = scores[:, 1::5][:, : scores[:, ::5].shape[1]]  # ties
    if poison:
        scores[torch.rand(rows, n, generator=g) < 0.2] = float("nan")
        scores[torch.rand(rows, n, generator=g) < 0.1] = float("inf")
        scores[torch.rand(rows, n, generator=g) < 0.1] = float("-inf")
    protected = torch.zeros(rows, n, dtype=torch.bool)
    protected[:, :2] = True
    protected[:, -3:] = True
    return scores, protected


@pytest.mark.parametrize("poison", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_select_mask_and_select_indices_match_the_naive_rule(seed, poison):
    scores, protected = random_case(seed, 3, 23, poison)
    budget = 5 + seed * 3
    everyone = [True] * 23
    mask = select_mask(scores, protected, budget)
    indices = select_indices(scores, protected, budget)
    for row in range(3):
        expected = naive_keep(scores[row].tolist(), protected[row].tolist(), budget, everyone)
        assert set(mask[row].nonzero().flatten().tolist()) == expected
        assert indices[row].tolist() == sorted(expected)


@pytest.mark.parametrize("poison", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_select_padded_keeps_the_naive_set_with_fillers_on_the_left(seed, poison):
    scores, protected = random_case(seed, 3, 20, poison)
    candidates = torch.ones(3, 20, dtype=torch.bool)
    candidates[1, :4] = False  # padding
    candidates[2, :9] = False
    protected &= candidates
    budgets = [12, 9, 6]
    order, valid = select_padded(scores, protected, candidates, budgets)
    reference = select_mask(scores, protected, budgets, candidates)
    for row, budget in enumerate(budgets):
        expected = naive_keep(scores[row].tolist(), protected[row].tolist(), budget, candidates[row].tolist())
        assert set(reference[row].nonzero().flatten().tolist()) == expected
        fillers = max(budgets) - budget
        assert valid[row].tolist() == [False] * fillers + [True] * budget
        assert order[row, fillers:].tolist() == sorted(expected)
        assert order[row, :fillers].tolist() == [0] * fillers  # fillers point at slot 0 (padding)


def test_finite_fast_path_agrees_on_finite_scores():
    scores, protected = random_case(7, 2, 30, poison=False)
    assert torch.equal(select_indices(scores, protected, 11, finite=True), select_indices(scores, protected, 11))
