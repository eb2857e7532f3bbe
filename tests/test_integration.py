"""Each study's smoke budget through real Ray Tune, Optuna and torch, on the session's 2-CPU Ray."""

from __future__ import annotations

import importlib
import json
from types import SimpleNamespace

import numpy as np
import pytest

import analysis
import studies
from analysis.verdicts import VERDICTS
from studies.engine.confirm import chooses

pytestmark = pytest.mark.slow


def run_smoke(name: str, tmp_path, *extra: str):
    """Run `name`'s smoke budget in this process, then check its run (`check_smoke`)."""
    mod = importlib.import_module(f"studies.{name}")
    assert mod.main(["--budget", "smoke", "--storage", str(tmp_path), *extra]) == 0
    return check_smoke(name, tmp_path / name / "smoke")


def check_smoke(name: str, run):
    """What every study's smoke run holds: both phases' trials, curves, figures, report and claims."""
    mod = importlib.import_module(f"studies.{name}")
    r = analysis.load(run)
    both, c = r.trials, r.curves
    t = both[both["phase"] == "search"]
    b = mod.STUDY.budgets["smoke"]
    grid = b.grid or mod.STUDY.grid
    n = len(grid) * b.samples * b.seeds
    assert len(t) == n and both["trial_id"].is_unique
    # the confirmation: each scientific value's chosen configuration again, on fresh seeds, run to the end
    by = [k for k in mod.STUDY.scientific if k not in mod.STUDY.select]
    chosen = (
        len({tuple(str(q.get(k)) for k in by) for q in grid})
        if chooses(SimpleNamespace(study=mod.STUDY, budget=b))
        else 0
    )
    confirm = both[both["phase"] == "confirm"]
    extra = chosen if mod.STUDY.confirm_first else 0  # the hand-run setting beside each, where not the chosen one
    assert (
        chosen <= confirm["trial"].nunique() <= chosen + extra and len(confirm) == confirm["trial"].nunique() * b.seeds
    )
    assert not set(confirm["config.seed"]) & set(t["config.seed"])
    assert set(confirm["status"]) <= {"completed", "diverged"}
    for col in (
        "study",
        "config.seed",
        "status",
        "stopped_early",
        "iterations",
        "wall_time_s",
        "node",
        "metric.val_acc",
        "best.val_acc",
        "metric.test_acc",
        "metric.train_loss",
    ):
        assert col in t, col
    assert set(t["status"]) <= {"completed", "stopped", "diverged"}
    ok = t[~t["diverged"]]
    for m in ("metric.val_acc", "best.val_acc", "metric.train_acc"):
        assert ok[m].between(0, 1).all(), m
    # the test sets at every test_every-th report and the last: a trial that ran to the end has them
    assert ok.loc[~ok["stopped_early"], "metric.test_acc"].between(0, 1).all()
    assert (ok["metric.train_loss"] > 0).all() and (t["wall_time_s"] > 0).all()
    assert t["iterations"].between(1, b.iterations).all()
    assert (t.loc[t["status"] == "completed", "iterations"] == b.iterations).all()
    assert (t["config.iterations"] == b.iterations).all()  # the trainable runs as long as ASHA's max_t
    assert (t["best.val_acc"] >= t["metric.val_acc"] - 1e-9).all()
    # curves: one row per report, iterations 1..k for each trial
    assert len(c) == both["iterations"].sum()
    for _, g in c.groupby("trial_id"):
        assert list(g["iteration"]) == list(range(1, len(g) + 1))
    figs = list((run / "figures").glob("*.png"))
    assert len(figs) >= 2 and all(f.stat().st_size > 10_000 for f in figs)
    for f in ("trials.csv", "curves.csv", "report.md", "manifest.json"):
        assert (run / f).is_file()
    m = json.loads((run / "manifest.json").read_text())
    assert m["study"] == name and m["seeds"] == list(range(b.seeds)) and m["versions"]["torch"]
    assert m["finished"] and "hardware" in m
    assert "Best configuration" in (run / "report.md").read_text()
    assert "## Findings" in (run / "report.md").read_text() and (run / "summary.csv").is_file()
    assert "data:image/png;base64," in (run / "report.html").read_text()
    # the study's claims are checked and reported (smoke runs are too small to reproduce them)
    claims = analysis.claims(run)
    assert len(claims) == len(studies.analysis_module(name).CLAIMS) > 0
    assert set(claims["verdict"]) <= set(VERDICTS) and claims["reference"].str.len().gt(0).all()
    assert (run / "report.md").read_text().split("\n## ")[1].startswith("Claims")  # the report opens with them
    assert (run / "claims.csv").is_file()
    return t, c, r


