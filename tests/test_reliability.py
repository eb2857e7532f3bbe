"""What survives what: kills of the driver at any moment, crashing trials, divergence, bad input,
and a local Ray that listens on loopback only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import analysis
from studies.runner import run
from studies.study import Budget, Study, cross

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ["--budget", "smoke", "--seeds", "1"]


def start(tmp_path, *extra, env=None):
    return subprocess.Popen([sys.executable, "-m", "studies.palindrome", *SMOKE, "--storage", str(tmp_path), *extra],
                            cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_for(predicate, proc, timeout=120):
    t0 = time.time()
    while not predicate():
        assert proc.poll() is None, f"the study ended before the moment to kill it: {proc.stderr.read()[-2000:]}"
        assert time.time() - t0 < timeout, "timed out waiting for the moment to kill"
        time.sleep(0.05)


def check_complete(run_dir: Path, n: int):
    r = analysis.load(run_dir)
    t, c = r.trials, r.curves
    assert len(t) == n and t["trial_id"].is_unique  # every trial exactly once
    assert set(t["status"]) <= {"completed", "stopped"}
    assert (c.groupby("trial_id")["iteration"].apply(lambda s: list(s) == list(range(1, len(s) + 1)))).all()
    assert r.manifest["finished"]
    return t


# Moments to kill the driver: while Ray starts, mid-trial (after a checkpoint), and while the
# tables are written (made slow by the testing hook STUDIES_TEST_WRITE_DELAY).
MOMENTS = {
    "ray-start": lambda run: (run / "manifest.json").exists(),
    "mid-trial": lambda run: any(run.glob("tune/trial_*/checkpoint_*")),
    "tables": lambda run: any(run.glob(".trials.parquet.*.tmp")),
}


@pytest.mark.slow
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_sigkill_at_any_moment_then_rerun_completes(tmp_path, moment):
    run_dir = tmp_path / "palindrome" / "smoke"
    proc = start(tmp_path, env={"STUDIES_TEST_WRITE_DELAY": "3"} if moment == "tables" else None)
    try:
        wait_for(lambda: MOMENTS[moment](run_dir), proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    if moment == "tables":
        assert not (run_dir / "trials.parquet").exists()  # killed mid-write: no truncated table
    reported = {d.name.removeprefix("trial_"): (d / "result.json").read_text()
                for d in run_dir.glob("tune/trial_*") if (d / "result.json").exists()}
    again = subprocess.run([sys.executable, "-m", "studies.palindrome", *SMOKE, "--storage", str(tmp_path)],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    t = check_complete(run_dir, n=4)
    assert not list(run_dir.glob(".*.tmp"))
    kept = 0
    for tid, text in reported.items():  # trials that had made all their reports: kept, not rerun
        row = t[t["trial"] == tid].iloc[0]  # the Tune trial (its one seed here)
        if len(text.splitlines()) == row["iterations"]:
            assert (run_dir / "tune" / f"trial_{tid}" / "result.json").read_text() == text
            kept += 1
    if moment == "tables":
        assert kept == 4


@pytest.mark.slow
def test_resume_flag_continues_an_interrupted_run(tmp_path):
    run_dir = tmp_path / "palindrome" / "smoke"
    proc = start(tmp_path)
    try:
        wait_for(lambda: MOMENTS["mid-trial"](run_dir), proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    from studies.palindrome import STUDY

    assert run(STUDY, [*SMOKE, "--storage", str(tmp_path), "--resume"]) == 0
    t = check_complete(run_dir, n=4)
    assert t["restarts"].max() <= 1


@pytest.mark.slow
def test_crashing_trials_are_retried_from_their_checkpoint(ray_session, tmp_path):
    from studies.palindrome import STUDY
    from studies.train import DEFAULTS, fault_iteration

    assert run(STUDY, ["--budget", "smoke", "--seeds", "2", "--storage", str(tmp_path), "--inject-faults", "0.5"]) == 0
    run_dir = tmp_path / "palindrome" / "smoke"
    t = check_complete(run_dir, n=8)  # all trials, none lost to the crashes
    crashed = 0
    for _, row in t.iterrows():
        params = json.loads((run_dir / "tune" / f"trial_{row['trial']}" / "params.json").read_text())
        crash_at = fault_iteration({**DEFAULTS, **params})
        expected = int(crash_at is not None and row["iterations"] >= crash_at)
        assert row["restarts"] == expected, (row["trial_id"], crash_at, row["iterations"])
        crashed += expected
        steps = row["iterations"] * params["steps_per_report"]
        assert row["step"] == steps  # no step lost or done twice: resumed from the checkpoint
    # Half the configs are drawn to crash (6 of 8 here); ASHA may stop some before their moment,
    # but the first trial of each sequence length always passes the first rung.
    assert crashed >= 1


@pytest.mark.slow
def test_divergence_marks_the_trial_and_the_study_goes_on(ray_session, tmp_path):
    study = Study(name="divergence", doc="SGD on an MLP with a huge lr", grid=cross(lr=[0.05, 1e8]),
                  fixed=dict(task="image", model="mlp", hidden=(64,), optimizer="sgd", batch_size=64,
                             dataset="digits", n_train=256),
                  budgets={b: Budget(iterations=3, grace=3) for b in ("smoke", "quick", "full")})
    assert run(study, ["--budget", "smoke", "--storage", str(tmp_path)]) == 0
    r = analysis.load(tmp_path / "divergence" / "smoke")
    t = r.trials.set_index("config.lr")
    assert t.loc[1e8, "status"] == "diverged" and bool(t.loc[1e8, "diverged"])
    assert t.loc[1e8, "iterations"] == 1  # stopped at its first report
    assert t.loc[0.05, "status"] == "completed" and t.loc[0.05, "metric.val_acc"] > 0.5
    assert "diverged" in (r.path / "report.md").read_text()


# ---- bad input: one line, exit code 2, no traceback, nothing written -------------------------------


def _corrupt_cifar(tmp):
    from tests.conftest import write_cifar

    write_cifar(tmp / "cifar")
    (tmp / "cifar" / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80garbage")
    return tmp / "cifar"


def _other_study_manifest(tmp):
    run_dir = tmp / "store" / "lr_scan" / "quick"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps({"signature": {"study": "palindrome"}}))


def _other_space_manifest(tmp):
    run_dir = tmp / "store" / "lr_scan" / "quick"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps({"signature": {"study": "lr_scan", "seeds": [0, 1, 2, 3]}}))


def _storage_is_a_file(tmp):
    (tmp / "store").write_text("not a folder")


BAD = [  # (study, argv, set-up, words the message must contain)
    ("lr_scan", ["--budget", "huge"], None, "invalid choice: 'huge'"),
    ("lr_scan", ["--gpus-per-trial", "-1"], None, "must be 0 or more"),
    ("lr_scan", ["--gpus-per-trial", "abc"], None, "is not a number"),
    ("lr_scan", ["--gpus-per-trial", "1"], None, "no GPU is visible"),
    ("lr_scan", ["--cpus-per-trial", "0"], None, "must be positive"),
    ("lr_scan", ["--cpus-per-trial", "64"], None, "no trial could ever start"),
    ("lr_scan", ["--seeds", "0"], None, "must be positive"),
    ("lr_scan", ["--seeds", "1.5"], None, "is not a number"),
    ("lr_scan", ["--iterations", "0"], None, "must be positive"),
    ("lr_scan", ["--iterations", "-3"], None, "must be positive"),
    ("lr_scan", ["--max-concurrent", "0"], None, "must be positive"),
    ("optimizer_comparison", ["--num-samples", "0"], None, "must be positive"),
    ("lr_scan", ["--num-samples", "4"], None, "no nuisance search"),
    ("lr_scan", ["--dataset", "imagenet"], None, "unknown dataset 'imagenet'"),
    ("palindrome", ["--dataset", "cifar10"], None, "unknown dataset 'cifar10'"),
    ("optimizer_comparison", ["--grid", "optimizer=adam,lion"], None, "optimizer='lion'"),
    ("palindrome", ["--grid", "cell=lstm,transformer"], None, "cell='transformer'"),
    ("palindrome", ["--grid", "seq_len=0"], None, "seq_len=0"),
    ("lr_scan", ["--grid", "lr=-1"], None, "lr=-1"),
    ("lr_scan", ["--grid", "lr="], None, "empty search space"),
    ("lr_scan", ["--grid", "momentum=0.5"], None, "KEY one of lr"),
    ("regularization", ["--grid", "dropout=1.5"], None, "dropout=1.5"),
    ("lr_scan", ["--address", "not an address"], None, "expected auto, HOST:PORT"),
    ("lr_scan", ["--resume", "--overwrite"], None, "contradict"),
    ("lr_scan", ["--inject-faults", "2"], None, "probability"),
    ("lr_scan", ["--precision", "fp16"], None, "invalid choice: 'fp16'"),
    ("lr_scan", ["--name", "../escape"], None, "plain folder name"),
    ("lr_scan", ["--frobnicate"], None, "unrecognized arguments"),
    ("lr_scan", ["--resume"], None, "holds no run to resume"),
    ("lr_scan", ["--dataset", "cifar10", "--data-dir", "{tmp}/nowhere/x"], None, "could not be downloaded"),
    ("lr_scan", ["--dataset", "cifar10", "--data-dir", "{tmp}/cifar"], _corrupt_cifar, "test_batch is corrupted"),
    ("lr_scan", [], _storage_is_a_file, "is a file, not a folder"),
    ("lr_scan", [], _other_study_manifest, "holds a run of another study"),
    ("lr_scan", [], _other_space_manifest, "holds a run of a different search space"),
]


@pytest.mark.parametrize("study, argv, setup, words", BAD, ids=[f"{s}:{' '.join(a) or f.__name__}"
                                                                 for s, a, f, _ in BAD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, monkeypatch, study, argv, setup, words):
    import importlib

    import torchvision

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    if setup:
        setup(tmp_path)
    before = sorted(p for p in tmp_path.rglob("*"))
    mod = importlib.import_module(f"studies.{study}")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = run(mod.STUDY, [*argv, "--storage", str(tmp_path / "store")])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], err
    assert lines[0].startswith(f"python -m studies.{study}: error: ")
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written or overwritten


def test_at_least_25_bad_input_cases():
    assert len(BAD) >= 25


@pytest.mark.slow
def test_unschedulable_trials_fail_within_seconds(ray_session, tmp_path, capsys):
    from dataclasses import replace

    from studies.lr_scan import STUDY
    from studies.runner import execute, plan

    p = replace(plan(STUDY, [*SMOKE, "--storage", str(tmp_path)]), cpus=3.0)  # past plan()'s own check
    t0 = time.time()
    assert execute(p) == 2
    assert time.time() - t0 < 10
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a trial needs 3 CPU but this machine's Ray has 2" in err[0]
    assert not (tmp_path / "lr_scan").exists()


# ---- security ----------------------------------------------------------------------------------------


def listening() -> set[tuple[str, str]]:
    out = subprocess.run(["ss", "-Htln"], capture_output=True, text=True).stdout
    return {tuple(line.split()[3].rsplit(":", 1)) for line in out.splitlines() if line.strip()}


@pytest.mark.slow
def test_local_ray_listens_on_loopback_only(tmp_path):
    before = listening()
    proc = start(tmp_path)
    try:
        wait_for(lambda: any((tmp_path / "palindrome" / "smoke").glob("tune/trial_*/checkpoint_*")), proc)
        opened = listening() - before
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert len(opened) >= 3  # GCS, raylet, workers...
    loopback = ("127.", "[::ffff:127.", "[::1]", "::1")
    assert all(addr.startswith(loopback) for addr, _ in opened), opened


def test_unknown_study_is_one_line_exit_2():
    out = subprocess.run([sys.executable, "-m", "studies", "lr_scna"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "unknown study 'lr_scna': choose one of lr_scan" in out.stderr
