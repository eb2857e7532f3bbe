"""The rules that decide a claim's verdict from the seeds of a run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu

from analysis.verdicts import (
    CONTRADICTED,
    INCONCLUSIVE,
    REPRODUCED,
    Claim,
    Sample,
    at_least,
    evaluate,
    every,
    greater,
    not_below,
    sample,
    u_p_value,
)


def S(*v, label="x"):
    return Sample(label, np.array(v, dtype=float))


def test_the_rank_test_is_the_exact_mann_whitney_test():
    a, b = np.array([3.0, 5.0, 6.0, 9.0]), np.array([1.0, 2.0, 4.0, 7.0])
    assert u_p_value(a, b) == pytest.approx(mannwhitneyu(a, b, alternative="greater", method="exact").pvalue)
    assert u_p_value(np.array([1.0, 1, 1]), np.array([0.7, 0.1, 0.75])) == pytest.approx(1 / 20)
    assert u_p_value(np.array([1.0, 1, 1]), np.array([1.0, 0.1, 0.75])) > 0.05  # a tie at the top


def test_with_too_many_splits_to_list_random_splits_give_the_mann_whitney_p_value():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.5, 1, 18), rng.normal(0, 1, 18)  # 9e9 splits: the random ones stand in
    exact = mannwhitneyu(a, b, alternative="greater", method="exact").pvalue
    assert u_p_value(a, b) == pytest.approx(exact, abs=0.01)
    assert u_p_value(a, b) == u_p_value(a, b)  # from a fixed seed
    assert u_p_value(np.full(12, 1.0), np.full(12, 0.0)) == pytest.approx(1 / 20_001)


def test_greater_needs_every_seed_apart_with_three_a_side_and_decides_both_ways():
    assert greater(S(0.9, 0.91, 0.92), S(0.5, 0.6, 0.7)).verdict == REPRODUCED
    assert greater(S(0.5, 0.6, 0.7), S(0.9, 0.91, 0.92)).verdict == CONTRADICTED
    v = greater(S(0.9, 0.5, 0.92), S(0.5, 0.6, 0.7))
    assert v.verdict == INCONCLUSIVE and "do not separate" in v.why
    assert greater(S(0.9, 0.91), S(0.5, 0.6)).verdict == REPRODUCED  # 2 seeds: ranges apart
    assert greater(S(0.9, 0.91, 0.92), S(0.85, 0.86, 0.87), margin=0.1).verdict == CONTRADICTED


def test_one_seed_never_decides():
    v = greater(S(0.9, label="a"), S(0.1, 0.2, label="b"))
    assert v.verdict == INCONCLUSIVE and "one seed never decides" in v.why and "a: 1 seed" in v.why


def test_not_below_and_bounds():
    assert not_below(S(1, 1, 1), S(1, 0.1, 0.7)).verdict == REPRODUCED  # ties allowed
    assert not_below(S(0.1, 0.1, 0.1), S(0.5, 0.6, 0.7)).verdict == CONTRADICTED
    assert at_least(S(0.97, 0.98, 0.99), 0.95).verdict == REPRODUCED
    assert at_least(S(0.1, 0.11, 0.09), 0.2, at_most=True).verdict == REPRODUCED
    assert at_least(S(0.5, 0.6, 0.55), 0.9).verdict == CONTRADICTED
    assert at_least(S(0.5, 1.0, 0.95), 0.9).verdict == INCONCLUSIVE
    assert every([at_least(S(1, 1), 0.9), greater(S(0.5, 0.6), S(0.9, 0.95))]).verdict == CONTRADICTED


def test_only_seeds_that_ran_to_the_end_count():
    t = pd.DataFrame(
        {"config.lr": [1e-3] * 3, "status": ["completed", "stopped", "diverged"], "metric.test_acc": [0.9, 0.8, 0.0]}
    )
    s = sample(t, "lr 1e-3", "metric.test_acc", lr=1e-3)
    assert sorted(s.values) == [0.0, 0.9] and s.left_out == 1


def test_a_claim_the_data_cannot_show_is_inconclusive_with_the_reason():
    claims = [Claim("vehicles above animals", "hand-run", lambda t, c, m: 1 / 0, datasets=("cifar10",))]
    table = evaluate(claims, pd.DataFrame(), pd.DataFrame(), {"fixed": {"dataset": "digits"}})
    assert table["verdict"].tolist() == [INCONCLUSIVE] and "needs cifar10; this run used digits" in table["why"][0]


def test_a_claim_that_needs_a_longer_budget_counts_only_a_reproduction():
    def claim(a, b):
        return Claim("A beats B", "hand-run", lambda t, c, m: greater(S(*a), S(*b)), budgets=("full",))

    m = {"budget": "quick"}
    assert evaluate([claim((1, 1, 1), (0.1, 0.2, 0.3))], pd.DataFrame(), pd.DataFrame(), m)["verdict"][0] == REPRODUCED
    row = evaluate([claim((0.1, 0.2, 0.3), (1, 1, 1))], pd.DataFrame(), pd.DataFrame(), m).iloc[0]
    assert row["verdict"] == INCONCLUSIVE and row["why"] == "needs --budget full; at quick: contradicted"
    full = evaluate([claim((0.1, 0.2, 0.3), (1, 1, 1))], pd.DataFrame(), pd.DataFrame(), {"budget": "full"})
    assert full["verdict"][0] == CONTRADICTED
