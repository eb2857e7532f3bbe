"""What a person sees while a study runs: the compact view (`studies.engine.progress.Progress`) on a terminal
and where stdout is not one, Ray's and Tune's full output in `<run>/ray.log`, and (slow) a smoke run's
whole stdout."""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from studies.engine import progress
from studies.engine.progress import Progress, RunLog, clock, drawing_on

ROOT = Path(__file__).resolve().parent.parent


def trial(tid, status, it=0, acc=None, **config):
    result = {"training_iteration": it, **({"val_acc": acc} if acc is not None else {})}
    return SimpleNamespace(
        trial_id=tid,
        status=status,
        config={**config, "seeds": [0, 1, 2]},
        last_result=result if it else {},
        path=f"/runs/x/tune/trial_{tid}",
    )


def view(**kw):
    args = dict(
        study="optimizer_comparison",
        scientific=["optimizer"],
        nuisance=["lr"],
        metric="val_acc",
        mode="max",
        max_t=10,
        total=6,
        seeds=[0, 1, 2],
    )
    return Progress(**{**args, **kw})


TRIALS = [
    trial("a", "TERMINATED", 10, 0.91, optimizer="adam", lr=1e-3),
    trial("b", "TERMINATED", 3, 0.40, optimizer="sgd", lr=1e-4),  # stopped by ASHA
    trial("c", "RUNNING", 4, 0.85, optimizer="sgd", lr=0.05),
    trial("d", "RUNNING", 0, None, optimizer="nadam", lr=2e-3),
    trial("e", "ERROR", 2, 0.2, optimizer="rmsprop", lr=0.3),
]


def test_the_view_counts_trials_and_shows_the_best_and_the_running_ones():
    v = view()
    v.setup(total_num_samples=6)
    lines = v.lines(TRIALS)
    assert lines[0].startswith(
        "[0:00] optimizer_comparison: 6 trials: 1 done, 2 running, 1 stopped by ASHA, 1 errored, 1 waiting; ETA ~"
    )
    assert lines[1] == "  best val_acc so far 0.9100: optimizer=adam  lr=0.001 (iteration 10/10)"
    assert lines[2] == "  running  optimizer=sgd  lr=0.05: iteration 4/10, val_acc 0.8500"  # scientific, nuisance
    assert lines[3] == "  running  optimizer=nadam  lr=0.002: iteration 0/10, no result yet"
    assert lines[4].startswith("  errored  optimizer=rmsprop  lr=0.3: its error is in ray.log")
    assert len(v.lines(TRIALS, rows=1)) == 5 and "1 more running" in v.lines(TRIALS, rows=1)[3]
    ended = [t for t in TRIALS if t.status != "RUNNING"]
    assert v.lines(ended, final=True)[0].endswith("; finished")


def test_errored_stopped_diverged_and_stopped_by_the_disk_are_counted_apart():
    from studies.engine import storage

    diverged = trial("f", "TERMINATED", 2, 0.1, optimizer="sgd", lr=9.0)
    diverged.last_result["diverged"] = True
    faulted = trial("g", "ERROR", 3, 0.5, optimizer="adam", lr=3e-3)  # its checkpoint met a full disk
    trials = [*TRIALS, diverged, faulted]
    storage.reset()
    try:
        storage.record(OSError(28, "No space left on device"), "g")
        head = view(total=7).lines(trials)[0]
        assert ": 7 trials: 1 done, 2 running, 1 stopped by ASHA, 1 diverged, 1 errored, 1 to resume; " in head
        assert head.endswith("; stopped: the disk is full")
        final = view(total=7).lines(trials, final=True)
        assert (
            ": 1 done, 0 running, 1 stopped by ASHA, 1 diverged, 1 errored, 3 to resume; stopped: the disk is full"
            in final[0]
        )
        assert sum(line.startswith("  errored ") for line in final) == 1  # the experiment's error only
    finally:
        storage.reset()


def test_the_final_view_reads_the_statuses_before_tunes_clean_up():
    """Tune's clean-up marks the trials that an interruption (Ctrl-C) stopped as TERMINATED: the final
    view counts them as to resume, as the last step left them, not as stopped by ASHA."""
    from studies.engine import storage

    cut = trial("c", "TERMINATED", 4, 0.85, optimizer="sgd", lr=0.05)
    storage.reset()
    try:
        storage.StorageGuard().on_step_end(0, [SimpleNamespace(trial_id="c", status="RUNNING")])
        head = view(total=1).lines([cut], final=True)[0]
        assert head.endswith(": 1 trials: 0 done, 0 running, 0 errored, 1 to resume; interrupted"), head
    finally:
        storage.reset()


def test_the_best_is_the_best_reported_not_the_last():
    v = view()
    t = trial("a", "RUNNING", 2, 0.8, optimizer="adam", lr=1e-3)
    v.on_trial_result(0, [t], t, {"val_acc": 0.8, "training_iteration": 2})
    t.last_result = {"val_acc": 0.7, "training_iteration": 3}
    v.on_trial_result(0, [t], t, t.last_result)
    assert "best val_acc so far 0.8000" in v.lines([t])[1]
    assert view(mode="min").lines([t])[1].startswith("  best val_acc so far 0.7000")


