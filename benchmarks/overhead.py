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
~110 MB checkpoints). A table of per-report
costs (training, held-out evaluation, checkpoint), measured in this process, shows where a
trial's own time goes.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from contextlib import nullcontext

import pandas as pd
import torch

import datasets
from benchmarks.study_runs import study_run
from benchmarks.throughput import fast_steps
from datasets.palindrome import generator as palindrome_generator
from studies.lr_scan import STUDY as LR_SCAN
from studies.palindrome import STUDY as PALINDROME
from studies.train import DEFAULTS, N_TRAIN_EVAL, OPTIMIZERS, build_model, evaluate

TARGET = 0.15


def _checkpoint_seconds(model, opt) -> tuple[float, float]:
    """Seconds to save a trial's checkpoint as studies.train does, plus the copy Ray makes into
    the storage folder; and its size in MB."""
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        src = os.path.join(d, "ckpt")
        os.makedirs(src)
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "iteration": 1, "step": 1,
                    "torch_rng": torch.get_rng_state(), "py_rng": random.getstate()}, os.path.join(src, "state.pt"))
        shutil.copytree(src, os.path.join(d, "persisted"))
        dt = time.perf_counter() - t
        return dt, os.path.getsize(os.path.join(src, "state.pt")) / 1e6


def report_costs(threads: int = 1) -> pd.DataFrame:
    """Per report of each study's quick budget: training, evaluation and checkpoint seconds."""
    torch.set_num_threads(threads)
    rows = []
    # palindrome: a report is steps_per_report steps, then validation and test on n_eval sequences each
    for cell, T in (("lstm", 20), ("rnn", 5)):
        c = {**DEFAULTS, **PALINDROME.fixed, **PALINDROME.budgets["quick"].fixed, "cell": cell, "seq_len": T}
        gen = palindrome_generator(0, 0, "cpu")
        model = build_model(c, (T,), 10)
        opt = OPTIMIZERS[c["optimizer"]](model.parameters(), c)
        block = lambda n, model=model, opt=opt, c=c, T=T, gen=gen: fast_steps(
            model, opt, (datasets.palindromes(128, T, gen) for _ in range(n)), c)
        block(5)
        t = time.perf_counter()
        block(c["steps_per_report"])
        train_s = time.perf_counter() - t
        val = datasets.palindromes(c["n_eval"], T, palindrome_generator(0, 1, "cpu"))
        t = time.perf_counter()
        evaluate(model, *val, c, nullcontext)
        evaluate(model, *val, c, nullcontext)  # validation and test: the same size
        eval_s = time.perf_counter() - t
        ckpt_s, mb = _checkpoint_seconds(model, opt)
        rows.append({"study": "palindrome", "trial": f"{cell} T={T}", "report": f"{c['steps_per_report']} steps",
                     "train s": train_s, "eval s": eval_s, "checkpoint s": ckpt_s, "checkpoint MB": mb,
                     "checkpoint_every": c["checkpoint_every"]})
    # lr_scan: a report is an epoch of digits, then train (eval mode), validation and test accuracy
    c = {**DEFAULTS, **LR_SCAN.fixed, **LR_SCAN.budgets["quick"].fixed}
    data = datasets.load_images(c["dataset"])
    model = build_model(c, data.shape, len(data.classes))
    opt = OPTIMIZERS[c["optimizer"]](model.parameters(), c)
    gen = torch.Generator().manual_seed(0)

    def epoch():
        perm = torch.randperm(len(data.train_x), generator=gen)
        idx = [perm[i : i + 128] for i in range(0, len(perm) - 128 + 1, 128)]
        return fast_steps(model, opt, ((data.train_x[i], data.train_y[i]) for i in idx), c)

    epoch()
    t = time.perf_counter()
    epoch()
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    for x, y in ((data.train_x[:N_TRAIN_EVAL], data.train_y[:N_TRAIN_EVAL]), (data.val_x, data.val_y),
                 (data.test_x, data.test_y)):
        evaluate(model, x, y, c, nullcontext)
    eval_s = time.perf_counter() - t
    ckpt_s, mb = _checkpoint_seconds(model, opt)
    rows.append({"study": "lr_scan", "trial": "VGG on digits", "report": "1 epoch", "train s": train_s,
                 "eval s": eval_s, "checkpoint s": ckpt_s, "checkpoint MB": mb,
                 "checkpoint_every": c["checkpoint_every"]})
    df = pd.DataFrame(rows)
    per_report = df["train s"] + df["eval s"] + df["checkpoint s"] / df["checkpoint_every"]
    df["eval %"] = 100 * df["eval s"] / per_report
    df["checkpoint %"] = 100 * df["checkpoint s"] / df["checkpoint_every"] / per_report
    return df


def overhead_table(runs) -> pd.DataFrame:
    rows = []
    for r in runs:
        rows.append({"study": r.name, "run": "default" if r.arm == "asha" else r.arm, "budget": r.budget,
                     "trials": len(r.trials),
                     "stopped early": int(r.trials["stopped_early"].sum()), "iterations": r.iterations,
                     "wall s": r.wall_s, "span s": r.span_s, "fixed s": r.wall_s - r.span_s,
                     "trial compute s": r.compute_s, "concurrency": r.concurrency,
                     "overhead %": 100 * (1 - r.compute_s / (r.wall_s * r.concurrency)),
                     "overhead in span %": 100 * (1 - r.compute_s / (r.span_s * r.concurrency)),
                     "load at end": r.load})
    return pd.DataFrame(rows)


def run(quick: bool = False) -> tuple[list, list[str]]:
    budget = "smoke" if quick else "quick"
    costs = report_costs()
    print(costs.to_string(index=False), flush=True)
    runs = [study_run("palindrome", budget), study_run("lr_scan", budget),
            study_run("palindrome", budget, arm="no-reuse", plan_fields={"reuse_actors": False}),
            study_run("lr_scan", budget, arm="ckpt-at-end",
                      fixed={"checkpoint_every": LR_SCAN.budgets[budget].iterations})]
    table = overhead_table(runs)
    verdict = lambda x: "met" if x <= 100 * TARGET else "NOT met"
    worst = table.loc[table["run"] == "default", "overhead %"].max()
    fresh = table.loc[table["run"] == "no-reuse", "overhead %"].max()
    notes = [f"target: overhead <= {100 * TARGET:.0f}% of wall x concurrency: default runs at most {worst:.1f}% "
             f"({verdict(worst)}); palindrome with a new worker process per trial {fresh:.1f}% ({verdict(fresh)}).",
             "overhead % = 1 - trial compute / (wall x concurrency); fixed s = wall - span (Ray start/stop, "
             "tables, figures, report); trial compute includes each trial's own evaluation and checkpoints "
             "(see the per-report costs).",
             "default: the study as the runner runs it on a local Ray (reuse_actors=True: one worker process per "
             "slot); no-reuse: the same palindrome run with the plan's reuse_actors=False forced, a new "
             "worker process (torch and Tune imports) per trial, as on a cluster; ckpt-at-end: the same "
             "lr_scan run with checkpoint_every = iterations (one checkpoint, at the end; its time is inside trial "
             "compute, so it shows in wall s and trial compute s, not in overhead %).",
             "compare runs only at similar load: other work on the machine slows trials and Ray alike."]
    return [("Per-report costs inside a trial (1 thread)", costs), ("Study wall time vs trial compute", table)], notes
