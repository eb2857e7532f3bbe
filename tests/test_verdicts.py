"""The rules that decide a claim's verdict from the seeds of a run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu

from analysis.selection import SelectionError, mark_tuned, resampled_choice, selection, tuned_trials
from analysis.verdicts import (
    CONTRADICTED,
    INCONCLUSIVE,
    REPRODUCED,
    Claim,
    Sample,
    about_equal,
    at_least,
    difference,
    evaluate,
    every,
    greater,
    learned,
    not_below,
    ranking,
    sample,
    tuned,
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
    assert greater(S(0.9, 0.91, 0.92), S(0.85, 0.86, 0.87), margin=0.1).verdict == CONTRADICTED


def test_no_decision_rests_on_fewer_than_three_seeds_a_side():
    # with 2 seeds a side, every seed above every seed happens by chance in 1 of 6 splits
    assert u_p_value(np.array([0.9, 0.91]), np.array([0.5, 0.6])) == pytest.approx(1 / 6)
    v = greater(S(0.9, 0.91, label="a"), S(0.1, 0.2, 0.3, label="b"))
    assert v.verdict == INCONCLUSIVE and "fewer than 3 seeds a side" in v.why and "a: 2 seeds" in v.why
    assert not_below(S(0.1, 0.1), S(0.5, 0.6)).verdict == INCONCLUSIVE
    assert at_least(S(0.97, 0.98), 0.9).verdict == INCONCLUSIVE


def test_a_comparison_reports_its_effect_with_an_interval_the_p_value_and_the_seeds():
    v = greater(S(0.9, 0.91, 0.92), S(0.5, 0.6, 0.7))
    assert v.p == pytest.approx(1 / 20) and v.seeds == "3 vs 3"
    d, lo, hi = difference(np.array([0.9, 0.91, 0.92]), np.array([0.5, 0.6, 0.7]))
    assert d == pytest.approx(0.31) and lo <= d <= hi and 0.2 < lo and hi < 0.42
    assert v.effect == f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def test_about_equal_is_an_equivalence_test_with_a_stated_margin():
    same = about_equal(S(0.80, 0.81, 0.82, 0.80), S(0.81, 0.80, 0.81, 0.82), 0.05)
    assert same.verdict == REPRODUCED and "TOST" in same.rule and "±0.05" in same.rule
    assert about_equal(S(0.9, 0.91, 0.92), S(0.5, 0.6, 0.7), 0.05).verdict == CONTRADICTED
    noisy = about_equal(S(0.5, 0.9, 0.7), S(0.6, 0.8, 0.7), 0.05)  # no difference shown, no equivalence either
    assert noisy.verdict == INCONCLUSIVE and "margin" in noisy.why
    ppl = about_equal(S(120, 121, 119), S(125, 126, 124), 0.1, ratio=True)  # within 10%: on the logs
    assert ppl.verdict == REPRODUCED and ppl.effect.startswith("ratio 0.96")
    assert about_equal(S(120, 121, 119), S(200, 210, 190), 0.1, ratio=True).verdict == CONTRADICTED
    # the same seeds on both sides (one initial weights, two implementations): seed by seed
    a, b = S(0.6, 0.9, 0.75, 0.7), S(0.605, 0.9, 0.745, 0.7)
    assert (
        about_equal(a, b, 0.02).verdict == INCONCLUSIVE and about_equal(a, b, 0.02, paired=True).verdict == REPRODUCED
    )


def test_a_claim_about_what_models_learned_needs_each_model_to_have_learned():
    a, b = S(0.16, 0.17, 0.15, label="B two-digit"), S(0.01, 0.0, 0.01, label="B single-digit")
    v = learned(greater(a, b), 0.5, a, b, chance=0.01)
    assert greater(a, b).verdict == REPRODUCED and v.verdict == INCONCLUSIVE
    assert "not learned (below 0.5): B two-digit 0.160" in v.why and "single" in v.why
    assert learned(greater(S(0.8, 0.9, 0.85), b), 0.5, S(0.8, 0.9, 0.85)).verdict == REPRODUCED


def test_a_ranking_puts_no_greater_sign_between_seeds_that_overlap():
    text = ranking(
        [S(0.814, 0.80, 0.83, label="adam"), S(0.808, 0.79, 0.82, label="nadam"), S(0.5, 0.51, 0.52, label="sgd")]
    )
    assert text.startswith("adam ") and " ~ nadam " in text and " > sgd " in text


def test_not_below_and_bounds():
    assert not_below(S(1, 1, 1), S(1, 0.1, 0.7)).verdict == REPRODUCED  # ties allowed
    assert not_below(S(0.1, 0.1, 0.1), S(0.5, 0.6, 0.7)).verdict == CONTRADICTED
    assert at_least(S(0.97, 0.98, 0.99), 0.95).verdict == REPRODUCED
    assert at_least(S(0.1, 0.11, 0.09), 0.2, at_most=True).verdict == REPRODUCED
    assert at_least(S(0.5, 0.6, 0.55), 0.9).verdict == CONTRADICTED
    assert at_least(S(0.5, 1.0, 0.95), 0.9).verdict == INCONCLUSIVE
    assert every([at_least(S(1, 1, 1), 0.9), greater(S(0.5, 0.6, 0.55), S(0.9, 0.95, 0.92))]).verdict == CONTRADICTED


def test_only_seeds_that_ran_to_the_end_count():
    t = pd.DataFrame(
        {"config.lr": [1e-3] * 3, "status": ["completed", "stopped", "diverged"], "metric.test_acc": [0.9, 0.8, 0.0]}
    )
    s = sample(t, "lr 1e-3", "metric.test_acc", lr=1e-3)
    assert sorted(s.values) == [0.0, 0.9] and s.left_out == 1


def trials_of(rows):
    """Trials of (optimizer, lr, seed, status, val_acc, test_acc), one row per seed."""
    cols = ["config.optimizer", "config.lr", "config.seed", "status", "metric.val_acc", "metric.test_acc"]
    return pd.DataFrame(rows, columns=cols).assign(diverged=lambda t: t["status"] == "diverged")


MANIFEST = {"scientific": ["optimizer"], "nuisance": ["lr"], "metric": "val_acc", "mode": "max"}


def test_the_selection_rule_chooses_on_validation_among_settings_whose_seeds_ran_to_the_end():
    rows = [("adam", 1e-3, s, "completed", 0.80, 0.90) for s in range(3)]  # best on test, not on validation
    rows += [("adam", 3e-3, s, "completed", 0.85, 0.70) for s in range(3)]  # best on validation: tuned
    rows += [("adam", 1e-2, 0, "completed", 0.95, 0.95), ("adam", 1e-2, 1, "stopped", 0.5, 0.5)]  # a seed stopped
    rows += [("adam", 3e-2, s, "completed", 0.99, 0.99) for s in range(2)]  # fewer seeds than the others
    rows += [("sgd", 1e-2, s, "completed", 0.6, 0.6) for s in range(3)]
    rows += [("sgd", 1e-1, 0, "diverged", 0.9, 0.9)] + [("sgd", 1e-1, s, "completed", 0.9, 0.9) for s in (1, 2)]
    t = trials_of(rows)
    chosen = selection(t, MANIFEST).set_index("config.optimizer")["config.lr"]
    assert chosen.to_dict() == {"adam": 3e-3, "sgd": 1e-2}  # a diverged seed counts as the worst value
    at = tuned_trials(t, MANIFEST)
    assert sorted(at.groupby("config.optimizer")["config.lr"].first().items()) == [("adam", 3e-3), ("sgd", 1e-2)]
    assert tuned(t, MANIFEST, "adam", "metric.test_acc", optimizer="adam").values.tolist() == [0.7] * 3
    assert mark_tuned(t, MANIFEST)["tuned"].sum() == 6
    with pytest.raises(SelectionError, match="select on a validation metric"):
        selection(t, MANIFEST, metric="metric.test_acc")


def test_the_choice_is_made_on_the_search_seeds_and_reported_on_the_confirmation_seeds():
    rows = [("adam", lr, s, "completed", v, 0.5) for lr, v in ((1e-3, 0.8), (3e-3, 0.9)) for s in range(3)]
    search = trials_of(rows).assign(phase="search")
    confirm = trials_of([("adam", 3e-3, s, "completed", 0.7, 0.6) for s in (10, 11, 12)]).assign(phase="confirm")
    t = pd.concat([search, confirm], ignore_index=True)
    at = tuned_trials(t, MANIFEST)
    assert at["phase"].unique().tolist() == ["confirm"] and at["config.seed"].tolist() == [10, 11, 12]
    assert tuned_trials(t, MANIFEST, report="search")["config.seed"].tolist() == [0, 1, 2]


def test_the_stability_of_a_choice_is_measured_by_resampling_the_seeds():
    clear = [("adam", lr, s, "completed", v + 0.001 * s, 0.5) for lr, v in ((1e-3, 0.5), (3e-3, 0.9)) for s in range(3)]
    assert (resampled_choice(trials_of(clear), MANIFEST, "lr") == 3e-3).all()
    close = [("adam", 1e-3, s, "completed", v, 0.5) for s, v in enumerate((0.80, 0.90, 0.85))]
    close += [("adam", 3e-3, s, "completed", v, 0.5) for s, v in enumerate((0.86, 0.84, 0.85))]
    share = (resampled_choice(trials_of(close), MANIFEST, "lr") == 3e-3).mean()
    assert 0.2 < share < 0.8


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


def test_settings_with_a_key_they_lack_are_chosen_and_each_reports_its_own_phase():
    rows = [("lstm", None, lr, s, "completed", v, 0.5) for lr, v in ((1e-3, 0.8), (3e-3, 0.9)) for s in range(3)]
    rows += [("transformer", 2.0, lr, s, "completed", v, 0.5) for lr, v in ((1e-3, 0.9), (3e-3, 0.8)) for s in range(3)]
    cols = ["config.cell", "config.heads", "config.lr", "config.seed", "status", "metric.val_acc", "metric.test_acc"]
    search = pd.DataFrame(rows, columns=cols).assign(phase="search")  # an LSTM has no heads: NaN
    confirm = search[(search["config.cell"] == "transformer") & (search["config.lr"] == 1e-3)]
    t = pd.concat([search, confirm.assign(phase="confirm", **{"config.seed": [7, 8, 9]})], ignore_index=True)
    m = {"scientific": ["cell", "heads"], "nuisance": ["lr"], "metric": "val_acc"}
    assert selection(t, m)["config.lr"].tolist() == [3e-3, 1e-3]  # the LSTM's group is kept
    at = tuned_trials(t, m)
    assert at.groupby("config.cell")["phase"].unique().map(list).to_dict() == {
        "lstm": ["search"],  # not confirmed: its search seeds
        "transformer": ["confirm"],
    }
