"""Where a quick trial's time goes between training and measurement, for every catalogue study.

For one trial of each study at its quick budget (its first grid point, every seed of the budget), one
report as `studies.engine.loop.train` makes it, with the loop's own parts (`make_replicas`, `make_units`,
`train_block`, `measure`): the seconds of its training block(s), and of its measurement, split into
BatchNorm's refresh (`refresh_bn`), the training-set accuracy (`train_eval`), validation, test and the
extra test sets. `report eval %` = measurement / (training + measurement) of a report that measures
everything; `eval %` the same over the whole trial, whose test sets are measured only at its test reports
(every `test_every`-th and the last): the share of the trial's compute that measures it (its checkpoints,
a few per trial, are left out: see `python -m benchmarks overhead`).
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections import defaultdict

import pandas as pd
import torch

from benchmarks.overhead import CPU, trial_config
from benchmarks.study_runs import study_run
from studies import STUDIES
from studies.engine import task as task_module
from studies.engine.loop import autocast_for, make_replicas, make_units, measure, seed_results, tests_at, train_block
from studies.engine.task import resolve_task

TARGET = 20.0  # the most eval %, at the quick budgets
PARTS = ("bn", "train_eval", "val", "test", "tests")


@contextlib.contextmanager
def timed_parts(replicas, seconds: dict):
    """Time the default `measure`'s parts: BatchNorm's refresh and each held-out set's `evaluate`, told
    apart by the tensor it is given (a task with a `measure` of its own shows in `other`)."""
    names = {}
    for r in replicas:
        d = r.data
        for part, pair in (("train_eval", d.train_eval), ("val", d.val), ("test", d.test)):
            if pair is not None:
                names[id(pair[0])] = part
        names.update({id(t[0]): "tests" for t in d.tests.values()})
    evaluate, refresh_bn = task_module.evaluate, task_module.refresh_bn

    def timer(fn, part_of):
        def wrapped(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            seconds[part_of(a)] += time.perf_counter() - t
            return out

        return wrapped

    task_module.evaluate = timer(evaluate, lambda a: names.get(id(a[1]), "other"))
    task_module.refresh_bn = timer(refresh_bn, lambda a: "bn")
    try:
        yield
    finally:
        task_module.evaluate, task_module.refresh_bn = evaluate, refresh_bn


def report_parts(c: dict) -> dict:
    """Seconds of one report of a trial of config `c` (after an untimed one): training and each part of
    the measurement, all seeds."""
    amp = autocast_for(CPU, c["precision"])
    task = resolve_task(c["task"])
    replicas = make_replicas(c, task, task.load(c, CPU), CPU)
    units = make_units(c, replicas, CPU)
    seconds = defaultdict(float)
    for _ in range(2):  # the first report untimed (warm-up)
        t = time.perf_counter()
        blocks = [train_block(u, c, task, amp) for u in units]
        train_s = time.perf_counter() - t
        seconds.clear()
        t = time.perf_counter()
        with timed_parts(replicas, seconds):
            for u, (loss, acc, _) in zip(units, blocks):
                for r, loss_r, acc_r in seed_results(u, loss, acc):
                    measure(r, c, task, loss_r, acc_r, amp)
        eval_s = time.perf_counter() - t
    row = {"seeds": len(replicas), "train s": train_s, "eval s": eval_s}
    row.update({f"{p} s": seconds.get(p, 0.0) for p in PARTS})
    row["other s"] = eval_s - sum(seconds.values())
    row["report eval %"] = 100 * eval_s / (train_s + eval_s)
    # over the trial: the test sets only at the reports that measure them (`test_every`)
    share = sum(tests_at(c, i) for i in range(1, c["iterations"] + 1)) / c["iterations"]
    row["test reports"] = f"{share * c['iterations']:.0f} of {c['iterations']}"
    trial_eval = eval_s - (1 - share) * (row["test s"] + row["tests s"])
    row["eval %"] = 100 * trial_eval / (train_s + trial_eval)
    return row


def costs(budget: str = "quick", names=None) -> pd.DataFrame:
    torch.set_num_threads(1)  # what a trial gets at --cpus-per-trial 1
    rows = []
    for name in names or STUDIES:
        s = importlib.import_module(f"studies.{name}").STUDY
        grid = s.budgets[budget].grid or s.grid
        c = {**trial_config(s, budget, grid[0] if grid else None), "iterations": s.budgets[budget].iterations}
        point = ", ".join(f"{k}={v}" for k, v in (grid[0] if grid else {}).items())
        rows.append({"study": name, "trial": point or "-", **report_parts(c)})
    return pd.DataFrame(rows)


IN_RUNS = ("lr_scan", "optimizer_comparison", "mlp_architecture")  # the largest shares per report


def trial_shares(trials: pd.DataFrame, curves: pd.DataFrame) -> pd.Series:
    """Per Tune trial of a run: the seconds its seeds' measurements took (`eval_s`, summed over every
    report) as a % of the trial's own time (`wall_time_s`: trainable start to last report, Tune's
    reports and checkpoints included)."""
    seconds = curves.groupby("trial_id")["metric.eval_s"].sum()
    t = trials.assign(eval_s=trials["trial_id"].map(seconds))
    per = t.groupby("trial").agg(eval_s=("eval_s", "sum"), wall_s=("wall_time_s", "first"))
    return 100 * per["eval_s"] / per["wall_s"]


def in_runs(names=IN_RUNS, budget: str = "quick") -> pd.DataFrame:
    """Each study's own command at `budget`: the share of each trial's time that measured it."""
    rows = []
    for name in names:
        r = study_run(name, budget)
        share = trial_shares(r.trials, r.curves)
        rows.append(
            {
                "study": name,
                "trials": len(share),
                "wall s": r.wall_s,
                "eval % median": share.median(),
                "eval % min": share.min(),
                "eval % max": share.max(),
            }
        )
    return pd.DataFrame(rows)


def run(quick: bool = False) -> tuple[list, list[str]]:
    budget = "smoke" if quick else "quick"
    df = costs(budget)
    runs = in_runs(budget=budget)
    worst, worst_run = df.loc[df["eval %"].idxmax()], runs.loc[runs["eval % median"].idxmax()]
    notes = [
        f"target: measurement <= {TARGET:.0f}% of a trial's time at the {budget} budgets: per report (training and "
        "measurement alone) "
        + ("met" if worst["eval %"] <= TARGET else "NOT met")
        + f" (at most {worst['eval %']:.1f}%, "
        f"{worst['study']}); in the study runs "
        + ("met" if worst_run["eval % median"] <= TARGET else "NOT met")
        + f" (median trial at most {worst_run['eval % median']:.1f}%, {worst_run['study']})",
        "one report of the first grid point of each study at its budget, every seed, 1 thread, after an untimed "
        "report; bn = BatchNorm's statistics refresh, train_eval = training-set accuracy in eval mode, val/test = "
        "the held-out sets, tests = the extra test sets, other = a task's own measure (language_model) and the rest",
        f"in the study runs ({', '.join(IN_RUNS)}: each its own command, alone): a trial's measurement seconds "
        "(`eval_s`, every report of every seed) as a share of its own time (`wall_time_s`: Tune's reports and "
        "checkpoints included), over its Tune trials",
    ]
    return [
        (f"Training against measurement per report, {budget} budgets (1 thread)", df),
        (f"Measurement's share of each trial's time in the {budget} study runs", runs),
    ], notes
