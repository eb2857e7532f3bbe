"""Parameter importance with its spread (`analysis.importance`): Optuna's fANOVA and PED-ANOVA on
bootstrap resamples of the search's finished trials, in the report of a study with a nuisance search
as a table and a figure. Synthetic tables with a known answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_analysis import MANIFEST, OPT_MANIFEST, synthetic_lr_scan, synthetic_optimizer, write_run

import analysis
from analysis.importance import RESAMPLES, importance


def search(n=24, seed=0, stopped=0):
    """n trials of 2 seeds: the objective is a parabola in log10(lr) (peak at 1e-3, 0.2 below it at the
    ends), the optimizer adds nothing; the first `stopped` trials were stopped by ASHA."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        opt, lr = ("adam", "sgd")[i % 2], float(10 ** rng.uniform(-5, -1))
        for s in (0, 1):
            acc = 0.9 - 0.05 * (np.log10(lr) + 3) ** 2 + rng.normal(0, 0.005)
            rows.append(
                {
                    "trial": f"t{i}",
                    "trial_id": f"t{i}-{s}",
                    "phase": "search",
                    "status": "stopped" if i < stopped else "completed",
                    "config.optimizer": opt,
                    "config.lr": lr,
                    "config.seed": s,
                    "metric.val_acc": acc if i >= stopped else 0.99,  # a stopped trial's value is no final one
                }
            )
    return pd.DataFrame(rows)


M = {**OPT_MANIFEST, "signature": {"search": {"lr": "Float(1e-05, 0.1, _LogUniform)"}}}


def test_the_nuisance_lr_that_shapes_the_objective_is_the_important_one_with_its_interval():
    table = importance(search(stopped=4), M)
    assert set(table["evaluator"]) == {"fANOVA", "PED-ANOVA"} and set(table["parameter"]) == {"optimizer", "lr"}
    assert (table["trials"] == 20).all()  # the 4 stopped trials have no final value: left out
    assert (table["resamples"] == RESAMPLES).all()
    assert ((table["lo"] <= table["median"]) & (table["median"] <= table["hi"])).all()
    assert (table["hi"] > table["lo"]).any()  # a spread, not one number
    for ev, part in table.groupby("evaluator"):
        got = part.set_index("parameter")
        assert got.loc["lr", "median"] > 0.6 > got.loc["optimizer", "median"], ev
        assert got.loc["lr", "nuisance"] and not got.loc["optimizer", "nuisance"]
    assert importance(search(stopped=4), M).equals(table)  # seeded: the same tables again


def test_a_scientific_key_that_some_settings_lack_is_a_category_of_its_own():
    t = search(stopped=0)
    t["config.heads"] = np.where(t["config.optimizer"] == "adam", 2.0, np.nan)  # the Transformer's heads, say
    table = importance(t, {**M, "scientific": ["optimizer", "heads"]})
    assert set(table["parameter"]) == {"optimizer", "heads", "lr"} and (table["resamples"] == RESAMPLES).all()


def test_no_importance_without_a_nuisance_search_or_with_too_few_trials():
    trials, _ = synthetic_lr_scan()
    assert importance(trials, MANIFEST).empty
    assert importance(search(n=3), M).empty


def test_the_report_of_a_nuisance_study_shows_importance_as_a_table_and_a_figure(tmp_path):
    run = write_run(tmp_path / "optimizer_comparison" / "synthetic", *synthetic_optimizer(), M)
    out = analysis.render(run)
    assert run / "figures" / "importance.png" in out["figures"]
    assert (run / "figures" / "importance.png").read_bytes()[:4] == b"\x89PNG"
    table = pd.read_csv(run / "importance.csv")
    assert len(table) == 4 and {"median", "lo", "hi", "resamples"} <= set(table.columns)
    text = out["report"].read_text()
    section = text.split("## Parameter importance\n", 1)[1].split("\n## ", 1)[0]
    assert "| lr | True | fANOVA | " in section and "| optimizer | False | PED-ANOVA | " in section
    assert "![importance](figures/importance.png)" in section
    assert text.index("## Parameter importance") < text.index("## Manifest")
    assert "<h2>Parameter importance</h2>" in out["html"].read_text()


@pytest.mark.parametrize("described", ["Integer(1, 9, _Uniform)", None])
def test_the_search_space_comes_from_the_manifest_or_the_values_tried(described):
    from optuna.distributions import FloatDistribution, IntDistribution

    from analysis.importance import _distribution

    got = _distribution(described, pd.Series([2, 5, 8]))
    assert got == (IntDistribution(1, 8) if described else FloatDistribution(2.0, 8.0))
