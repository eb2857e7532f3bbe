"""Orchestration overhead: a study's wall time against its trials' own compute.

overhead = 1 - (sum of the trials' time_total_s) / (study wall time x concurrency), where
concurrency is the number of trials that fit at once (CPUs / cpus per trial, 2 on 2 cores). The
wall time is the whole command (Ray start and shutdown, Tune, tables, figures, report); the
`span` is first trial start to last trial end, so `fixed` = wall - span is what surrounds Tune,
and the overhead within the span is scheduling, trial start-up and idle cores at the tail.

The studies run once each: `palindrome` and `lr_scan` at their quick budget (smoke with
--quick), as the runner runs them (on a local Ray, with `reuse_actors=True`: one worker process
per slot serves trial after trial); `palindrome` again with `reuse_actors=False` forced (a new
worker process per trial, Tune's default and the runner's on a cluster), and `lr_scan` again
with a checkpoint only at the end (`checkpoint_every` = iterations: the knob for the CNN's
~110 MB checkpoints). A table of per-report costs (training, held-out evaluation, checkpoint),
measured in this process with the loop's own parts (`studies.engine.loop`: `make_replicas`,
`make_units`, `train_block`, `measure`, `save_state`: a trial's every seed, as one trial trains them
all), shows where a trial's own time goes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import pandas as pd
import torch

import datasets
from benchmarks.study_runs import study_run
from studies.engine.config import full_config
from studies.engine.loop import (
    Unit,
    autocast_for,
    make_replicas,
    make_units,
    measure,
    save_state,
    seed_results,
    train_block,
)
from studies.engine.runner import FALLBACK
from studies.engine.study import Study
from studies.engine.task import resolve_task
from studies.lr_scan import STUDY as LR_SCAN
from studies.palindrome import STUDY as PALINDROME

TARGET = 0.10  # the most overhead, as a share of wall x concurrency, at the quick budgets
CPU = torch.device("cpu")


def _checkpoint_seconds(units: list[Unit], **counters) -> tuple[float, float]:
    """Seconds to save a trial's checkpoint with the loop's `save_state` (every replica's model and
    generator, every unit's optimizer and lr schedule, the counters, the RNG states), plus the copy Ray
    makes into the storage folder; and its size in MB."""
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        src = os.path.join(d, "ckpt")
        os.makedirs(src)
        save_state(src, units, **counters)
        shutil.copytree(src, os.path.join(d, "persisted"))
        dt = time.perf_counter() - t
        return dt, os.path.getsize(os.path.join(src, "state.pt")) / 1e6


def trial_config(study: Study, budget: str, point: dict | None = None) -> dict:
    """A trial's config in `study` at `budget`: defaults, the study's and the budget's fixed keys, a grid
    point, and the budget's seeds; the budget's Fashion-MNIST falls back to digits as the runner's does."""
    b = study.budgets[budget]
    c = full_config({**study.fixed, **b.fixed, **(point or {}), "seeds": list(range(b.seeds))})
    if c["task"] == "image" and c["dataset"] == FALLBACK[0] and not datasets.available(c["dataset"], c["data_dir"]):
        c["dataset"] = FALLBACK[1]
    return c


def report_cost(c: dict, warmup: dict) -> dict:
    """Seconds of one report of a trial of config `c`, as `studies.engine.loop.train` makes one: every
    unit's training block (the seeds packed where they pack, else one after another), every seed's
    evaluation (`measure`), and the checkpoint of all seeds. `warmup`: config keys of a first, untimed
    block (e.g. fewer steps)."""
    amp = autocast_for(CPU, c["precision"])
    task = resolve_task(c["task"])
    replicas = make_replicas(c, task, task.load(c, CPU), CPU)
    units = make_units(c, replicas, CPU)
    for u in units:
        train_block(u, {**c, **warmup}, task, amp)
    t = time.perf_counter()
    blocks = []
    for u in units:
        blocks.append(train_block(u, c, task, amp))
        u.sync()
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    last = {}
    for u, (loss, acc, _) in zip(units, blocks):
        for r, loss_r, acc_r in seed_results(u, loss, acc):
            last[r.seed] = measure(r, c, task, loss_r, acc_r, amp)
    eval_s = time.perf_counter() - t
    ckpt_s, mb = _checkpoint_seconds(units, iteration=2, step=2 * blocks[0][2], restarts=0, last=last)
    return {
        "seeds": len(replicas),
        "train s": train_s,
        "eval s": eval_s,
        "checkpoint s": ckpt_s,
        "checkpoint MB": mb,
        "checkpoint_every": c["checkpoint_every"],
    }


def _palindrome_points(grid: list[dict]) -> list[dict]:
    """The costliest and the cheapest palindrome trial of a grid: the LSTM at the longest T and the
    plain RNN at the shortest, both in the corrected setup (no double softmax)."""
    ok = [p for p in grid if not p.get("double_softmax")]
    return [
        max((p for p in ok if p["cell"] == "lstm"), key=lambda p: p["seq_len"]),
        min((p for p in ok if p["cell"] == "rnn"), key=lambda p: p["seq_len"]),
    ]


def report_costs(threads: int = 1, budget: str = "quick") -> pd.DataFrame:
    """Per report of a trial at each study's `budget` (all its seeds): training, evaluation and
    checkpoint seconds."""
    torch.set_num_threads(threads)
    rows = []
    # palindrome: a report is steps_per_report steps per seed, then validation and test on n_eval sequences each
    for point in _palindrome_points(PALINDROME.budgets[budget].grid or PALINDROME.grid):
        c = trial_config(PALINDROME, budget, point)
        rows.append(
            {
                "study": "palindrome",
                "trial": f"{c['cell']} T={c['seq_len']}",
                "report": f"{c['steps_per_report']} steps",
                **report_cost(c, {"steps_per_report": 5}),
            }
        )
    # lr_scan: a report is an epoch per seed, then train (eval mode), validation and test accuracy
    c = trial_config(LR_SCAN, budget)
    rows.append(
        {
            "study": "lr_scan",
            "trial": f"VGG x{c['width']:g} on {c['dataset']}",
            "report": "1 epoch",
            **report_cost(c, {}),
        }
    )
    df = pd.DataFrame(rows)
    per_report = df["train s"] + df["eval s"] + df["checkpoint s"] / df["checkpoint_every"]
    df["eval %"] = 100 * df["eval s"] / per_report
    df["checkpoint %"] = 100 * df["checkpoint s"] / df["checkpoint_every"] / per_report
    return df


def overhead_table(runs) -> pd.DataFrame:
    rows = []
    for r in runs:
        rows.append(
            {
                "study": r.name,
                "run": "default" if r.arm == "asha" else r.arm,
                "budget": r.budget,
                "trials": r.n_trials,
                "stopped early": r.stopped_early,
                "seed-iterations": r.iterations,
                "wall s": r.wall_s,
                "span s": r.span_s,
                "fixed s": r.wall_s - r.span_s,
                "trial compute s": r.compute_s,
                "concurrency": r.concurrency,
                "overhead %": 100 * (1 - r.compute_s / (r.wall_s * r.concurrency)),
                "overhead in span %": 100 * (1 - r.compute_s / (r.span_s * r.concurrency)),
                "load at end": r.load,
            }
        )
    return pd.DataFrame(rows)


def run(quick: bool = False) -> tuple[list, list[str]]:
    budget = "smoke" if quick else "quick"
    costs = report_costs()
    print(costs.to_string(index=False), flush=True)
    runs = [
        study_run("palindrome", budget),
        study_run("lr_scan", budget),
        study_run("palindrome", budget, arm="no-reuse", plan_fields={"reuse_actors": False}),
        study_run("lr_scan", budget, arm="ckpt-at-end", fixed={"checkpoint_every": LR_SCAN.budgets[budget].iterations}),
    ]
    table = overhead_table(runs)
    verdict = lambda x: "met" if x <= 100 * TARGET else "NOT met"
    worst = table.loc[table["run"] == "default", "overhead %"].max()
    fresh = table.loc[table["run"] == "no-reuse", "overhead %"].max()
    notes = [
        f"target: overhead <= {100 * TARGET:.0f}% of wall x concurrency: default runs at most {worst:.1f}% "
        f"({verdict(worst)}); palindrome with a new worker process per trial {fresh:.1f}% ({verdict(fresh)}).",
        "trials = Tune trials, each training every seed of one configuration; seed-iterations = iterations "
        "summed over seeds; overhead % = 1 - trial compute / (wall x concurrency); fixed s = wall - span "
        "(Ray start/stop, tables, figures, report); trial compute includes each trial's own evaluation and "
        "checkpoints (see the per-report costs).",
        "default: the study as the runner runs it on a local Ray (reuse_actors=True: one worker process per "
        "slot); no-reuse: the same palindrome run with the plan's reuse_actors=False forced, a new "
        "worker process (torch and Tune imports) per trial, as on a cluster; ckpt-at-end: the same "
        "lr_scan run with checkpoint_every = iterations (one checkpoint, at the end; its time is inside trial "
        "compute, so it shows in wall s and trial compute s, not in overhead %).",
        "compare runs only at similar load: other work on the machine slows trials and Ray alike.",
    ]
    return [
        ("Per-report costs inside a trial, all its seeds (1 thread)", costs),
        ("Study wall time vs trial compute", table),
    ], notes
