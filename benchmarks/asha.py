"""ASHA efficiency: the same study as a full grid (no early stopping) and with the study's ASHA,
with the same seeds. Compute = the sum of the trials' iterations (and of their seconds); the best
configuration = the scientific value with the highest mean over seeds of best.val_acc, within
each ASHA group (palindrome: per sequence length, since ASHA only compares trials of the same
T; lr_scan: over all lrs). Target: ASHA uses <= 1/3 of the grid's compute and picks the same
best configuration (or one the grid ties with, within TIE of val_acc).
"""

from __future__ import annotations

import pandas as pd

from benchmarks.study_runs import StudyRun, study_run

STUDIES = ("palindrome", "lr_scan")
TARGET = 1 / 3
TIE = 0.005  # val_acc; a pick whose grid mean is this close to the grid's best counts as the same


def _label(row: pd.Series, keys: list[str]) -> str:
    return ", ".join(f"{k}={row[f'config.{k}']}" for k in keys)


def best_per_group(r: StudyRun) -> pd.DataFrame:
    """Mean best.val_acc over seeds per scientific value, and the best of each ASHA group."""
    sci = [f"config.{k}" for k in r.study.scientific]
    means = r.trials.groupby(sci, as_index=False)["best.val_acc"].mean()
    groups = [f"config.{k}" for k in r.study.asha_groups]
    parts = means.groupby(groups) if groups else [((), means)]
    return pd.DataFrame([g.loc[g["best.val_acc"].idxmax()] for _, g in parts]).reset_index(drop=True)


def compare(grid: StudyRun, asha: StudyRun) -> pd.DataFrame:
    keys = grid.study.scientific
    groups = list(grid.study.asha_groups)
    grid_means = grid.trials.groupby([f"config.{k}" for k in keys])["best.val_acc"].mean()
    g_best, a_best = best_per_group(grid), best_per_group(asha)
    rows = []
    for (_, g), (_, a) in zip(g_best.iterrows(), a_best.iterrows()):
        pick = tuple(a[f"config.{k}"] for k in keys)
        in_grid = float(grid_means.loc[pick if len(pick) > 1 else pick[0]])
        same = all(g[f"config.{k}"] == a[f"config.{k}"] for k in keys)
        rows.append({"study": grid.name, "group": _label(g, groups) or "all",
                     "grid best": _label(g, [k for k in keys if k not in groups]),
                     "grid val_acc": g["best.val_acc"],
                     "asha best": _label(a, [k for k in keys if k not in groups]),
                     "asha pick's grid val_acc": in_grid,
                     "match": "same" if same else ("tie" if g["best.val_acc"] - in_grid <= TIE else "no")})
    return pd.DataFrame(rows)


def run(quick: bool = False, seeds: int | None = None) -> tuple[list, list[str]]:
    budget = "smoke" if quick else "quick"
    compute, best = [], []
    for name in STUDIES:
        grid = study_run(name, budget, arm="grid", seeds=seeds)
        asha = study_run(name, budget, arm="asha", seeds=seeds)
        for r in (grid, asha):
            compute.append({"study": name, "run": r.arm, "trials": len(r.trials),
                            "stopped early": int(r.trials["stopped_early"].sum()),
                            "iterations": r.iterations, "trial compute s": r.compute_s, "wall s": r.wall_s,
                            "iterations / grid": r.iterations / grid.iterations,
                            "compute / grid": r.compute_s / grid.compute_s,
                            "wall / grid": r.wall_s / grid.wall_s, "load at end": r.load})
        best.append(compare(grid, asha))
    compute, best = pd.DataFrame(compute), pd.concat(best, ignore_index=True)
    a = compute[compute["run"] == "asha"]
    ok_compute = bool((a["iterations / grid"] <= TARGET).all())
    ok_best = bool((best["match"] != "no").all())
    notes = [f"target: ASHA iterations <= 1/3 of the grid's ({'met' if ok_compute else 'NOT met'}: "
             + ", ".join(f"{s} {v:.2f}" for s, v in zip(a["study"], a["iterations / grid"]))
             + f"), with the same best config per group ({'met' if ok_best else 'NOT met'}).",
             f"grid = the study's budget with ASHA's grace = iterations (no early stopping); same seeds "
             f"({'budget default' if seeds is None else seeds}); best = highest mean best.val_acc over seeds; "
             f"'tie' = a different pick within {TIE} of the grid's best in the grid's own figures."]
    for name in STUDIES:
        b = study_run(name, budget, arm="asha", seeds=seeds).study.budgets[budget]
        notes.append(f"{name} {budget}: {b.iterations} iterations, ASHA grace {b.grace}, reduction {b.reduction}.")
    return [("Compute: grid vs ASHA", compute), ("Best configuration: grid vs ASHA", best)], notes
