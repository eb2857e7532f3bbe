"""What survives what: kills of the driver at any moment, crashing trials, divergence, bad input,
and a local Ray that listens on loopback only."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import analysis
from studies.engine.runner import run
from studies.engine.study import Budget, Study, cross

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ["--budget", "smoke", "--seeds", "1"]


def start(tmp_path, *extra, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "studies.palindrome", *SMOKE, "--storage", str(tmp_path), *extra],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


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
    reported = {
        d.name.removeprefix("trial_"): (d / "result.json").read_text()
        for d in run_dir.glob("tune/trial_*")
        if (d / "result.json").exists()
    }
    again = subprocess.run(
        [sys.executable, "-m", "studies.palindrome", *SMOKE, "--storage", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
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
    from studies.engine.config import full_config
    from studies.engine.loop import fault_iteration
    from studies.palindrome import STUDY

    assert run(STUDY, ["--budget", "smoke", "--seeds", "2", "--storage", str(tmp_path), "--inject-faults", "0.5"]) == 0
    run_dir = tmp_path / "palindrome" / "smoke"
    t = check_complete(run_dir, n=8)  # all trials, none lost to the crashes
    crashed = 0
    for _, row in t.iterrows():
        params = json.loads((run_dir / "tune" / f"trial_{row['trial']}" / "params.json").read_text())
        crash_at = fault_iteration(full_config(params))  # the trial's config, as the loop sees it
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
    study = Study(
        name="divergence",
        doc="SGD on an MLP with a huge lr",
        grid=cross(lr=[0.05, 1e8]),
        fixed=dict(
            task="image", model="mlp", hidden=(64,), optimizer="sgd", batch_size=64, dataset="digits", n_train=256
        ),
        budgets={b: Budget(iterations=3, grace=3) for b in ("smoke", "quick", "full")},
    )
    assert run(study, ["--budget", "smoke", "--storage", str(tmp_path)]) == 0
    r = analysis.load(tmp_path / "divergence" / "smoke")
    t = r.trials.set_index("config.lr")
    assert t.loc[1e8, "status"] == "diverged" and bool(t.loc[1e8, "diverged"])
    assert t.loc[1e8, "iterations"] == 1  # stopped at its first report
    assert t.loc[0.05, "status"] == "completed" and t.loc[0.05, "metric.val_acc"] > 0.5
    assert "diverged" in (r.path / "report.md").read_text()


# ---- bad input: one line, exit code 2, no traceback, nothing written -------------------------------
# Each case's set-up gets `c`: c.tmp (the test's folder), c.monkeypatch, c.subs (placeholders such as
# {port} in argv) and c.finally_ (clean-ups). A case without --storage runs with {tmp}/store.


def _corrupt_cifar(c, name="test_batch", data=b"\x80garbage"):
    from tests.conftest import write_cifar

    write_cifar(c.tmp / "cifar")
    path = c.tmp / "cifar" / "cifar-10-batches-py" / name
    if data is None:
        path.unlink()
    else:
        path.write_bytes(data(path.read_bytes()) if callable(data) else data)


def _cifar_truncated(c):
    _corrupt_cifar(c, "data_batch_1", lambda raw: raw[: len(raw) // 2])


def _cifar_without_labels(c):
    import pickle

    _corrupt_cifar(c, "data_batch_2", pickle.dumps({"data": b"", "batch_label": "no labels"}))


def _cifar_batch_missing(c):
    _corrupt_cifar(c, "data_batch_3", None)


def _data_dir_is_a_file(c):
    (c.tmp / "afile").write_text("not a folder")


def _fashion(c, change=None, name="train-images-idx3-ubyte.gz"):
    """Fashion-MNIST's four IDX files in {tmp}/fm/FashionMNIST/raw (the first folder searched), file
    `name` changed: "delete", "truncate" (a download cut short), or a function of its IDX bytes; with
    no change, no files. No system copy: monkeypatched (a subprocess would see /usr/share/datasets)."""
    import datasets.images as images
    from tests.test_fashion_mnist import write_fashion

    c.monkeypatch.setattr(images, "FASHION_SYSTEM_DIRS", (c.tmp / "no-system-copy",))
    if change is None:
        return
    raw = c.tmp / "fm" / "FashionMNIST" / "raw"
    write_fashion(raw)
    path = raw / name
    if change == "delete":
        path.unlink()
    elif change == "truncate":
        path.write_bytes(path.read_bytes()[:-200])  # the gzip stream ends early
    else:
        path.write_bytes(gzip.compress(change(gzip.decompress(path.read_bytes()))))


def _idx(array, magic):
    from tests.test_fashion_mnist import idx_bytes

    return idx_bytes(np.asarray(array, dtype=np.uint8), magic)


FASHION_CASES = {  # name -> set-up
    "missing": lambda c: _fashion(c),
    "truncated gzip": lambda c: _fashion(c, "truncate"),
    "bad magic": lambda c: _fashion(c, lambda raw: b"\x00\x00\x09\x99" + raw[4:]),
    "14x14 images": lambda c: _fashion(c, lambda raw: _idx(np.zeros((120, 14, 14)), 0x803)),
    "labels missing for images": lambda c: _fashion(
        c, lambda raw: _idx(np.zeros(100), 0x801), "train-labels-idx1-ubyte.gz"
    ),
    "label 12": lambda c: _fashion(c, lambda raw: _idx(np.full(40, 12), 0x801), "t10k-labels-idx1-ubyte.gz"),
    "a file of four missing": lambda c: _fashion(c, "delete", "t10k-labels-idx1-ubyte.gz"),
}


def _other_study_manifest(c):
    run_dir = c.tmp / "store" / "lr_scan" / "quick"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps({"signature": {"study": "palindrome"}}))


def _other_space_manifest(c):
    run_dir = c.tmp / "store" / "lr_scan" / "quick"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps({"signature": {"study": "lr_scan", "seeds": [0, 1, 2, 3]}}))


def _storage_is_a_file(c):
    (c.tmp / "store").write_text("not a folder")


def _not_ray(c):
    """A port that accepts connections and closes them at once: something, but not a Ray head."""
    server = socket.create_server(("127.0.0.1", 0))
    c.subs["{port}"] = str(server.getsockname()[1])

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed at the end of the test
                return
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    c.finally_.append(server.close)


def _ray_address_nowhere(c):
    c.monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # what --address auto finds: no Ray there


def _storage_check_hangs(c):
    """A storage URI that never answers (a bucket without network): the check gives up after its timeout."""
    import studies.engine.cluster as cluster

    release = threading.Event()
    c.finally_.append(release.set)
    c.monkeypatch.setattr(cluster, "URI_TIMEOUT_S", 0.5)
    c.monkeypatch.setattr(cluster, "_uri_write_test", lambda uri: release.wait(60) and None)


SMOKE1 = ["--budget", "smoke"]
BAD = [  # (study, argv, set-up, words the message must contain)
    ("lr_scan", ["--budget", "huge"], None, "invalid choice: 'huge'"),
    ("lr_scan", ["--gpus-per-trial", "-1"], None, "must be 0 or more"),
    ("lr_scan", ["--gpus-per-trial", "abc"], None, "is not a number"),
    ("lr_scan", ["--gpus-per-trial", "1"], None, "no GPU is visible"),
    ("lr_scan", ["--cpus-per-trial", "0"], None, "must be positive"),
    ("lr_scan", ["--cpus-per-trial", "64"], None, "no trial could ever start"),
    ("lr_scan", ["--max-concurrent", "0"], None, "must be positive"),
    ("optimizer_comparison", ["--num-samples", "0"], None, "must be positive"),
    ("lr_scan", ["--num-samples", "4"], None, "no nuisance search"),
    ("lr_scan", ["--resume", "--overwrite"], None, "contradict"),
    ("lr_scan", ["--inject-faults", "2"], None, "probability"),
    ("lr_scan", ["--precision", "fp16"], None, "invalid choice: 'fp16'"),
    ("lr_scan", ["--frobnicate"], None, "unrecognized arguments"),
    ("lr_scan", ["--resume"], None, "holds no run to resume"),
    # seeds, iterations and the size of a run (above 2,000 seed runs or 10,000 iterations: only with --yes)
    ("lr_scan", ["--seeds", "0"], None, "must be positive"),
    ("lr_scan", ["--seeds", "-2"], None, "must be positive"),
    ("lr_scan", ["--seeds", "1.5"], None, "is not a number"),
    ("lr_scan", ["--first-seed", "-1"], None, "--first-seed -1: expected a whole number >= 0"),
    ("lr_scan", ["--first-seed", "x"], None, "invalid int value: 'x'"),
    ("lr_scan", ["--first-seed", str(2**32)], None, "must stay below 2^32"),
    ("lr_scan", ["--seeds", "100000"], None, "600,000 seed runs, more than 2,000: pass --yes"),
    ("optimizer_comparison", ["--num-samples", "600"], None, "2,400 seed runs, more than 2,000: pass --yes"),
    ("lr_scan", ["--iterations", "0"], None, "must be positive"),
    ("lr_scan", ["--iterations", "-3"], None, "must be positive"),
    ("lr_scan", ["--iterations", "1.5"], None, "is not a number"),
    ("lr_scan", ["--iterations", "1000000"], None, "more than 10,000 iterations per trial"),
    # datasets
    ("lr_scan", ["--dataset", "imagenet"], None, "unknown dataset 'imagenet'"),
    ("palindrome", ["--dataset", "cifar10"], None, "unknown dataset 'cifar10'"),
    ("lr_scan", ["--dataset", "cifar10", "--data-dir", "{tmp}/nowhere/x"], None, "could not be downloaded"),
    ("lr_scan", ["--dataset", "cifar10", "--data-dir", "{tmp}/afile"], _data_dir_is_a_file, "could not be downloaded"),
    ("lr_scan", ["--dataset", "cifar10", "--data-dir", "{tmp}/cifar"], _corrupt_cifar, "test_batch is corrupted"),
    ("lr_scan", ["--dataset", "cifar10", "--data-dir", "{tmp}/cifar"], _cifar_truncated, "data_batch_1 is corrupted"),
    (
        "lr_scan",
        ["--dataset", "cifar10", "--data-dir", "{tmp}/cifar"],
        _cifar_without_labels,
        "data_batch_2 is corrupted",
    ),
    ("lr_scan", ["--dataset", "cifar10", "--data-dir", "{tmp}/cifar"], _cifar_batch_missing, "could not be downloaded"),
    *[
        ("lr_scan", [*SMOKE1, "--dataset", "fashion_mnist", "--data-dir", "{tmp}/fm"], setup, words)
        for setup, words in [
            (FASHION_CASES["missing"], "Fashion-MNIST is not in"),
            (FASHION_CASES["truncated gzip"], "train-images-idx3-ubyte.gz is corrupted"),
            (FASHION_CASES["bad magic"], "magic number 0x00000999, expected 0x00000803"),
            (FASHION_CASES["14x14 images"], "holds 14x14 images, not 28x28"),
            (FASHION_CASES["labels missing for images"], "holds 100 labels for the 120 images"),
            (FASHION_CASES["label 12"], "holds label 12, not one of 0-9"),
            (FASHION_CASES["a file of four missing"], "Fashion-MNIST is not in"),
        ]
    ],
    # --grid
    ("optimizer_comparison", ["--grid", "optimizer=adam,lion"], None, "optimizer='lion'"),
    ("palindrome", ["--grid", "cell=lstm,transformer"], None, "cell='transformer'"),
    ("palindrome", ["--grid", "seq_len=0"], None, "seq_len=0"),
    ("palindrome", ["--grid", "seq_len=5.5"], None, "seq_len=5.5: expected a whole number"),
    ("lr_scan", ["--grid", "lr=-1"], None, "lr=-1"),
    ("lr_scan", ["--grid", "lr=abc"], None, "lr='abc': expected a positive number"),
    ("lr_scan", ["--grid", "lr=inf"], None, "inf is not a finite number"),
    ("lr_scan", ["--grid", "lr=1e-3,nan"], None, "nan is not a finite number"),
    ("lr_scan", ["--grid", "lr=1e-3,0.001"], None, "lr=0.001 is given twice"),
    ("lr_scan", ["--grid", "lr=1e-3", "--grid", "lr=1e-2"], None, "--grid lr is given 2 times"),
    ("lr_scan", ["--grid", "lr="], None, "empty search space"),
    ("lr_scan", ["--grid", "momentum=0.5"], None, "KEY one of lr"),
    ("lr_scan", ["--grid", "lr"], None, "expected KEY=V1,V2"),
    ("lr_scan", ["--grid", "lr=" + ",".join(f"{i}e-6" for i in range(1, 701))], None, "2,100 seed runs"),
    ("regularization", ["--grid", "dropout=1.5"], None, "dropout=1.5"),
    # names
    ("lr_scan", ["--name", "../escape"], None, "plain folder name"),
    ("lr_scan", ["--name", ""], None, "--name '': use a plain folder name"),
    ("lr_scan", ["--name", ".hidden"], None, "plain folder name"),
    ("lr_scan", ["--name", "two\nlines"], None, "--name 'two\\nlines'"),
    # Ray's address: malformed, nothing there, something that is not Ray, Ray Client
    ("lr_scan", ["--address", "not an address"], None, "expected auto, HOST:PORT"),
    ("lr_scan", ["--address", "127.0.0.1:70000"], None, "the port must be 1 to 65535"),
    ("lr_scan", [*SMOKE1, "--address", "127.0.0.1:1"], None, "nothing answers at 127.0.0.1:1"),
    ("lr_scan", [*SMOKE1, "--address", "127.0.0.1:{port}"], _not_ray, "accepts connections but is not a Ray head"),
    ("lr_scan", [*SMOKE1, "--address", "ray://127.0.0.1:1"], None, "--address ray://127.0.0.1:1: "),
    ("lr_scan", [*SMOKE1, "--address", "auto"], _ray_address_nowhere, "--address auto"),
    # storage
    ("lr_scan", [], _storage_is_a_file, "is a file, not a folder"),
    ("lr_scan", [*SMOKE1, "--storage", "/proc/studies-test/results"], None, "cannot write /proc/studies-test"),
    ("lr_scan", [*SMOKE1, "--storage", "/sys/studies-test/results"], None, "--storage /sys/studies-test/results: "),
    ("lr_scan", [*SMOKE1, "--storage", "{tmp}/" + "y" * 300], None, "File name too long"),
    ("lr_scan", [*SMOKE1, "--storage", "s3x://bucket/results"], None, "not a storage that pyarrow knows"),
    ("lr_scan", [*SMOKE1, "--storage", "gs://bucket/results"], _storage_check_hangs, "no answer within 0.5 s"),
    ("lr_scan", [], _other_study_manifest, "holds a run of another study"),
    ("lr_scan", [], _other_space_manifest, "holds a run of a different search space"),
]


def _case_id(study, argv, setup, words):
    text = " ".join(a if len(a) < 40 else a[:37] + "..." for a in argv) or setup.__name__
    return f"{study}:{text}:{words[:40]}".replace("\n", "\\n")


@pytest.mark.parametrize("study, argv, setup, words", BAD, ids=[_case_id(*case) for case in BAD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, monkeypatch, study, argv, setup, words):
    import importlib
    from types import SimpleNamespace

    import torchvision

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    c = SimpleNamespace(tmp=tmp_path, monkeypatch=monkeypatch, subs={"{tmp}": str(tmp_path)}, finally_=[])
    try:
        if setup:
            setup(c)
        before = sorted(p for p in tmp_path.rglob("*"))
        mod = importlib.import_module(f"studies.{study}")
        for key, sub in c.subs.items():
            argv = [a.replace(key, sub) for a in argv]
        if "--storage" not in argv:
            argv = [*argv, "--storage", str(tmp_path / "store")]
        t0 = time.time()
        code = run(mod.STUDY, argv)
        took = time.time() - t0
        err = capsys.readouterr().err
    finally:
        for f in c.finally_:
            f()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], err
    assert lines[0].startswith(f"python -m studies.{study}: error: ") and "Traceback" not in err
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written or overwritten
    assert took < 30


def test_at_least_45_bad_input_cases():
    assert len(BAD) >= 45


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--storage", "/proc/studies-test/results"], "cannot write /proc/studies-test"),
        (["--address", "127.0.0.1:1"], "nothing answers at 127.0.0.1:1"),
    ],
)
def test_bad_input_fails_fast_in_a_real_process(tmp_path, argv, words):
    """In a process of its own: one line, exit 2, before Ray starts (within seconds), nothing written."""
    t0 = time.time()
    out = subprocess.run(
        [sys.executable, "-m", "studies.lr_scan", "--budget", "smoke", "--storage", str(tmp_path / "r"), *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.time() - t0
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and words in lines[0], out.stderr
    assert out.stdout == "" and not list(tmp_path.iterdir())
    assert took < 30  # including Python's, torch's and Ray's imports on a busy machine; the checks take < 10 s


@pytest.mark.slow
def test_unschedulable_trials_fail_within_seconds(ray_session, tmp_path, capsys):
    from dataclasses import replace

    from studies.engine.plan import plan
    from studies.engine.runner import execute
    from studies.lr_scan import STUDY

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
    out = subprocess.run(
        [sys.executable, "-m", "studies", "lr_scna"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    # neither a catalogue name nor a module here: the message says so and lists the catalogue's names
    assert out.stderr.startswith("python -m studies: error: lr_scna: no module 'lr_scna' here")
    assert "(catalogue: " in out.stderr and " lr_scan," in out.stderr
