"""The confirmation phase: the configuration chosen on the search's validation objective is trained
again on fresh seeds, and what is reported about it comes from those seeds."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from analysis.selection import chosen, chosen_by, tuned_trials
from studies.engine.confirm import configs, confirm_seeds, selection_manifest, tag
from studies.engine.study import Budget, Study


def _study(**kw) -> Study:
    fields = dict(
        name="t",
        doc="",
        grid=[{"optimizer": "adam"}, {"optimizer": "sgd"}],
        fixed={"task": "image"},
        budgets={"quick": Budget(iterations=2)},
    )
    return Study(**{**fields, **kw})


def _plan(study: Study, seeds=(0, 1, 2)):
    budget = Budget(iterations=2, samples=2)
    return SimpleNamespace(
        study=study, points=study.grid, seeds=list(seeds), fixed={"task": "image", "epochs": 2}, budget=budget
    )


def _trials(rows) -> pd.DataFrame:
    cols = ["config.optimizer", "config.lr", "config.seed", "status", "metric.val_acc", "metric.test_acc"]
    return pd.DataFrame(rows, columns=cols).assign(trial_id=lambda t: [f"x{i}" for i in range(len(t))], trial="x")


def test_confirmation_seeds_follow_the_search_seeds_and_never_overlap_them():
    assert confirm_seeds([0, 1]) == [2, 3, 4]  # at least 3
    assert confirm_seeds([6, 7, 8, 9]) == [10, 11, 12, 13]
    assert not set(confirm_seeds([3, 4, 5])) & {3, 4, 5}


def test_the_chosen_configuration_of_each_scientific_value_is_confirmed():
    p = _plan(_study(search={"lr": object()}))
    rows = [("adam", lr, s, "completed", v, 0.9) for lr, v in ((1e-3, 0.80), (3e-3, 0.85)) for s in range(3)]
    rows += [("sgd", lr, s, "completed", v, 0.9) for lr, v in ((1e-2, 0.70), (1e-1, 0.60)) for s in range(3)]
    todo = configs(_trials(rows), p)
    assert todo == [
        {"task": "image", "epochs": 2, "optimizer": "adam", "lr": 3e-3},
        {"task": "image", "epochs": 2, "optimizer": "sgd", "lr": 1e-2},
    ]


def test_a_point_with_a_key_the_others_lack_confirms_as_itself():
    grid = [{"optimizer": "adam"}, {"optimizer": "adam", "forget_bias": 1.0}]  # plain, and with a key of its own
    p = _plan(_study(grid=grid, search={"lr": object()}))
    rows = [("adam", lr, s, "completed", v, 0.9) for lr, v in ((1e-3, 0.8), (1e-2, 0.7)) for s in range(3)]
    t = pd.concat([_trials(rows).assign(**{"config.forget_bias": fb}) for fb in (float("nan"), 1.0)])
    t = t.assign(trial_id=[f"x{i}" for i in range(len(t))])
    t.loc[t["config.forget_bias"].eq(1.0) & t["config.lr"].eq(1e-2), "metric.val_acc"] = 0.9  # its own best lr
    base = {"task": "image", "epochs": 2, "optimizer": "adam"}
    assert sorted(configs(t, p), key=str) == sorted(
        [{**base, "lr": 1e-3}, {**base, "forget_bias": 1.0, "lr": 1e-2}], key=str
    )


def test_a_budget_confirms_only_the_scientific_values_its_claims_read():
    p = _plan(_study(search={"lr": object()}))
    rows = [
        (o, lr, s, "completed", v, 0.9)
        for o in ("adam", "sgd")
        for lr, v in ((1e-3, 0.8), (1e-2, 0.7))
        for s in range(3)
    ]
    p.budget = Budget(iterations=2, samples=2, confirm=[{"optimizer": "sgd"}])
    assert configs(_trials(rows), p) == [{"task": "image", "epochs": 2, "optimizer": "sgd", "lr": 1e-3}]


def test_a_scan_that_selects_a_scientific_key_confirms_its_best_value():
    study = _study(grid=[{"lr": 1e-3}, {"lr": 1e-2}], select=("lr",))
    m = selection_manifest(_plan(study))
    assert chosen_by(m) == [] and chosen(m) == ["lr"]  # chosen once, over the lr
    rows = [("adam", lr, s, "completed", v, 0.5) for lr, v in ((1e-3, 0.9), (1e-2, 0.8)) for s in range(3)]
    assert configs(_trials(rows), _plan(study)) == [{"task": "image", "epochs": 2, "lr": 1e-3}]


def test_a_grid_that_selects_nothing_has_nothing_to_confirm():
    rows = [("adam", 1e-3, s, "completed", 0.9, 0.9) for s in range(3)]
    assert configs(_trials(rows), _plan(_study())) == []


def test_a_budget_with_one_nuisance_setting_per_value_chooses_nothing_to_confirm():
    p = _plan(_study(search={"lr": object()}))
    rows = [(o, 1e-3, s, "completed", 0.8, 0.9) for o in ("adam", "sgd") for s in range(3)]
    assert len(configs(_trials(rows), p)) == 2
    p.budget = Budget(iterations=2, samples=1)  # the one lr is the only candidate: no winner, no bias
    assert configs(_trials(rows), p) == []


def test_the_phases_are_tagged_and_the_report_reads_the_confirmation_seeds():
    p = _plan(_study(search={"lr": object()}))
    search = _trials([("adam", lr, s, "completed", v, 0.99) for lr, v in ((1e-3, 0.8), (3e-3, 0.9)) for s in range(3)])
    confirm = _trials([("adam", 3e-3, s, "completed", 0.88, 0.7) for s in confirm_seeds([0, 1, 2])])
    (st, _), (ct, _) = tag(search, pd.DataFrame(), "search"), tag(confirm, pd.DataFrame(), "confirm")
    assert ct["trial_id"].str.startswith("c-").all() and set(st["phase"]) == {"search"}
    both = pd.concat([st, ct], ignore_index=True)
    assert configs(both, p) == configs(st, p)  # the choice is the search's, whatever the confirmation saw
    at = tuned_trials(both, selection_manifest(p))
    assert at["config.seed"].tolist() == [3, 4, 5] and at["metric.test_acc"].tolist() == pytest.approx([0.7] * 3)


def test_the_report_shows_search_and_confirmation_side_by_side(tmp_path):
    from test_analysis import OPT_MANIFEST, synthetic_optimizer, write_run

    import analysis

    trials, curves = synthetic_optimizer()
    search, _ = tag(trials, curves, "search")
    best = search[search["config.lr"].isin([1e-3]) & (search["config.optimizer"] == "adam")]
    confirm = pd.concat([best.iloc[[0]].assign(**{"config.seed": s, "metric.test_acc": 0.5}) for s in (2, 3, 4)])
    confirm, _ = tag(confirm.assign(trial_id=[f"a{i}" for i in range(len(confirm))]), pd.DataFrame(), "confirm")
    run = write_run(tmp_path, pd.concat([search, confirm], ignore_index=True), curves, OPT_MANIFEST)
    text = analysis.render(run)["report"].read_text()
    section = text[text.index("## Search and confirmation") :]
    row = next(line for line in section.splitlines() if line.startswith("| adam"))
    assert "0.860 (0.850–0.870 over 2 seeds)" in row and "0.500 ± 0.000 (95% CI, n=3)" in row and "| 0, 1 |" in row


# ---- on real Ray Tune ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_kill_in_the_confirmation_phase_then_resume_gives_every_trial_once(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import analysis
    from studies.engine.runner import run
    from studies.optimizer_comparison import STUDY

    root, storage = Path(__file__).resolve().parent.parent, ["--storage", str(tmp_path)]
    args = ["--budget", "smoke", *storage, "--max-seeds", "2"]  # looks of 1 and 2 confirmation seeds
    run_dir = tmp_path / "optimizer_comparison" / "smoke"
    proc = subprocess.Popen(
        [sys.executable, "-m", "studies.optimizer_comparison", *args],
        cwd=root,
        env=os.environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:  # the moment: a confirmation trial has saved a checkpoint
        t0 = time.time()
        while not any(run_dir.glob("confirm/trial_*/checkpoint_*")):
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.time() - t0 < 300, "no confirmation checkpoint within 300 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert not (run_dir / "trials.parquet").exists()  # killed before the tables
    assert run(STUDY, [*args, "--resume"]) == 0
    r = analysis.load(run_dir)
    t = r.trials
    assert t["trial_id"].is_unique and set(t["status"]) == {"completed"}
    search, confirm = t[t["phase"] == "search"], t[t["phase"] == "confirm"]
    assert len(search) == 4 and set(search["config.seed"]) == {0}
    # a claim with 1 seed a side is undecided: a second look on the next fresh seed, in its own experiment
    assert set(confirm["config.seed"]) == {1, 2} and (run_dir / "confirm-2").is_dir()
    first = confirm[confirm["config.seed"] == 1]
    # each optimizer's tuned lr, and beside it the fixed lr 1e-4 (confirm_first) where that is not the tuned one
    chosen = configs(
        search,
        SimpleNamespace(
            study=STUDY, points=STUDY.budgets["smoke"].grid, seeds=[0], fixed={}, budget=STUDY.budgets["smoke"]
        ),
    )
    assert 2 <= len(chosen) <= 4 and {c["lr"] for c in chosen} >= {1e-4}
    assert sorted((c["optimizer"], c["lr"]) for c in chosen) == sorted(
        zip(first["config.optimizer"], first["config.lr"])
    )
    assert len(confirm) == 2 * len(first) and r.manifest["confirm_seeds"] == [1] and r.manifest["looks"] == [1, 2]
    report = (run_dir / "report.md").read_text()
    assert "## Search and confirmation" in report and "looks at 1, 2 confirmation seeds a side" in report
    # --no-confirm (the search alone): tests/test_optuna_db.py's kill -9 test runs with it


def test_a_figure_says_which_seeds_it_reads():
    from analysis.selection import seeds_said

    rows = pd.DataFrame({"config.seed": [0, 1, 2, 3, 4, 5], "phase": ["search"] * 3 + ["confirm"] * 3})
    assert seeds_said(rows) == "confirmation seeds 3-5 where confirmed, else search seeds 0-2"
    assert seeds_said(rows[rows["phase"] == "confirm"]) == "confirmation seeds 3-5"
    assert seeds_said(rows.drop(columns="phase").iloc[:1]) == "search seed 0"  # a run without a confirmation