def test_plain_lines_at_most_every_30_s_and_at_the_end(monkeypatch):
    out = io.StringIO()
    clock_now = [1000.0]
    monkeypatch.setattr(progress.time, "time", lambda: clock_now[0])
    v = view()
    with drawing_on(out):
        v.setup()
    for dt in (1, 10, 29):  # within the first 30 s: nothing
        clock_now[0] = 1000.0 + dt
        v.on_step_end(0, TRIALS)
    assert out.getvalue() == ""
    clock_now[0] = 1031.0
    v.on_step_end(0, TRIALS)
    v.on_step_end(0, TRIALS)
    first = out.getvalue()
    assert first.startswith("[0:31] optimizer_comparison") and first.count("[0:") == 1
    v.on_experiment_end(TRIALS)
    assert out.getvalue().count("[0:31]") == 2 and "interrupted" in out.getvalue()  # two trials were running
    assert "\x1b" not in out.getvalue()  # no escape codes where stdout is not a terminal


def test_on_a_terminal_the_view_is_redrawn_in_place(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    clock_now = [1000.0]
    monkeypatch.setattr(progress.time, "time", lambda: clock_now[0])
    monkeypatch.setattr(progress.shutil, "get_terminal_size", lambda fallback=None: os.terminal_size((60, 24)))
    v = view()
    with drawing_on(out):
        v.setup()
    v.on_step_end(0, TRIALS)
    clock_now[0] += 0.5
    v.on_step_end(0, TRIALS)  # within a second: not redrawn
    clock_now[0] += 1
    v.on_step_end(0, TRIALS)
    text = out.getvalue()
    assert text.count("\x1b[J") == 2 and "\x1b[5F\x1b[J" in text  # up over the 5 lines drawn, clear, draw
    shown = re.sub(r"\x1b\[\d*[FJ]", "", text).splitlines()
    assert len(shown) == 10 and max(map(len, shown)) == 59  # cut to the terminal's width: no line wraps


def test_pickled_with_its_settings_only():
    v = view()
    with drawing_on(io.StringIO()):
        v.setup()
    v.best = (0.9, "optimizer=adam", 3)
    w = pickle.loads(pickle.dumps(v))  # what Tune keeps in tuner.pkl and uses when a run is resumed
    assert w.settings == v.settings and w.out is None and w.best is None
    w.setup()
    assert w.out is None  # outside drawing_on: draws nothing
    w.on_experiment_end(TRIALS)


def test_the_run_log_keeps_output_until_it_has_a_file_then_appends(tmp_path):
    log = RunLog()
    ray_logger = logging.getLogger("ray")
    handlers = list(ray_logger.handlers)
    with log.capturing():
        print("before the run folder")
        print("to stderr", file=sys.stderr)
        ray_logger.warning("Token authentication is enabled")
        assert not (tmp_path / "run").exists()
        log.attach(tmp_path / "run" / "ray.log")
        print("after")
    assert ray_logger.handlers == handlers
    log.end()
    log.write("after the end: dropped\n")
    log.stderr.write("dropped too\n")
    text = (tmp_path / "run" / "ray.log").read_text()
    assert text.splitlines()[:2] == ["before the run folder", "to stderr"]
    assert "WARNING" in text and "Token authentication is enabled" in text and text.endswith("after\n")
    echo, echo_err = io.StringIO(), io.StringIO()
    again = RunLog(echo=echo, echo_err=echo_err)  # --verbose: the terminal too; a resumed run appends
    again.attach(tmp_path / "run" / "ray.log")
    with again.capturing():
        print("resumed")
        logging.getLogger("ray.tune").warning("a warning")
    again.end()
    assert echo.getvalue() == "resumed\n" and "a warning" in echo_err.getvalue()
    assert (tmp_path / "run" / "ray.log").read_text().startswith(text + "resumed\n")


def test_the_plan_passes_the_view_to_tune(tmp_path):
    from studies.engine.plan import plan
    from studies.optimizer_comparison import STUDY

    p = plan(STUDY, ["--budget", "smoke", "--storage", str(tmp_path)])
    config = p.run_config()
    (v,) = [c for c in config.callbacks if isinstance(c, Progress)]
    assert config.verbose == 1  # Tune's own output: into ray.log
    assert v.keys == ["optimizer", "lr"] and v.total == p.n_trials == 4 and v.max_t == p.budget.iterations


def test_clock():
    assert [clock(s) for s in (0, 42, 725, 3723)] == ["0:00", "0:42", "12:05", "1:02:03"]


@pytest.mark.slow
def test_a_smoke_run_prints_a_screen_and_ends_with_where_the_results_are(lr_scan_cli):
    out, storage = lr_scan_cli  # stdout: a pipe
    run = storage / "lr_scan" / "validity-smoke-1"
    lines = out.stdout.splitlines()
    assert len(lines) < 60, out.stdout
    assert lines[-1].split()[0] == "report" and f"{run}/report.md" in lines[-1]
    assert f"tensorboard --logdir {run}/tune" in out.stdout and f"{run}/ray.log" in out.stdout
    assert "best val_acc so far" in out.stdout and "3 done" in out.stdout
    log = (run / "ray.log").read_text()
    for tune_says in ("Trial status", "To visualize your results with TensorBoard", "╭"):
        assert tune_says not in out.stdout + out.stderr and tune_says in log
    if "RAY_AUTH_MODE" not in os.environ:  # a local Ray without a token mode says it turns token auth on
        assert "Token authentication" in log
    assert "Token authentication" not in out.stdout + out.stderr and "Traceback" not in out.stderr
