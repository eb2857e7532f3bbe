"""Running a study: plan and check its command line (`studies.engine.plan`), check the storage, the
address, the data and the study's analysis module, then execute the plan on Ray Tune (grid x seeds,
Optuna for nuisance hyperparameters, ASHA), which writes tables, figures and a report under
`<storage>/<study>/<name>/`. The Ray environment (runtime_env, ray.init arguments, cluster checks)
is in `studies.engine.cluster`, the checks that run before Ray starts in `studies.engine.checks`."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from studies.engine.checks import (  # noqa: F401  (FALLBACK: what callers import from here)
    FALLBACK,
    UsageError,
    check_address,
    check_analysis,
    check_storage,
    prepare_data,
)
from studies.engine.cluster import loopback_only, ray_init_kwargs, storage_problem, unschedulable
from studies.engine.plan import Plan, plan, prog
from studies.engine.record import check_url, url_for
from studies.engine.source import Source
from studies.engine.study import Study

# Exit codes: 0 done; 1 every trial failed, the report could not be rendered (the tables are kept), a
# fault of the storage stopped the run (resumable), or trials are missing; 2 bad input, or no trial
# could ever start (nothing written).
RENDER_FAILED = FAULT = MISSING = 1


def _say(who: str, kind: str, message: str, file=None) -> None:
    """One line on stderr: 'python -m studies.NAME: error: ...' (a newline in a value shows as \\n)."""
    message = message.replace("\r", "\\r").replace("\n", "\\n")
    print(f"{who}: {kind}: {message}", file=file or sys.stderr)


def run(
    study: Study,
    argv: list[str] | None = None,
    source: Source | None = None,
    command: str | None = None,
    **plan_fields: Any,
) -> int:
    """`python -m studies.NAME`: plan, check, run on Ray Tune, write results. Returns the exit code.
    `source` is where the study's module lives and `command` what was typed (both found where not
    given); `plan_fields` set fields of the Plan after the command line is read (e.g. reuse_actors=False)."""
    who = "python -m studies"
    try:
        who = prog(study, source)
        p = plan(study, argv, source, command)
        if plan_fields:
            p = replace(p, **plan_fields)
        notice = prepare_data(p)
        check_storage(p)
        check_address(p)
        check_analysis(p)
        if getattr(p.args, "optuna_storage", None):
            check_url(p.args.optuna_storage)
    except UsageError as e:
        _say(who, "error", str(e))
        return 2
    if notice:
        _say(who, "notice", notice)
    return execute(p)


def _header(p: Plan) -> str:
    """What the terminal shows when the trials start: the study, where it runs, where things go, and the
    command of the live view (optuna-dashboard on the run's Optuna database)."""
    from studies.engine.progress import seeds_text

    where = "this machine's Ray" if p.args.address is None else f"the Ray cluster at {p.args.address}"
    later = " (uploaded at the end)" if "://" in p.run_dir else ""
    live = f"\n  live view: python -m analysis dashboard {shlex.quote(p.run_dir)}" if url_for(p) else ""
    return (
        f"{p.study.name}, budget {p.budget_name}: {p.n_trials} trials, each trains {seeds_text(p.seeds)}, on "
        f"{where}; results in {p.run_dir}\n  Ray's output: {p.log_path}{later}; curves: "
        f"tensorboard --logdir {p.tune_dir}{live}"
    )


def execute(p: Plan) -> int:
    """Run a checked plan on Ray Tune (a new run, or the resumed one) and write its results.
    Returns the exit code: 0 done; 1 every trial failed, trials are missing, a fault of the storage
    stopped the run (a full disk: one line says which disk, and the command that continues), or the
    report could not be rendered; 2 if no trial could ever start.

    The terminal gets the compact view (`studies.progress.Progress`) and the summary; everything Ray
    and Tune print goes to `<run>/ray.log` (with --verbose: to both)."""
    import tempfile

    import ray
    from ray import tune

    from studies.engine import confirm, record, results, storage
    from studies.engine.progress import RunLog, drawing_on
    from studies.engine.search import GridSearch, GroupedASHA, repair

    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started = time.time()
    out, err = sys.stdout, sys.stderr
    remote = "://" in p.run_dir
    log = RunLog(echo=out, echo_err=err) if p.args.verbose else RunLog()
    staging = Path(tempfile.mkdtemp(prefix="study-log-")) if remote else None  # the log of a URI run, uploaded
    own_ray = not ray.is_initialized()
    storage.reset()
    fault, confirming = None, 0
    usr1 = signal.getsignal(signal.SIGUSR1) if hasattr(signal, "SIGUSR1") else None  # Tune's fit never restores it
    try:
        with log.capturing(), drawing_on(None if p.args.verbose else out):
            if own_ray:
                if p.args.address is None:
                    loopback_only()
                ray.init(**ray_init_kwargs(p.args.address, p.source))
            try:
                problem = unschedulable(p.cpus, p.gpus, p.args.address, ray.cluster_resources())
                if problem and p.args.address is None:
                    _say(p.prog, "error", problem, file=err)
                    return 2
                if problem:  # a cluster's autoscaler may still add the nodes: say so, and wait for them
                    _say(p.prog, "warning", f"{problem}; waiting for the autoscaler to add nodes", file=err)
                if p.args.address is not None:  # every node of the cluster writes its trials under --storage
                    problem = storage_problem(p.args.storage, ray.nodes())
                    if problem:
                        _say(p.prog, "error", problem, file=err)
                        return 2
                if p.args.overwrite and not remote and Path(p.run_dir).exists():
                    shutil.rmtree(p.run_dir)
                results.write_manifest(p, started=started, finished=None)
                log.attach(staging / "ray.log" if remote else p.log_path)
                print(_header(p), file=out, flush=True)
                exp = p.tune_dir
                trainable = p.trainable()
                if not remote and Path(exp).is_dir() and not list(Path(exp).glob("experiment_state-*.json")):
                    shutil.rmtree(exp)  # killed before Tune saved any state: nothing to resume, start afresh
                if tune.Tuner.can_restore(exp):
                    if Path(exp).is_dir():
                        repair(exp)  # a searcher that a full disk left out of step
                    print(f"  resuming {exp}", file=out, flush=True)
                    tuner = tune.Tuner.restore(
                        exp,
                        trainable,
                        resume_unfinished=True,
                        resume_errored=True,
                        storage_filesystem=storage.filesystem_for(p.run_dir),
                    )
                else:
                    search = GridSearch(
                        p.points,
                        p.seeds,
                        p.fixed,
                        p.study.metric,
                        p.study.mode,
                        p.study.search,
                        p.budget.samples,
                        p.study.search_first,
                        record=record.for_plan(p),
                    )
                    asha = GroupedASHA(
                        p.study.asha_groups,
                        keep=p.study.search_first,
                        time_attr="training_iteration",
                        max_t=p.budget.iterations,
                        grace_period=p.budget.grace,
                        reduction_factor=p.budget.reduction,
                    )
                    tuner = tune.Tuner(trainable, tune_config=p.tune_config(search, asha), run_config=p.run_config())
                grid = tuner.fit()
                fault = next((e for e, _ in storage.faults()), None)  # the guard stopped the study at it
                if fault is None:
                    trials, curves = results.tables(grid, p, storage.statuses())
                    if trials.loc[trials["status"] != "unfinished", "trial"].nunique() >= p.n_trials:
                        trials, curves, confirming = confirm.run_phase(p, trials, curves, out)
                        fault = next((e for e, _ in storage.faults()), None)
            finally:
                if own_ray:
                    ray.shutdown()
    except Exception as e:
        fault = storage.storage_error(e)
        if fault is None:
            _stopped(p, log, remote)
            raise
    except BaseException:
        _stopped(p, log, remote)
        raise
    finally:
        log.end()
        if usr1 is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGUSR1, usr1)  # a later fault in this process must not reach a finished run
    if remote and log.path is not None:
        results.upload(staging, p.run_dir)
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)
    resume = storage.resume_command(p.command, remote or Path(p.tune_dir).is_dir())
    if fault is not None:
        _say(p.prog, "error", storage.fault_message(p.run_dir, fault, resume))
        return FAULT
    ended = trials.loc[trials["status"] != "unfinished", "trial"].nunique()
    missing = max(p.n_trials + confirming - ended, 0)
    try:
        paths = results.write(p, trials, curves, started=started, missing=missing)
    except results.WriteFault as e:  # the disk filled after the trials: their results are all in tune/
        then = f"python -m analysis {shlex.quote(p.run_dir)}" if e.tables_written else resume
        _say(p.prog, "error", storage.fault_message(p.run_dir, e.error, then))
        return FAULT
    except results.RenderError as e:  # the study's analysis failed on the real tables, which are written
        _say(
            p.prog,
            "error",
            f"rendering the report failed ({e}); the tables are safe in {p.run_dir} "
            f"(trials.parquet, curves.parquet): fix the analysis module, then run python -m analysis {p.run_dir}",
        )
        return RENDER_FAILED
    configs = trials.drop_duplicates("trial")
    print(
        f"\n{p.study.name}: {len(configs)} trials ({len(trials)} seed runs), {int(configs['stopped_early'].sum())} "
        f"stopped early by ASHA, {int(trials['diverged'].sum())} seed runs diverged, "
        f"{int((configs['status'] == 'error').sum())} errored, {time.time() - started:.0f} s"
    )
    if missing:
        print(f"  {'missing':8s} {missing} of {p.n_trials + confirming} trials did not finish: continue with {resume}")
    print(f"  {'log':8s} {p.log_path} (Ray's and Tune's output)")
    print(f"  {'curves':8s} tensorboard --logdir {p.tune_dir}")
    for label, path in paths.items():
        print(f"  {label:8s} {path}")
    if missing:
        return MISSING
    return 0 if (trials["status"] != "error").any() else 1


def _stopped(p: Plan, log, remote: bool) -> None:
    """The line that an unexpected end of the run leaves (its traceback follows)."""
    if log.path is not None:
        _say(
            p.prog,
            "error",
            f"the run stopped; Ray's and Tune's output up to here is in {p.log_path}"
            + (f" (here: {log.path})" if remote else ""),
            file=sys.stderr,
        )
