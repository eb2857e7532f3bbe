"""Learning curves, for any study: every trial coloured by a hyperparameter (faded where ASHA stopped
it, ending in a red cross where it diverged), the mean over seeds per value, and one column of
panels per value of another key. ASHA's rungs are dashed vertical lines on every panel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import draw
from analysis.data import curve_lines, has_curves, mean_curves, x_axis
from analysis.style import DIVERGED, FADED, colors, fmt, hue_label, is_acc, label, name

FOUR = ("metric.train_loss", "metric.val_loss", "metric.train_acc", "metric.val_acc")  # test: once, at the end
TWO = ("metric.val_acc", "metric.train_loss")


class Axis(NamedTuple):
    """A run's learning-curve x axis: its column, its label, and ASHA's rungs on it."""

    x: str
    label: str
    rungs: list[float]


def axis(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> Axis | None:
    """The x axis of a run's learning curves (optimizer steps or epochs); None without curves."""
    if not has_curves(curves):
        return None
    x, what, rungs = x_axis(trials, manifest)
    if x not in curves:
        return Axis("iteration", label("iteration"), rungs)
    return Axis(x, label(what), rungs)


def curves_figure(
    curves: pd.DataFrame,
    trials: pd.DataFrame,
    hue: str,
    metrics: Sequence[str] = TWO,
    title: str = "",
    x: str = "iteration",
    rungs: Sequence[float] = (),
    xlabel: str | None = None,
) -> Figure:
    """Learning curves of every trial coloured by `hue`; trials that ASHA stopped are faded, its
    rungs are dashed vertical lines, diverged trials end in a red cross."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.2 * len(metrics), 4.4), squeeze=False)
    c = curve_lines(curves, trials, hue)
    pal = colors(trials[f"config.{hue}"])
    for ax, m in zip(axes[0], metrics):
        seen, crossed = set(), False
        for _, g in c.groupby("trial_id", sort=False):
            v, stopped = g[f"config.{hue}"].iloc[0], bool(g["stopped_early"].iloc[0])
            ax.plot(
                g[x],
                g[m],
                color=pal.get(v, "gray"),
                alpha=FADED if stopped else 0.9,
                lw=1.0 if stopped else 1.5,
                label=hue_label(hue, v) if v not in seen else None,
            )
            seen.add(v)
            if bool(g["diverged"].iloc[0]):
                # a red cross where it ended: at its last finite value, else at 0 (accuracy) or on
                # the top edge (a loss that was never finite)
                last = g[np.isfinite(g[m].astype(float))].tail(1)
                lab = "diverged" if not crossed else "_diverged"
                if len(last):
                    ax.scatter(last[x], last[m], **{**DIVERGED, "label": lab})
                elif is_acc(m):
                    ax.scatter([g[x].iloc[-1]], [0.0], **{**DIVERGED, "label": lab})
                else:
                    ax.scatter(
                        [g[x].iloc[-1]], [0.97], transform=ax.get_xaxis_transform(), **{**DIVERGED, "label": lab}
                    )
                crossed = True
        draw.curve_axis(ax, c[m], m, x, xlabel, rungs)
    draw.legend(axes[0][-1], outside=True, title="faded: stopped by ASHA" if c["stopped_early"].any() else None)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def mean_curves_figure(
    curves: pd.DataFrame,
    trials: pd.DataFrame,
    hue: str,
    metrics: Sequence[str] = FOUR,
    title: str = "",
    x: str = "iteration",
    xlabel: str | None = None,
    rungs: Sequence[float] = (),
) -> Figure:
    """The hand-run reports' view: one thick line per hue value, the mean over its seeds (drawn
    where all of them still report), over thin lines of the single seeds; 2 x 2 panels."""
    ncol = 2 if len(metrics) == 4 else len(metrics)
    nrow = int(np.ceil(len(metrics) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.0 * ncol, 3.9 * nrow), squeeze=False)
    pal, hcol = colors(trials[f"config.{hue}"]), f"config.{hue}"
    c = curve_lines(curves, trials, hue)
    s = mean_curves(curves, trials, hue, list(metrics), x)
    for ax, m in zip(axes.flat, metrics):
        for _, g in c.groupby("trial_id", sort=False):
            ax.plot(g[x], g[m], color=pal.get(g[hcol].iloc[0], "gray"), lw=0.8, alpha=0.35, label="_seed")
        for v, g in s.groupby(hcol, sort=True):
            g = g[g["complete"]]
            ax.plot(g[x], g[f"{m}.mean"], color=pal[v], lw=2.2, label=hue_label(hue, v))
        draw.curve_axis(ax, c[m], m, x, xlabel, rungs)
        ax.set_title(name(m))
    draw.legend(axes.flat[ncol - 1], outside=True, title="thick: mean over seeds\nthin: single seeds")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def panel_curves_figure(
    curves: pd.DataFrame,
    trials: pd.DataFrame,
    panel: str,
    hue: str,
    metrics: Sequence[str] = ("metric.val_acc",),
    title: str = "",
    x: str = "iteration",
    xlabel: str | None = None,
    rungs: Sequence[float] = (),
    chance: float | None = None,
) -> Figure:
    """Learning curves in one column per value of `panel`, coloured by `hue` (e.g. per cell,
    coloured by sequence length); every trial drawn, faded where ASHA stopped it."""
    pvals = sorted(trials[f"config.{panel}"].dropna().unique().tolist())
    fig, axes = plt.subplots(
        len(metrics),
        len(pvals),
        figsize=(4.6 * len(pvals), 3.6 * len(metrics)),
        squeeze=False,
        sharey="row",
        sharex=True,
    )
    pal = colors(trials[f"config.{hue}"])
    c = curve_lines(curves, trials, hue).merge(
        trials[["trial_id", f"config.{panel}"]], on="trial_id", suffixes=("_curve", "")
    )
    for j, pv in enumerate(pvals):
        for i, m in enumerate(metrics):
            ax, seen = axes[i][j], set()
            for _, g in c[c[f"config.{panel}"] == pv].groupby("trial_id", sort=False):
                v, stopped = g[f"config.{hue}"].iloc[0], bool(g["stopped_early"].iloc[0])
                ax.plot(
                    g[x],
                    g[m],
                    color=pal.get(v, "gray"),
                    alpha=FADED if stopped else 0.95,
                    lw=1.0 if stopped else 1.6,
                    label=hue_label(hue, v) if v not in seen else "_seed",
                )
                seen.add(v)
            draw.rungs_and_chance(ax, rungs, m, chance)
            draw.log_loss(ax, c[m], m)
            draw.integer_x(ax, x)
            if is_acc(m):
                draw.acc_ylim(ax)
            ax.set(xlabel=xlabel or label(x) if i == len(metrics) - 1 else "", ylabel=label(m) if j == 0 else "")
            if i == 0:
                ax.set_title(f"{panel} = {fmt(pv)}")
            ax.grid(alpha=0.3)
    draw.legend(axes[0][-1], outside=True, title="faded: stopped by ASHA" if trials["stopped_early"].any() else None)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def curves_all_trials(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict, hue: str | None) -> Figure | None:
    """Every study's `curves_all_trials` figure: the learning curves of all trials coloured by `hue`,
    with ASHA's rungs: the objective (validation accuracy, or e.g. perplexity) and the train loss; None
    without curves or hue."""
    ax = axis(trials, curves, manifest)
    if ax is None or not hue:
        return None
    obj = f"metric.{manifest.get('metric', 'val_acc')}"
    shown = [m for m in dict.fromkeys((obj if obj in curves else TWO[0], *TWO[1:])) if m in curves]
    return curves_figure(curves, trials, hue, shown, "Learning curves of all trials", ax.x, ax.rungs, ax.label)
