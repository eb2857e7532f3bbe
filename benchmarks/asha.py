"""ASHA efficiency: a study as a full grid (no early stopping) and with the study's ASHA, with the
same seeds.

ASHA compares a trial only with the trials of its group (`Study.asha_groups`: by default all the
study's scientific keys), and a trial is one configuration with all its seeds (studies.engine.loop), so
ASHA judges a configuration by its mean over seeds and keeps or stops its seeds together. It has
something to stop only where a group holds more than one configuration: optimizer_comparison,
whose Optuna lr samples compete within an optimizer. lr_scan, palindrome and regularization have
one configuration per group (no nuisance search): a trial alone at its rungs always goes on, and
their quick budgets set grace = iterations; they are not run here (`studies_to_run`).

Compute = the sum over seeds of the trials' iterations (and the sum of the trials' seconds). The
best configuration of a group = the configuration (every config key but the seed) with the
highest mean over seeds of best.val_acc. Target: ASHA uses <= 1/3 of the grid's compute and
picks, in every group, the grid's best configuration, or one the grid ties with (within TIE of
val_acc), or, where Optuna sampled values in the ASHA run that the grid never tried, one that
reaches the grid's best (within TIE) in its own run ("as good").
"""

from __future__ import annotations

import heapq
import importlib
import math
from collections import Counter
from dataclasses import replace
from types import SimpleNamespace

import pandas as pd

from benchmarks.study_runs import StudyRun, study_run
from studies.engine.study import Study

TARGET = 1 / 3
TIE = 0.005  # val_acc; a pick whose grid mean is this close to the grid's best counts as the same


def _study(name: str) -> Study:
    return importlib.import_module(f"studies.{name}").STUDY


def configs_per_group(study: Study, budget: str) -> int:
    """The most configurations that one ASHA group holds at `budget`: grid points of one group
    times the Optuna samples per point (where the study has a nuisance search)."""
    b = study.budgets[budget]
    groups = Counter(tuple(p.get(k) for k in study.asha_groups) for p in (b.grid or study.grid))
    return max(groups.values()) * (b.samples if study.search else 1)


def studies_to_run(budget: str) -> tuple[str, ...]:
    """The studies whose ASHA has something to stop at `budget`: more than one configuration per group."""
    from studies import STUDIES

    return tuple(n for n in STUDIES if configs_per_group(_study(n), budget) > 1)


def _config_columns(df: pd.DataFrame) -> list[str]:
    """What names a configuration in a table: every config column but the seed."""
    return [c for c in df.columns if c.startswith("config.") and c != "config.seed"]


def _present(df: pd.DataFrame, keys) -> list[str]:
    """The config columns of `keys` that the table has (a synthetic table may lack some)."""
    return [f"config.{k}" for k in keys if f"config.{k}" in df]


def _varied(r: StudyRun) -> list[str]:
    """The columns of the keys that vary between configurations: scientific, then nuisance."""
    return _present(r.trials, dict.fromkeys([*r.study.scientific, *r.study.search]))


def _key(row, cols: list[str]) -> tuple:
    """The values of `cols` in `row`, NaN as None (NaN never equals itself: a key must)."""
    return tuple(None if isinstance(v, float) and math.isnan(v) else v for v in (row[c] for c in cols))


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) and not v.is_integer() else str(v)


def _label(row, cols: list[str]) -> str:
    return ", ".join(f"{c.removeprefix('config.')}={_fmt(row[c])}" for c in cols)


def best_per_group(r: StudyRun) -> pd.DataFrame:
    """Mean best.val_acc over seeds per configuration, and the best configuration of each ASHA group
    (grouped by the group keys the table has)."""
    means = r.trials.groupby(_config_columns(r.trials), as_index=False, dropna=False)["best.val_acc"].mean()
    groups = _present(means, r.study.asha_groups)
    parts = means.groupby(groups, dropna=False) if groups else [((), means)]
    return pd.DataFrame([g.loc[g["best.val_acc"].idxmax()] for _, g in parts]).reset_index(drop=True)


def compare(grid: StudyRun, asha: StudyRun) -> pd.DataFrame:
    """Per ASHA group: the grid's best configuration, ASHA's, and whether they agree."""
    varied = _varied(grid)
    groups = _present(grid.trials, grid.study.asha_groups)
    shown = [c for c in varied if c not in groups]
    grid_means = {
        _key(row, varied): row["best.val_acc"]
        for _, row in grid.trials.groupby(varied, as_index=False, dropna=False)["best.val_acc"].mean().iterrows()
    }
    a_best = {_key(a, groups): a for _, a in best_per_group(asha).iterrows()}
    rows = []
    for _, g in best_per_group(grid).iterrows():
        a = a_best.get(_key(g, groups))
        if a is None:  # a group the ASHA run has no trial of
            continue
        pick = _key(a, varied)
        in_grid = grid_means.get(pick, math.nan)
        if pick == _key(g, varied):
            match = "same"
        elif not math.isnan(in_grid):
            match = "tie" if g["best.val_acc"] - in_grid <= TIE else "no"
        else:  # Optuna sampled it in the ASHA run only: judged by its own run's figures
            match = "as good" if g["best.val_acc"] - a["best.val_acc"] <= TIE else "no"
        rows.append(
            {
                "study": grid.name,
                "group": _label(g, groups) or "all",
                "grid best": _label(g, shown),
                "grid val_acc": g["best.val_acc"],
                "asha best": _label(a, shown),
                "asha val_acc": a["best.val_acc"],
                "asha pick's grid val_acc": in_grid,
                "match": match,
            }
        )
    return pd.DataFrame(rows)