def test_lr_scan_smoke(lr_scan_cli):
    t, c, _ = check_smoke("lr_scan", lr_scan_cli[1] / "lr_scan" / "validity-smoke-1")
    assert sorted(t["config.lr"]) == [1e-5, 1e-3, 1.0]  # a scan that reaches lr=1.0 completes
    # ASHA compares trials only within one scientific value: every lr's curve runs to the end (or diverges)
    assert not t["stopped_early"].any() and set(t["status"]) <= {"completed", "diverged"}


def test_optimizer_comparison_smoke_tunes_lr_per_optimizer(optimizer_smoke):
    t, c, r = check_smoke("optimizer_comparison", optimizer_smoke)
    for _, g in t.groupby("config.optimizer"):
        assert g["config.lr"].nunique() == 2 and g["config.lr"].between(1e-5, 1e-1).all()
    assert set(t["config.optimizer"]) == {"adam", "sgd"}
    assert [f"metric.test_acc_{k}" for k in range(10)] == [c for c in t if c.startswith("metric.test_acc_")]
    for _, g in t.groupby("config.optimizer"):  # every optimizer gets a full-length trial: its first lr, 1e-4
        assert (g.loc[np.isclose(g["config.lr"], 1e-4), "status"] == "completed").all()
    for _, g in t.groupby("trial"):  # one trial trains all seeds of one configuration: ASHA never splits them
        assert g["stopped_early"].nunique() == 1 and sorted(g["config.seed"]) == list(range(len(g)))


def test_regularization_smoke(ray_session, tmp_path):
    t, c, _ = run_smoke("regularization", tmp_path)
    assert sorted(zip(t["config.dropout"], t["config.l2"])) == [(0.0, 0.0), (0.0, 0.01), (0.5, 0.0)]
    assert (t["config.hidden"] == "256-64").all()


def test_palindrome_smoke(ray_session, tmp_path):
    t, c, _ = run_smoke("palindrome", tmp_path)
    assert sorted(zip(t["config.cell"], t["config.seq_len"])) == [("lstm", 5), ("lstm", 12), ("rnn", 5), ("rnn", 12)]
    assert not t["stopped_early"].any()  # cells never cut each other: each (cell, T) runs to the end
    assert (c["step"].diff().dropna()[c["trial_id"].eq(c["trial_id"].shift())] == 50).all()


def test_lstm_learns_t5_palindromes_within_the_smoke_budget(ray_session, tmp_path):
    from ray import tune

    from studies.engine.loop import train
    from studies.palindrome import STUDY

    smoke = STUDY.budgets["smoke"]
    config = {
        **STUDY.fixed,
        **smoke.fixed,
        **smoke.grid[0],
        "cell": "lstm",
        "seq_len": 5,
        "iterations": smoke.iterations,
        "seeds": [0],
    }
    grid = tune.Tuner(
        train, param_space=config, run_config=tune.RunConfig(storage_path=str(tmp_path), name="learn", verbose=0)
    ).fit()
    r = grid[0]
    assert r.error is None and r.metrics["step"] == smoke.iterations * smoke.fixed["steps_per_report"]  # 300 steps
    assert r.metrics["test_acc"] >= 0.9
    first = r.metrics_dataframe["val_acc"].iloc[0]
    assert first < r.metrics["val_acc"]


