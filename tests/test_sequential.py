"""Seeds as many as a claim needs: looks of more confirmation seeds, each at its share of 0.05."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.sequential import at_look, evaluate, level, looks, open_claims, rule
from analysis.verdicts import CONTRADICTED, INCONCLUSIVE, REPRODUCED, Claim, alpha, at_alpha, at_least, greater, tuned

MANIFEST = {"scientific": ["optimizer"], "nuisance": ["lr"], "metric": "val_acc", "mode": "max"}


def run(confirm: dict[str, list[float]]) -> pd.DataFrame:
    """A run's trials: each optimizer's search (lr 1e-3, seeds 0-2) and its confirmation seeds 3, 4, ...
    with these test accuracies."""
    rows = [("search", opt, s, 0.5, 0.5) for opt in confirm for s in range(3)]
    rows += [("confirm", opt, 3 + i, 0.5, v) for opt, vs in confirm.items() for i, v in enumerate(vs)]
    cols = ["phase", "config.optimizer", "config.seed", "metric.val_acc", "metric.test_acc"]
    return pd.DataFrame(rows, columns=cols).assign(**{"config.lr": 1e-3, "status": "completed", "diverged": False})


def side(t, m, opt):
    return tuned(t, m, opt, "metric.test_acc", optimizer=opt)


ABOVE = Claim("Adam above SGD", "hand-run", lambda t, c, m: greater(side(t, m, "adam"), side(t, m, "sgd")))


def test_looks_double_up_to_the_cap_and_split_the_level_evenly():
    assert looks(3, None) == looks(3, 3) == [3]
    assert looks(3, 12) == [3, 6, 12] and looks(3, 10) == [3, 6, 10] and looks(5, 12) == [5, 10, 12]
    assert level([3]) == 0.05 and level([3, 6, 12]) == pytest.approx(0.05 / 3)
    assert "0.0167 (0.05 / 3 planned looks, Bonferroni)" in rule([3, 6, 12])
    with at_alpha(0.01):
        assert alpha() == 0.01
    assert alpha() == 0.05


def test_a_look_holds_the_search_and_the_first_seeds_of_the_confirmation():
    t = run({"adam": [0.9, 0.8, 0.7, 0.6], "sgd": [0.1, 0.2, 0.3, 0.4]})
    at = at_look(t, 2)
    assert sorted(at.loc[at["phase"] == "confirm", "config.seed"].unique()) == [3, 4]
    assert (at["phase"] == "search").sum() == 6


def test_a_comparison_three_seeds_cannot_decide_at_a_look_s_share_is_decided_at_six():
    t = run({"adam": [0.90, 0.91, 0.92, 0.93, 0.94, 0.95], "sgd": [0.80, 0.81, 0.82, 0.83, 0.84, 0.85]})
    one = evaluate([ABOVE], at_look(t, 3), pd.DataFrame(), {**MANIFEST, "looks": [3]})
    assert one["verdict"][0] == REPRODUCED and one["p"][0] == pytest.approx(0.05)  # one look: at 0.05
    three = {**MANIFEST, "looks": [3, 6, 12]}
    first = evaluate([ABOVE], at_look(t, 3), pd.DataFrame(), three).iloc[0]
    assert first["verdict"] == INCONCLUSIVE and first["look"] == "1 of 3 (3 seeds)"  # p = 0.05 > 0.0167
    assert "seeds a side would decide it" in first["why"] and open_claims(pd.DataFrame([first])) == 1
    row = evaluate([ABOVE], t, pd.DataFrame(), three).iloc[0]
    assert row["verdict"] == REPRODUCED and row["look"] == "2 of 3 (6 seeds)" and row["seeds"] == "6 vs 6"
    assert row["p"] == pytest.approx(1 / 924)


def test_a_claim_keeps_the_verdict_of_the_first_look_that_decides_it():
    bound = Claim("Adam above 0.5", "hand-run", lambda t, c, m: at_least(side(t, m, "adam"), 0.5))
    t = run({"adam": [0.90, 0.91, 0.92, 0.1, 0.1, 0.1], "sgd": [0.1] * 6})
    three = {**MANIFEST, "looks": [3, 6]}
    assert evaluate([bound], at_look(t, 6), pd.DataFrame(), {**MANIFEST, "looks": [6]})["verdict"][0] != REPRODUCED
    row = evaluate([bound], t, pd.DataFrame(), three).iloc[0]
    assert row["verdict"] == REPRODUCED and row["look"] == "1 of 2 (3 seeds)" and row["seeds"] == "3"


def test_a_claim_undecided_at_the_cap_is_inconclusive_with_its_p_value_and_the_seeds_it_needs():
    rng = np.random.default_rng(0)
    t = run({"adam": list(0.80 + 0.05 * rng.random(6)), "sgd": list(0.79 + 0.05 * rng.random(6))})
    row = evaluate([ABOVE], t, pd.DataFrame(), {**MANIFEST, "looks": [3, 6]}).iloc[0]
    assert row["verdict"] == INCONCLUSIVE and row["look"] == "2 of 2 (6 seeds)" and 0 < row["p"] < 1
    assert "seeds a side would decide it (80% power)" in row["why"]
    flipped = Claim("SGD above Adam", "", lambda t, c, m: greater(side(t, m, "sgd"), side(t, m, "adam")))
    t = run({"adam": [0.9] * 6, "sgd": [0.1] * 6})
    assert evaluate([flipped], t, pd.DataFrame(), {**MANIFEST, "looks": [3, 6]})["verdict"][0] == CONTRADICTED