def _curves(grid: StudyRun) -> list[SimpleNamespace]:
    """One learning curve per configuration of the grid, as its trial reported it: per iteration the
    mean over seeds of the study's metric (studies.engine.loop.mean_over_seeds: a diverged seed counts with
    accuracy 0), and the trial's time; with each seed's own curve. In the searcher's order: the grid
    run's trial start times where known, else round robin over the grid points (sample k of every
    point before sample k+1), the samples of a point in table order."""
    from studies.engine.loop import mean_over_seeds

    s, m = grid.study, grid.study.metric
    cols = _config_columns(grid.curves)
    points = s.budgets[grid.budget].grid or s.grid
    starts = {}
    if "started_s" in grid.trials:
        starts = {
            _key(row, cols): row["started_s"]
            for _, row in grid.trials.groupby(cols, as_index=False, dropna=False)["started_s"].min().iterrows()
        }
    out, ranks = [], Counter()
    for key, g in grid.curves.groupby(cols, dropna=False, sort=False):
        values = dict(zip(cols, key if isinstance(key, tuple) else (key,)))
        values = {c: None if isinstance(v, float) and math.isnan(v) else v for c, v in values.items()}
        wide = g.pivot(index="iteration", columns="config.seed", values=f"metric.{m}").sort_index()
        point = next(
            (i for i, p in enumerate(points) if all(values.get(f"config.{k}", v) == v for k, v in p.items())),
            len(points),
        )
        out.append(
            SimpleNamespace(
                config={c.removeprefix("config."): v for c, v in values.items()},
                values=values,
                metric=[mean_over_seeds([{m: float(v)} for v in row])[m] for row in wide.to_numpy()],
                time=g.groupby("iteration")["time_s"].max().reindex(wide.index).tolist(),
                seeds={seed: c.sort_values("iteration") for seed, c in g.groupby("config.seed")},
                order=(starts.get(tuple(values.values()), math.nan), ranks[point], point),
            )
        )
        ranks[point] += 1
    known = all(not math.isnan(c.order[0]) for c in out)
    return sorted(out, key=lambda c: c.order[:1] if known else c.order[1:])


def replay(grid: StudyRun, grace: int, reduction: float, concurrency: int = 2) -> pd.DataFrame:
    """The study's own scheduler (GroupedASHA, Ray's ASHA rungs) replayed over the grid's full
    learning curves: one trial per configuration, fed the mean over its seeds as the trainable
    reports it, started in the searcher's order, `concurrency` at a time, each iteration lasting
    what it lasted in the grid. Returns one row per seed, as the ASHA run would have left it:
    `iterations` and `best.val_acc` up to where its configuration stopped (or the seed diverged)."""
    from studies.engine.search import GroupedASHA

    s = grid.study
    b = s.budgets[grid.budget]
    asha = GroupedASHA(
        s.asha_groups,
        time_attr="training_iteration",
        metric=s.metric,
        mode=s.mode,
        max_t=b.iterations,
        grace_period=grace,
        reduction_factor=reduction,
    )
    waiting, started, events = list(reversed(_curves(grid))), [], []  # events: (time, trial index, iteration)

    def start(now: float):
        if waiting:
            c = waiting.pop()
            c.trial_id, c.done = str(len(started)), 0
            started.append(c)
            asha.on_trial_add(None, c)
            heapq.heappush(events, (now + c.time[0], len(started) - 1, 1))

    for _ in range(concurrency):
        start(0.0)
    while events:
        now, i, it = heapq.heappop(events)
        c = started[i]
        c.done = it
        if asha.on_trial_result(None, c, {"training_iteration": it, s.metric: c.metric[it - 1]}) == "STOP" or it >= len(
            c.metric
        ):
            start(now)
        else:
            heapq.heappush(events, (now + c.time[it] - c.time[it - 1], i, it + 1))
    rows = []
    for c in started:
        for seed, curve in c.seeds.items():
            ran = curve[curve["iteration"] <= c.done]
            rows.append(
                {
                    **c.values,
                    "config.seed": seed,
                    "iterations": int(ran["iteration"].max()),
                    "best.val_acc": float(ran["metric.val_acc"].max()),
                }
            )
    return pd.DataFrame(rows)


