"""Every trial in Optuna's database (`studies.engine.record`): the searcher asks and tells through
real Optuna studies on SQLite (RDBStorage), one per scientific value and phase, pickles only its
bookkeeping, and a run killed at any moment resumes the same studies with every trial recorded once
in the right state. Real SQLite files in tmp_path; the slow tests run real smoke studies."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import optuna
import pytest
from optuna.trial import TrialState
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from studies.engine import storage
from studies.engine.record import Record
from studies.engine.search import GridSearch, repair
from tests.test_full_disk import fill, small_disk  # noqa: F401  (a fixture: a real 2 MiB tmpfs)
from tests.test_studies import saved_experiment

ROOT = Path(__file__).resolve().parent.parent
SPACE = {"lr": tune.loguniform(1e-5, 1e-1)}
POINTS = [{"optimizer": "adam"}, {"optimizer": "sgd"}]


def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/optuna.db"


def searcher(tmp_path, samples=3, **kw) -> GridSearch:
    rec = Record(url(tmp_path), "opt/smoke", POINTS, OptunaSearch.convert_search_space(SPACE), metric="acc")
    return GridSearch(
        POINTS, [0, 1], {"iterations": 4}, "acc", "max", SPACE, samples, first={"lr": 1e-4}, record=rec, **kw
    )


def db(tmp_path) -> dict[str, list]:
    """Study name -> its trials, read back from the file as any other Optuna tool would."""
    return {
        s.study_name: optuna.load_study(study_name=s.study_name, storage=url(tmp_path)).trials
        for s in optuna.get_all_study_summaries(url(tmp_path))
    }


def report(s: GridSearch, tid: str, values: list[float]) -> dict:
    for it, v in enumerate(values, 1):
        last = {"acc": v, "training_iteration": it, "seed0/acc": v - 0.1, "seed1/acc": v + 0.1}
        s.on_trial_result(tid, last)
    return last


def test_every_trial_is_in_the_database_with_its_values_state_and_seeds(tmp_path):
    s = searcher(tmp_path)
    configs = {str(i): s.suggest(str(i)) for i in range(6)}
    assert [c["optimizer"] for c in configs.values()] == ["adam", "sgd"] * 3 and configs["0"]["lr"] == 1e-4
    assert all(set(c) == {"iterations", "optimizer", "lr", "seeds"} for c in configs.values())
    s.on_trial_complete("0", report(s, "0", [0.2, 0.3, 0.4, 0.5]))  # ran to the end
    s.on_trial_complete("2", report(s, "2", [0.1, 0.15]))  # ASHA stopped it at iteration 2
    s.on_trial_complete("4", None, error=True)  # failed
    report(s, "1", [0.2, 0.3, 0.4])  # the last result reaches on_trial_complete alone (ASHA's max_t)
    s.on_trial_complete("1", {"acc": 0.6, "training_iteration": 4, "seed0/acc": 0.5, "seed1/acc": 0.7})
    trials = db(tmp_path)
    assert set(trials) == {"opt/smoke optimizer=adam", "opt/smoke optimizer=sgd"}
    adam = trials["opt/smoke optimizer=adam"]
    assert [t.state for t in adam] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    done = adam[0]
    assert done.value == pytest.approx(0.5) and done.params == {"lr": 1e-4, "optimizer": "adam"}
    assert done.intermediate_values == {1: 0.2, 2: 0.3, 3: 0.4, 4: 0.5}  # the mean over seeds, per iteration
    assert done.user_attrs["phase"] == "search" and done.user_attrs["tune_trial_id"] == "0"
    assert done.user_attrs["seeds"] == [0, 1] and done.user_attrs["acc per seed"] == {"0": 0.4, "1": 0.6}
    assert done.user_attrs["per seed"] == {"seed0/acc": 0.4, "seed1/acc": 0.6}
    assert adam[1].intermediate_values == {1: 0.1, 2: 0.15} and adam[1].params["lr"] == configs["2"]["lr"]
    sgd = trials["opt/smoke optimizer=sgd"]
    assert [t.state for t in sgd] == [TrialState.COMPLETE, TrialState.RUNNING, TrialState.RUNNING]
    assert sgd[0].intermediate_values == {1: 0.2, 2: 0.3, 3: 0.4, 4: 0.6} and sgd[0].value == pytest.approx(0.6)
    assert sgd[0].user_attrs["acc per seed"] == {"0": 0.5, "1": 0.7}
    study = optuna.load_study(study_name="opt/smoke optimizer=adam", storage=url(tmp_path))
    assert study.direction.name == "MAXIMIZE" and study.metric_names == ["acc"]


def test_the_searcher_pickles_its_bookkeeping_and_resume_reads_the_studies_from_the_database(tmp_path):
    s = searcher(tmp_path)
    for t in "abc":
        s.suggest(t)
    s.on_trial_complete("a", report(s, "a", [0.1, 0.2, 0.3, 0.4]))
    s.save(str(tmp_path / "s.pkl"))
    state = cloudpickle.loads((tmp_path / "s.pkl").read_bytes())
    assert "studies" not in state and state["live"] == {"b": (1, 2), "c": (0, 3)}  # Optuna trial ids, no Study
    t = GridSearch([{"lr": 9}], seeds=[5], fixed={}, metric="acc", mode="max")
    t.restore(str(tmp_path / "s.pkl"))
    report(t, "c", [0.3, 0.35, 0.6, 0.7])
    t.on_trial_complete("c", {"acc": 0.7, "training_iteration": 4})
    rest = [t.suggest(x) for x in "def"]
    assert t.suggest("g") == GridSearch.FINISHED and [c["optimizer"] for c in rest] == ["sgd", "adam", "sgd"]
    trials = db(tmp_path)
    assert sum(map(len, trials.values())) == 6  # every trial once
    assert [x.value for x in trials["opt/smoke optimizer=adam"][:2]] == [pytest.approx(0.4), pytest.approx(0.7)]
    assert pickle_roundtrip(t).studies[0].study_name == "opt/smoke optimizer=adam"  # what Tune pickles


def pickle_roundtrip(s):
    return cloudpickle.loads(cloudpickle.dumps(s))


def test_a_trial_asked_after_the_last_save_is_taken_up_after_a_kill_never_asked_again(tmp_path):
    s = searcher(tmp_path)
    s.suggest("a")
    s.save(str(tmp_path / "s.pkl"))  # Tune's last save before the kill
    b, c = s.suggest("b"), s.suggest("c")  # asked in the database after it
    s.on_trial_complete("b", report(s, "b", [0.2, 0.3, 0.4, 0.5]))  # b even finished
    # kill -9: Tune restores its saved trials (a) and this state; it suggests b's and c's points again
    t = GridSearch([{"lr": 9}], seeds=[5], fixed={}, metric="acc", mode="max")
    t.restore(str(tmp_path / "s.pkl"))
    b2, c2 = t.suggest("b2"), t.suggest("c2")
    assert (b2, c2) == (b, c)  # the same Optuna trials, taken up
    d2, e2 = t.suggest("d2"), t.suggest("e2")  # new ones: their own values, never a taken-up trial's again
    assert d2["optimizer"] == "sgd" and e2["optimizer"] == "adam" and e2["lr"] != c["lr"] and d2["lr"] != b["lr"]
    t.on_trial_complete("d2", None, error=True)
    t.on_trial_complete("e2", None, error=True)
    t.on_trial_complete("b2", report(t, "b2", [0.9, 0.9, 0.9, 0.9]))  # told before the kill: kept as told
    t.on_trial_complete("c2", report(t, "c2", [0.1, 0.2, 0.3, 0.6]))
    trials = db(tmp_path)
    assert sum(map(len, trials.values())) == 5
    sgd = trials["opt/smoke optimizer=sgd"]
    assert [(x.state, x.value) for x in sgd] == [(TrialState.COMPLETE, pytest.approx(0.5)), (TrialState.FAIL, None)]
    assert trials["opt/smoke optimizer=adam"][1].user_attrs["tune_trial_id"] == "c2"


def test_a_grid_without_a_nuisance_search_and_the_confirmation_are_recorded(tmp_path):
    grid = [{"lr": 1e-3}, {"lr": 1e-2}]
    rec = Record(url(tmp_path), "lr_scan/smoke", grid, metric="acc")
    s = GridSearch(grid, [0], {"iterations": 2}, "acc", "max", record=rec)
    assert [s.suggest(t) for t in "ab"] == [{"iterations": 2, "lr": lr, "seeds": [0]} for lr in (1e-3, 1e-2)]
    s.on_trial_complete("a", report(s, "a", [0.5, 0.6]))
    s.on_trial_complete("b", report(s, "b", [0.3, 0.2]))
    # the confirmation: whole configs, two of them (the tuned and the hand-run lr) for one scientific value
    dists = OptunaSearch.convert_search_space(SPACE)
    conf = Record(url(tmp_path), "opt/smoke", POINTS, dists, "confirm", "acc", experiment="confirm")
    todo = [{"iterations": 2, "optimizer": "adam", "lr": 3e-3}, {"iterations": 2, "optimizer": "adam", "lr": 1e-4}]
    c = GridSearch(todo, [1, 2], {}, "acc", "max", record=conf)
    assert [c.suggest(t) for t in "xy"] == [{**cfg, "seeds": [1, 2]} for cfg in todo]
    c.on_trial_complete("x", report(c, "x", [0.7, 0.8]))
    trials = db(tmp_path)
    assert [t.params for t in trials["lr_scan/smoke lr=0.001"]] == [{"lr": 1e-3}]
    assert trials["lr_scan/smoke lr=0.01"][0].value == pytest.approx(0.2)
    confirmed = trials["opt/smoke optimizer=adam [confirm]"]
    assert [t.params for t in confirmed] == [{"lr": 3e-3, "optimizer": "adam"}, {"lr": 1e-4, "optimizer": "adam"}]
    assert confirmed[0].distributions["lr"] == dists["lr"] and confirmed[0].user_attrs["phase"] == "confirm"
    assert [t.state for t in confirmed] == [TrialState.COMPLETE, TrialState.RUNNING]


def test_repair_gives_a_trial_tune_never_saved_again_with_its_optuna_trial(tmp_path):
    s = searcher(tmp_path, samples=2)
    configs = {t: s.suggest(t) for t in "wxyz"}  # Tune saved its trial list after w, x, y: z is lost
    s.on_trial_complete("w", report(s, "w", [0.2, 0.3, 0.4, 0.5]))
    exp = tmp_path / "exp"
    saved = [(t, configs[t], "TERMINATED" if t == "w" else "RUNNING", {}) for t in "wxy"]
    saved_experiment(exp, s, saved, counter=4)
    repair(str(exp))
    t = GridSearch([{"lr": 9}], seeds=[5], fixed={}, metric="acc", mode="max")
    t.restore(str(exp / "searcher-state-s1.pkl"))
    assert t.suggest("z2") == configs["z"] and t.suggest("q") == GridSearch.FINISHED
    trials = db(tmp_path)
    assert sum(map(len, trials.values())) == 4  # no Optuna trial asked twice
    assert trials["opt/smoke optimizer=sgd"][1].user_attrs["tune_trial_id"] == "z2"


def test_repair_gives_a_trial_tune_saved_but_the_searcher_never_saw_its_optuna_trial_and_tells_it(tmp_path):
    s = searcher(tmp_path, samples=2)
    configs = {t: s.suggest(t) for t in "wxy"}
    s.save(str(tmp_path / "older.pkl"))  # the searcher's file before z: the disk refused the newer one
    configs["z"] = s.suggest("z")  # asked in the database all the same
    older = GridSearch([{"lr": 9}], seeds=[5], fixed={}, metric="acc", mode="max")
    older.restore(str(tmp_path / "older.pkl"))
    saved = [(t, configs[t], "RUNNING", {}) for t in "wxy"]
    saved += [("z", configs["z"], "TERMINATED", {"acc": 0.7, "training_iteration": 4})]
    exp = tmp_path / "exp"
    saved_experiment(exp, older, saved, counter=3)
    repair(str(exp))
    t = GridSearch([{"lr": 9}], seeds=[5], fixed={}, metric="acc", mode="max")
    t.restore(str(exp / "searcher-state-s1.pkl"))
    assert t.suggest("q") == GridSearch.FINISHED and set(t.live) == {"w", "x", "y"}
    trials = db(tmp_path)
    assert sum(map(len, trials.values())) == 4  # z's Optuna trial taken up, not asked again
    [z] = [x for x in trials["opt/smoke optimizer=sgd"] if x.user_attrs["tune_trial_id"] == "z"]
    assert z.state == TrialState.COMPLETE and z.value == pytest.approx(0.7) and z.params["lr"] == configs["z"]["lr"]


def test_a_full_disk_under_the_database_is_a_fault_of_the_storage(small_disk):  # noqa: F811
    st = optuna.storages.RDBStorage(f"sqlite:///{small_disk.path}/optuna.db")
    study = optuna.create_study(storage=st, study_name="full")
    trial = study.ask()
    fill(small_disk.path)
    with pytest.raises(Exception) as caught:
        for i in range(2000):
            trial.set_user_attr(f"k{i}", "x" * 4000)
    assert "database or disk is full" in str(caught.value.__cause__)  # Optuna's error, SQLite's cause
    e = storage.storage_error(caught.value)
    assert e is not None and e.errno == errno.ENOSPC
    assert storage.storage_error(RuntimeError("a trial's own error")) is None


def test_optuna_storage_flag_and_its_default(tmp_path):
    from studies.engine.plan import plan
    from studies.engine.record import url_for
    from studies.lr_scan import STUDY

    p = plan(STUDY, ["--budget", "smoke", "--storage", str(tmp_path)])
    assert url_for(p) == f"sqlite:///{tmp_path}/lr_scan/smoke/optuna.db"
    p = plan(STUDY, ["--storage", str(tmp_path), "--optuna-storage", "sqlite:////elsewhere/x.db"])
    assert url_for(p) == "sqlite:////elsewhere/x.db"
    assert url_for(plan(STUDY, ["--storage", "s3://bucket/r"])) is None  # SQLite cannot live at a URI
    from studies.engine.runner import _header

    live = f"\n  live view: python -m analysis dashboard {tmp_path}/lr_scan/smoke"  # the run prints it at its start
    assert _header(plan(STUDY, ["--budget", "smoke", "--storage", str(tmp_path)])).endswith(live)
    assert "live view" not in _header(plan(STUDY, ["--storage", "s3://bucket/r"]))


@pytest.mark.parametrize(
    "bad",
    [
        "nosuchdialect://x",
        "postgresql+nosuchdriver://u@h/db",
        "no url at all",
        "sqlite:////nonexistent/folder/x.db",
        "sqlite://",
        "postgresql://u@127.0.0.1:1/db",  # nothing listens on port 1
    ],
)
def test_a_bad_optuna_storage_is_one_line_exit_2_before_ray_starts(tmp_path, bad):
    out = subprocess.run(
        [sys.executable, "-m", "studies.lr_scan", "--budget", "smoke", "--storage", str(tmp_path)]
        + ["--optuna-storage", bad],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("python -m studies.lr_scan: error: --optuna-storage ")
    assert not (tmp_path / "lr_scan").exists()


# ---- real studies ---------------------------------------------------------------------------------------


def states(run_dir: Path) -> dict[str, list]:
    """Study name -> its trials, from the run's own database."""
    u = f"sqlite:///{run_dir}/optuna.db"
    return {
        s.study_name: optuna.load_study(study_name=s.study_name, storage=u).trials
        for s in optuna.get_all_study_summaries(u)
    }