def test_cifar_fixture_through_a_trial(ray_session, tmp_path, cifar_dir):
    from studies.lr_scan import main

    assert (
        main(["--budget", "smoke", "--dataset", "cifar10", "--data-dir", str(cifar_dir), "--storage", str(tmp_path)])
        == 0
    )
    t = analysis.load(tmp_path / "lr_scan" / "smoke").trials
    assert (t["config.dataset"] == "cifar10").all() and np.isfinite(t["best.val_acc"]).all()


def test_same_command_again_resumes_without_rerunning(ray_session, tmp_path):
    from studies.palindrome import main

    argv = ["--budget", "smoke", "--storage", str(tmp_path), "--seeds", "1"]
    assert main(argv) == 0
    before = analysis.load(tmp_path / "palindrome" / "smoke").trials
    assert main(argv) == 0
    after = analysis.load(tmp_path / "palindrome" / "smoke").trials
    assert list(after["trial_id"]) == list(before["trial_id"])
    assert list(after["wall_time_s"]) == list(before["wall_time_s"])  # nothing trained again
    assert main([*argv[:-1], "2"]) == 2  # a different search space under the same name is refused


def test_arithmetic_shift_smoke_tests_every_trial_on_the_three_test_sets(ray_session, tmp_path):
    t, c, _ = run_smoke("arithmetic_shift", tmp_path)
    assert set(t["config.train_set"]) == {"A", "B"} and (t["config.cell"] == "lstm").all()
    for _, g in t.groupby("config.train_set"):  # the lr is tuned per training set: Optuna's first try, then one more
        assert g["config.lr"].nunique() == 2 and (np.isclose(g["config.lr"], 1e-2)).any()
    shift = ["metric.test_acc_single", "metric.test_acc_two", "metric.test_acc_mixed"]
    assert [k for k in t if k.startswith("metric.test_acc_")] == shift  # no accuracy per result class
    assert (t["metric.train_loss_var"] > 0).all() and "metric.train_loss_var" in c
    done = t[t["status"] == "completed"]  # A and B take the same steps: an iteration is samples_per_report expressions
    assert len(done) and done[shift].apply(lambda v: v.between(0, 1)).all().all()
    # the test sets are measured at the last report only (test_every=None): a trial ASHA stopped has none
    assert t.loc[t["stopped_early"], shift].isna().all().all()
    tested = c.groupby("trial_id")["metric.test_acc"].apply(lambda v: list(v.notna().to_numpy().nonzero()[0] + 1))
    assert all(i == [] or i == [len(c[c["trial_id"] == k])] for k, i in tested.items())  # at most the last report
    assert (done["step"] == 3 * (1000 // 128)).all()


def test_batch_size_smoke_runs_every_batch_size_and_lr_for_the_same_epochs(ray_session, tmp_path):
    t, c, _ = run_smoke("batch_size", tmp_path)
    assert sorted(zip(t["config.batch_size"], t["config.lr"])) == [(8, 1e-4), (8, 1e-2), (64, 1e-4), (64, 1e-2)]
    assert not t["stopped_early"].any()  # batch size and lr are both scientific: ASHA stops nothing
    last = c.groupby("trial_id").tail(1)  # 3 iterations of 500 expressions: whole batches of them
    assert (last["step"] == 3 * (500 // last["config.batch_size"])).all()  # 8x the steps at batch 8
    assert (last["samples"] == last["step"] * last["config.batch_size"]).all()
    assert last["samples"].between(3 * (500 - 64), 3 * 500).all()  # the same epochs for every batch size
    var = t.set_index(["config.batch_size", "config.lr"])["metric.train_loss_var"]
    assert var[(8, 1e-4)] > var[(64, 1e-4)] > 0  # a small batch's loss jumps more from step to step