def frontier(
    grid: StudyRun, own: tuple[int, float], graces=(1, 2, 3, 4, 5, 6), reductions=(2, 3, 4, 6)
) -> pd.DataFrame:
    """Every grace x reduction replayed on the grid's curves: compute / grid, and whether the
    pick is the grid's best (or a tie) in every ASHA group. `own`: the budget's (grace, reduction)."""
    rows = []
    for grace in graces:
        for rf in reductions:
            t = replay(grid, grace, rf)
            picks = compare(grid, replace(grid, arm="replay", trials=t))
            rows.append(
                {
                    "study": grid.name,
                    "grace": grace,
                    "reduction": rf,
                    "the budget's": "yes" if (grace, rf) == tuple(own) else "",
                    "iterations / grid": t["iterations"].sum() / grid.iterations,
                    "same best": bool((picks["match"] != "no").all()),
                }
            )
    return pd.DataFrame(rows)


def run(quick: bool = False, seeds: int | None = None) -> tuple[list, list[str]]:
    from studies import STUDIES

    budget = "smoke" if quick else "quick"
    names = studies_to_run(budget)
    compute, best, replays = [], [], []
    for name in names:
        grid = study_run(name, budget, arm="grid", seeds=seeds)
        asha = study_run(name, budget, arm="asha", seeds=seeds)
        own = asha.study.budgets[budget]
        replays.append(frontier(grid, (own.grace, own.reduction)))
        for r in (grid, asha):
            compute.append(
                {
                    "study": name,
                    "run": r.arm,
                    "trials": r.n_trials,
                    "stopped early": r.stopped_early,
                    "seed-iterations": r.iterations,
                    "trial compute s": r.compute_s,
                    "wall s": r.wall_s,
                    "iterations / grid": r.iterations / grid.iterations,
                    "compute / grid": r.compute_s / grid.compute_s,
                    "wall / grid": r.wall_s / grid.wall_s,
                    "load at end": r.load,
                }
            )
        best.append(compare(grid, asha))
    compute, best = pd.DataFrame(compute), pd.concat(best, ignore_index=True) if best else pd.DataFrame()
    replays = pd.concat(replays) if replays else pd.DataFrame()
    notes = []
    if len(compute):
        # per study, the cheapest replayed setting that keeps the grid's best
        good = replays[replays["same best"]].sort_values("iterations / grid").groupby("study", sort=False).head(1)
        a = compute[compute["run"] == "asha"]
        ok_compute = bool((a["iterations / grid"] <= TARGET).all())
        ok_best = bool((best["match"] != "no").all())
        notes += [
            f"target: ASHA iterations <= 1/3 of the grid's ({'met' if ok_compute else 'NOT met'}: "
            + ", ".join(f"{s} {v:.2f}" for s, v in zip(a["study"], a["iterations / grid"]))
            + f"), with the same best config per group ({'met' if ok_best else 'NOT met'}).",
            f"grid = the study's budget with ASHA's grace = iterations (no early stopping); same seeds "
            f"({'budget default' if seeds is None else seeds}); a trial = one configuration with all its seeds; "
            f"best = highest mean best.val_acc over seeds; 'tie' = a different pick within {TIE} of the grid's "
            f"best in the grid's own figures; 'as good' = a pick the grid never sampled (Optuna's later "
            f"suggestions follow the results, and ASHA's pruned trials change them) within {TIE} of the "
            "grid's best in the ASHA run's figures.",
        ]
        for name in names:
            s = _study(name)
            b = s.budgets[budget]
            n = configs_per_group(s, budget)
            notes.append(
                f"{name} {budget}: {b.iterations} iterations, ASHA grace {b.grace}, reduction "
                f"{b.reduction}; groups by {', '.join(s.asha_groups) or 'nothing'}, {n} configurations "
                f"per group."
            )
        notes += [
            "replay: the study's GroupedASHA fed the grid's own learning curves (per configuration the mean "
            "over its seeds, as its trial reports it), trials started in the grid run's order, 2 at a time, "
            "every grace x reduction; the cheapest that keeps the grid's best in every group: "
            + ", ".join(
                f"{r.study} grace {r.grace} reduction {r.reduction}: {r['iterations / grid']:.2f}"
                for _, r in good.iterrows()
            )
            + (f" (<= 1/3: {'yes' if (good['iterations / grid'] <= TARGET).all() else 'no'})." if len(good) else "."),
            "why ASHA cannot do better here: it promotes a trial that reaches a rung first, or that is in the "
            "top 1/reduction of those recorded there so far (a tie with the cut-off goes on too); of n trials "
            "in random order about 1 + 1/2 + ... + 1/n beat every one before them ("
            + ", ".join(
                f"{sum(1 / k for k in range(1, n + 1)):.2f} of the {n} configurations of a {name} group"
                for name in names
                for n in [configs_per_group(_study(name), budget)]
            )
            + "). And a grace short enough to save compute decides on curves that have not separated yet: "
            "the replay rows that lose the best.",
        ]
    others = [n for n in STUDIES if n not in names]
    if others:
        notes.append(
            f"not run: {', '.join(others)}: one configuration per ASHA group at the {budget} budget (they "
            "group by all their scientific keys and have no nuisance search), so a trial is alone at its "
            "rungs and always goes on: ASHA has nothing to stop, and their quick budgets set grace = "
            "iterations (no rung at all)."
        )
    return [
        ("Compute: grid vs ASHA", compute),
        ("Best configuration: grid vs ASHA", best),
        ("Replay of grace x reduction on the grid's curves", replays),
    ], notes