def check_recorded(run_dir: Path, phase: str = "search") -> None:
    """Every trial of the run's tables once in the database, in the state its table row says, with its
    intermediate values (one per iteration) and its per-seed values; no trial in the database twice."""
    import analysis

    r = analysis.load(run_dir)
    t = r.trials.drop_duplicates("trial")
    t = t[t["phase"] == phase] if "phase" in t else t
    recorded = [x for name, xs in states(run_dir).items() if ("[" in name) == (phase != "search") for x in xs]
    assert len(recorded) == len(t), (len(recorded), len(t))  # every trial once
    want = {"completed": TrialState.COMPLETE, "stopped": TrialState.PRUNED, "error": TrialState.FAIL}
    metric = r.manifest["metric"]
    for _, row in t.iterrows():
        [x] = [x for x in recorded if all(row[f"config.{k}"] == v for k, v in x.params.items())]
        assert x.state == want[row["status"]], (row["status"], x.state)
        assert sorted(x.intermediate_values) == list(range(1, row["iterations"] + 1))
        assert x.user_attrs["phase"] == phase and x.user_attrs["seeds"]
        if x.state == TrialState.COMPLETE:
            seeds = r.trials[r.trials["trial"] == row["trial"]]
            assert x.value == pytest.approx(seeds[f"metric.{metric}"].mean())
            assert len(x.user_attrs[f"{metric} per seed"]) == len(seeds)


