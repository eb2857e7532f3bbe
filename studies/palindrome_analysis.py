"""Analysis of the palindrome study (studies/palindrome.py): test accuracy against sequence length per
cell, the learning curves per cell coloured by length, and how far back each cell remembers."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.curves import axis, panel_curves_figure
from analysis.data import not_diverged, summarize
from analysis.plots import metric_vs_figure
from analysis.style import CHANCE

HEADLINE = "accuracy_vs_length"
# What the hand-run reports measured (STUDIES.md; single runs on the full setup): the trend to compare with.
REFERENCE = ("test accuracy at T = 5, 10, 15, 20: RNN 100, 37.9, 17.9, 22.5 %; LSTM 100, 100, 60.0, 70.8 %; "
             "GRU similar to LSTM (10,000 steps).")
CAPTIONS = {
    "accuracy_vs_length": "Final test accuracy against sequence length, one line per cell; chance is 0.1.",
    "curves_per_cell": "Validation accuracy and train loss per cell, coloured by sequence length.",
}
CLAIMS: list = []  # claims: see analysis.claims
CURVE_HUE = "seq_len"  # the learning curves of all trials are coloured by length

SOLVED = 0.99  # test accuracy at or above this is "solved"
NEAR = 0.1  # test accuracy at most this above chance is "near chance"


def chance(manifest: dict) -> float:
    """Chance accuracy: one over the number of classes the run records (ten digits)."""
    classes = manifest.get("classes")
    return 1 / len(classes) if classes else CHANCE


def figures(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> dict[str, Figure]:
    figs = {"accuracy_vs_length": metric_vs_figure(
        trials, "seq_len", ["metric.test_acc"], "Palindrome: final test accuracy against length", hue="cell",
        chance=chance(manifest))}
    ax = axis(trials, curves, manifest)
    if ax:
        figs["curves_per_cell"] = panel_curves_figure(
            curves, trials, "cell", "seq_len", [m for m in ("metric.val_acc", "metric.train_loss") if m in curves],
            "Palindrome learning curves per cell, coloured by sequence length T", ax.x, ax.label, ax.rungs,
            chance(manifest))
    return figs


def findings(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> list[str]:
    near_chance = chance(manifest) + NEAR
    s = summarize(not_diverged(trials), ["config.cell", "config.seq_len"], ["metric.test_acc"])
    out = []
    for cell, g in s.groupby("config.cell", sort=True):
        g = g.sort_values("config.seq_len")
        acc, T = g["metric.test_acc.mean"].to_numpy(), g["config.seq_len"].to_numpy()
        solved = np.cumprod(acc >= SOLVED).astype(bool)
        at_chance = np.cumprod((acc <= near_chance)[::-1]).astype(bool)[::-1]
        parts = []
        if solved.any():
            parts.append(f">= {SOLVED:.0%} test accuracy up to T={T[solved][-1]}")
        else:
            parts.append(f"below {SOLVED:.0%} test accuracy already at T={T[0]} ({acc[0]:.2f})")
        if at_chance.any():
            parts.append(f"near chance (<= {near_chance:.1f}) from T={T[at_chance][0]}")
        else:
            i = int(np.argmin(acc))
            parts.append(f"above chance at every T tried (lowest {acc[i]:.2f} at T={T[i]})")
        line = f"{cell.upper()}: {'; '.join(parts)}. Mean test accuracy by T: " + ", ".join(
            f"{t}: {a:.2f}" for t, a in zip(T, acc)) + "."
        cut = trials[(trials["config.cell"] == cell)].groupby("config.seq_len").filter(
            lambda g: g["stopped_early"].astype(bool).all()) if "stopped_early" in trials else trials.iloc[:0]
        if len(cut):
            where = ", ".join(f"T={t} (step {'/'.join(str(int(v)) for v in sorted(g['step'].unique()))})"
                              for t, g in cut.groupby("config.seq_len"))
            line += f" Every seed stopped early by ASHA at {where}."
        out.append(line)
    return out
