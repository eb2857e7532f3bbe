"""Analysis of the regularisation study (studies/regularization.py): per regulariser (the others at
0), train and test accuracy and their gap against its strength; learning curves coloured by the
regulariser setting of each trial ('dropout p=0.5', 'L2 λ=0.01', 'none')."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import draw
from analysis.data import metric_vs, not_diverged, spread_kind, spread_note, stat, summarize, with_gap
from analysis.selection import selection
from analysis.style import bounds, fmt, is_log, label, legend_label, name
from analysis.verdicts import Claim, at_least, greater, sample

REFERENCES = "docs/references.md#regularization"  # where every claim's reference is told in full
HEADLINE = "gap_vs_strength"
# What the hand-run reports measured (docs/references.md; single runs on the full setup): the trend to compare with.
REFERENCE = (
    "deep MLP train 0.99 / test 0.55 without regularisation; dropout p=0.5: 0.547 / 0.492; L2 λ=0.01: "
    "0.770 / 0.520 (CIFAR-10)."
)
CAPTIONS = {
    "gap_vs_strength": "Train and test accuracy (top) and their gap (bottom) against each regulariser's strength.",
}

KEYS = ("dropout", "l2", "weight_decay")  # the regularisers, each scanned with the others at 0
SHORT = {"dropout": "dropout p", "l2": "L2 λ", "weight_decay": "weight decay"}  # in settings and findings


def setting(trials: pd.DataFrame) -> pd.Series:
    """One label per trial for the regularisation grid: 'dropout p=0.5', 'L2 λ=0.01', or 'none'."""
    keys = [k for k in KEYS if f"config.{k}" in trials]

    def one(r):
        on = [f"{SHORT[k]}={fmt(r[f'config.{k}'])}" for k in keys if r[f"config.{k}"]]
        return ", ".join(on) or "none"

    return trials.apply(one, axis=1) if len(trials) else pd.Series([], dtype=object)


CURVE_HUE = setting  # the learning curves of all trials are coloured by `setting` (a derived key)


def regularization_data(trials: pd.DataFrame, keys: Sequence[str] = KEYS) -> pd.DataFrame:
    """Train and test accuracy and their gap per value of each regulariser, the others held at 0;
    column `scan` names the regulariser, `value` its strength."""
    keys = [k for k in keys if f"config.{k}" in trials]
    out = []
    for k in keys:
        others = [o for o in keys if o != k]
        sub = trials[(trials[[f"config.{o}" for o in others]] == 0).all(axis=1)] if others else trials
        s = metric_vs(sub, k, ["metric.train_acc", "metric.test_acc", "metric.gap"])
        out.append(s.rename(columns={f"config.{k}": "value"}).assign(scan=k))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def regularization_figure(trials: pd.DataFrame, keys: Sequence[str] = KEYS) -> Figure:
    """Per regulariser (the others at 0): train and test accuracy (top) and the generalisation
    gap (bottom, its own scale) against strength."""
    d = regularization_data(trials, keys)
    keys = [k for k in keys if f"config.{k}" in trials]
    ms = ["metric.train_acc", "metric.test_acc", "metric.gap"]
    kind = spread_kind(d, ms)
    fig, axes = plt.subplots(
        2,
        len(keys),
        figsize=(4.8 * len(keys), 6.6),
        squeeze=False,
        sharex="col",
        gridspec_kw=dict(height_ratios=[3, 2]),
    )
    for j, k in enumerate(keys):
        s = d[d["scan"] == k].sort_values("value")
        top, bottom = axes[0][j], axes[1][j]
        for m, c, ax in (("metric.train_acc", "C0", top), ("metric.test_acc", "C1", top), ("metric.gap", "C3", bottom)):
            draw.series(ax, s["value"], s, m, kind, band=True, clip=bounds(m), color=c, label=legend_label(m))
        pos = s.loc[s["value"] > 0, "value"]
        for ax in (top, bottom):
            if is_log(s["value"]):
                ax.set_xscale("symlog", linthresh=float(pos.min()))
            elif len(s):
                ax.set_xticks(s["value"].tolist())
            ax.grid(alpha=0.3)
        draw.acc_ylim(top)
        bottom.axhline(0, color="gray", lw=0.8)
        top.set(ylabel="accuracy (fraction correct)" if j == 0 else "", title=f"against {name(k)}")
        bottom.set(xlabel=label(k), ylabel=label("gap") if j == 0 else "")
    gap, e = d["metric.gap.mean"].astype(float), draw.errors(d, "metric.gap", kind, bounds("gap"))
    lo, hi = np.nanmin(gap - e[0], initial=0.0), np.nanmax(gap + e[1], initial=0.02)
    pad = max(0.01, 0.1 * (hi - lo))
    for ax in axes[1]:  # one gap scale for every regulariser, so that they compare
        ax.set_ylim(min(0, lo - pad), hi + pad)
    draw.legend(axes[0][-1], outside=True)
    draw.legend(axes[1][-1], outside=True)
    fig.suptitle(f"Regularisation: final train/test accuracy and generalisation gap\n{spread_note(d, ms, kind)}")
    fig.tight_layout()
    return fig


def figures(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> dict[str, Figure]:
    return {"gap_vs_strength": regularization_figure(trials)}


def findings(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> list[str]:
    keys = [k for k in KEYS if f"config.{k}" in trials]
    t = not_diverged(with_gap(trials))
    out = []
    for k in keys:
        others = [o for o in keys if o != k]
        sub = t[(t[[f"config.{o}" for o in others]] == 0).all(axis=1)] if others else t
        s = summarize(sub, [f"config.{k}"], ["metric.gap", "metric.test_acc", "metric.train_acc"])
        if len(s) < 2:
            continue
        lo, hi = s.iloc[0], s.iloc[-1]
        out.append(
            f"{SHORT[k]}: gap at {fmt(lo[f'config.{k}'])} {stat(lo, 'metric.gap')} vs at "
            f"{fmt(hi[f'config.{k}'])} {stat(hi, 'metric.gap')}; test accuracy {lo['metric.test_acc.mean']:.3f} "
            f"-> {hi['metric.test_acc.mean']:.3f}, train {lo['metric.train_acc.mean']:.3f} -> "
            f"{hi['metric.train_acc.mean']:.3f}."
        )
    if keys:
        s = summarize(t.assign(setting=setting(t)), ["setting"], ["metric.test_acc", "metric.gap"])
        pick = selection(trials, manifest, by=[], over=keys)
        if len(s) and len(pick):
            b = s.set_index("setting").loc[setting(pick).iloc[0]]
            g = s.loc[s["metric.gap.mean"].idxmin()]
            out.append(
                f"Best setting on validation (the selection rule): {b.name}, final test accuracy "
                f"{stat(b, 'metric.test_acc')}; smallest gap: {g['setting']} {stat(g, 'metric.gap')}."
            )
    return out


# ---- claims (docs/references.md#regularization) --------------------------------------------------

NONE = dict(dropout=0.0, l2=0.0, weight_decay=0.0)


def _gap_of(trials, label, metric="metric.gap", **setting):
    return sample(with_gap(trials), label, metric, **{**NONE, **setting})


def _strongest(trials, key):
    values = trials[f"config.{key}"].astype(float)
    return float(values.max())


CLAIMS = [
    Claim(
        "Without regularisation the deep MLP overfits: its train − test gap is at least 0.05",
        "train 0.99 / test 0.55, a gap of 0.44 (hand-run, deep MLP, CIFAR-10; docs/references.md#regularization)",
        lambda t, c, m: at_least(_gap_of(t, "no regulariser"), 0.05),
        datasets=("fashion_mnist", "cifar10"),
    ),
    Claim(
        "Dropout p=0.5 shrinks the gap",
        "p=0.5: train 0.547 / test 0.492, a gap of 0.055 against 0.44 (hand-run)",
        lambda t, c, m: greater(_gap_of(t, "no regulariser"), _gap_of(t, "dropout 0.5", dropout=0.5)),
        datasets=("fashion_mnist", "cifar10"),
    ),
    Claim(
        "Dropout p=0.5 lowers the training accuracy",
        "train 0.99 without, 0.547 with p=0.5 (hand-run)",
        lambda t, c, m: greater(
            _gap_of(t, "no regulariser", "metric.train_acc"), _gap_of(t, "dropout 0.5", "metric.train_acc", dropout=0.5)
        ),
    ),
    Claim(
        "The strongest L2 penalty shrinks the gap",
        "λ=0.01: train 0.770 / test 0.520, a gap of 0.25 against 0.44 (hand-run; λ × Σ‖θ‖₂ added to the loss)",
        lambda t, c, m: greater(
            _gap_of(t, "no regulariser"), _gap_of(t, f"L2 λ={_strongest(t, 'l2'):g}", l2=_strongest(t, "l2"))
        ),
        datasets=("fashion_mnist", "cifar10"),
    ),
]