@pytest.mark.slow
def test_a_smoke_study_records_every_trial_of_both_phases(optimizer_smoke):
    run_dir = optimizer_smoke
    check_recorded(run_dir)
    check_recorded(run_dir, "confirm")
    names = set(states(run_dir))
    assert {f"optimizer_comparison/smoke optimizer={o}" for o in ("adam", "sgd")} <= names
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["argv"]["optuna_storage"] is None  # the default: the run's own optuna.db


@pytest.mark.slow
def test_kill_9_then_resume_records_every_trial_once_in_the_right_state(tmp_path):
    """Killed while trials run (a trial has a checkpoint, so Tune has saved its state while the database
    holds trials asked and told since), then --resume: one database row per trial, in its state."""
    from tests.test_reliability import wait_for

    args = ["--budget", "smoke", "--storage", str(tmp_path), "--no-confirm", "--num-samples", "3"]
    run_dir = tmp_path / "optimizer_comparison" / "smoke"
    cmd = [sys.executable, "-m", "studies.optimizer_comparison", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        told = lambda: (
            (run_dir / "optuna.db").exists()
            and any(x.state.is_finished() for xs in states(run_dir).values() for x in xs)
        )
        wait_for(lambda: any(run_dir.glob("tune/trial_*/checkpoint_*")) and told(), proc, timeout=300)
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert not (run_dir / "trials.parquet").exists()
    before = {x._trial_id: x.state for xs in states(run_dir).values() for x in xs}
    again = subprocess.run([*cmd, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    check_recorded(run_dir)
    after = {x._trial_id: x.state for xs in states(run_dir).values() for x in xs}
    assert set(before) <= set(after) and all(after[i] == s for i, s in before.items() if s.is_finished())
    assert os.path.getsize(run_dir / "optuna.db") > 0
    import analysis  # --no-confirm: the search alone, no confirmation experiment

    assert set(analysis.load(run_dir).trials["phase"]) == {"search"} and not (run_dir / "confirm").exists()
