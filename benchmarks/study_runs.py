"""Studies run through Ray Tune for the `overhead` and `asha` benchmarks, each at most once per
process: `python -m benchmarks overhead asha` shares the ASHA runs between the two.

A run is the study's own command (`studies.<name>.main`), with `--storage` a temporary folder
and `--name` the arm; the `grid` arm is the same Study with the budget's ASHA grace set to its
iterations (no rung before the end: no early stopping), run through `studies.engine.runner.run`, as is a
run that sets fields of the runner's Plan (e.g. reuse_actors=False).

The tables have one row per seed (`trial_id` = `<Tune trial>-<seed>`, column `trial` = the Tune
trial, which trains all the seeds of one configuration): counts of trials and their compute are
per Tune trial, iterations per seed. `trials` gains `started_s`: when its Tune trial started,
in seconds after the first (from Tune's result.json files).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

import analysis
from studies.engine import runner
from studies.engine.study import Study


@dataclass
class StudyRun:
    name: str  # the study
    arm: str  # asha | grid | a variant's label
    budget: str
    study: Study
    trials: pd.DataFrame
    wall_s: float  # the whole command: Ray start, Tune, tables, figures, report, Ray shutdown
    span_s: float  # first trial start to last trial end (from Tune's result.json files)
    concurrency: int  # trials that fit at once: CPUs / cpus per trial
    load: float = float("nan")  # the machine's 1-minute load average at the end (other work slows trials too)
    curves: pd.DataFrame | None = None  # one row per trial per report
    claims: pd.DataFrame | None = None  # the run's claims table (analysis.claims)

    def _per_trial(self) -> pd.DataFrame:
        """One row per Tune trial (its seeds share its wall_time_s); the table itself where it has no `trial`."""
        return self.trials.drop_duplicates("trial") if "trial" in self.trials else self.trials

    @property
    def n_trials(self) -> int:
        """Tune trials: configurations, each with all its seeds."""
        return len(self._per_trial())

    @property
    def stopped_early(self) -> int:
        """Tune trials that ASHA stopped (every seed but a diverged one says stopped_early)."""
        if "trial" not in self.trials:
            return int(self.trials["stopped_early"].sum())
        return int(self.trials.groupby("trial")["stopped_early"].any().sum())

    @property
    def compute_s(self) -> float:
        """The trials' own time: the sum over Tune trials of time_total_s (trainable start to last report)."""
        return float(self._per_trial()["wall_time_s"].sum())

    @property
    def iterations(self) -> int:
        """Iterations summed over seeds: a trial of k seeds that ran n iterations counts k x n."""
        return int(self.trials["iterations"].sum())


_RUNS: dict[tuple, StudyRun] = {}


def _trial_times(tune_dir: Path) -> dict[str, tuple[float, float]]:
    """Tune trial id (or folder name) -> (start, last report) timestamps, from its result.json."""
    out = {}
    for f in tune_dir.glob("*/result.json"):
        lines = [json.loads(s) for s in f.read_text().splitlines() if s.strip()]
        if lines:
            out[lines[0].get("trial_id", f.parent.name)] = (
                lines[0]["timestamp"] - lines[0].get("time_this_iter_s", 0),
                lines[-1]["timestamp"],
            )
    return out


def _trial_span(tune_dir: Path) -> float:
    """Seconds from the first trial's start to the last trial's last report (1 s resolution)."""
    times = _trial_times(tune_dir).values()
    return max(e for _, e in times) - min(s for s, _ in times) if times else math.nan


def _with_starts(trials: pd.DataFrame, tune_dir: Path) -> pd.DataFrame:
    """`trials` with `started_s`: its Tune trial's start after the first trial's (NaN where unknown)."""
    starts = {k: s for k, (s, _) in _trial_times(tune_dir).items()}
    if not starts or "trial" not in trials:
        return trials
    first = min(starts.values())
    return trials.assign(started_s=trials["trial"].map(lambda t: starts.get(t, math.nan) - first))


def study_run(
    name: str,
    budget: str = "quick",
    arm: str = "asha",
    seeds: int | None = None,
    fixed: dict | None = None,
    plan_fields: dict | None = None,
    flags: tuple[str, ...] = (),
) -> StudyRun:
    """Run study `name` once (cached per process) and return its trials and timings. `fixed`
    overrides config keys of the budget; `plan_fields` set fields of the runner's Plan (e.g.
    {"reuse_actors": False}, which the runner passes to tune.TuneConfig), for this run only; `flags`
    go to the study's command line (e.g. ("--gpus-per-trial", "0.25"))."""
    key = (name, budget, arm, seeds, json.dumps(fixed or {}, sort_keys=True), json.dumps(plan_fields or {}), flags)
    if key in _RUNS:
        return _RUNS[key]
    mod = importlib.import_module(f"studies.{name}")
    study = mod.STUDY
    b = study.budgets[budget]
    if arm == "grid":
        b = replace(b, grace=b.iterations)
    if fixed:
        b = replace(b, fixed={**b.fixed, **fixed})
    modified = b != study.budgets[budget]  # else: the study's own main()
    study = replace(study, budgets={**study.budgets, budget: b})
    storage = tempfile.mkdtemp(prefix="benchmarks-")
    argv = [
        "--budget",
        budget,
        "--storage",
        storage,
        "--name",
        arm,
        *(["--seeds", str(seeds)] if seeds else []),
        *flags,
    ]
    fields = "".join(f", {k}={v!r}" for k, v in (plan_fields or {}).items())
    call = "runner.run(modified STUDY, " if modified else "runner.run(STUDY, " if fields else "main("
    print(f"\n-- {name} {budget} {arm}: {call}{argv}{fields})", flush=True)
    try:
        t = time.perf_counter()
        rc = runner.run(study, argv, **(plan_fields or {})) if modified or fields else mod.main(argv)
        wall = time.perf_counter() - t
        if rc not in (0, 1):
            raise RuntimeError(f"studies.{name} {' '.join(argv)} exited with {rc}")
        run_dir = Path(storage) / name / arm
        results = analysis.load(run_dir)
        span = _trial_span(run_dir / "tune")
        trials = _with_starts(results.trials, run_dir / "tune")
        claims = analysis.claims(results)
    finally:
        shutil.rmtree(storage, ignore_errors=True)  # the CNN's checkpoints are ~110 MB each
    run = StudyRun(
        name,
        arm,
        budget,
        study,
        trials,
        wall,
        span,
        os.cpu_count() or 1,
        round(os.getloadavg()[0], 1),
        results.curves,
        claims,
    )
    _RUNS[key] = run
    return run
