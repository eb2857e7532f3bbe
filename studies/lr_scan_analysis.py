"""Analysis of the learning-rate scan (studies/lr_scan.py): accuracy and the generalisation gap
against lr, the mean learning curves per lr, and the findings a researcher would write under them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import draw
from analysis.curves import FOUR, axis, mean_curves_figure
from analysis.data import not_diverged, spread, stat, summarize, with_gap
from analysis.plots import metric_vs_figure
from analysis.selection import CONFIRM, SEARCH, phase, selection, tuned_trials
from analysis.style import fmt_sci, range_phrase
from analysis.verdicts import (
    CONTRADICTED,
    RULE_GREATER,
    Claim,
    Sample,
    Verdict,
    at_least,
    ended,
    every,
    greater,
    sample,
)

REFERENCES = "docs/references.md#lr_scan"  # where every claim's reference is told in full
HEADLINE = "accuracy_vs_lr"
# What the hand-run reports measured (docs/references.md; single runs on the full setup): the trend to compare with.
REFERENCE = (
    "1e-3 converges faster than 1e-4; the train/test gap shrinks as lr grows within a range; 4e-2 and "
    "5e-2 plateau lower, oscillate or get stuck at a constant loss (VGG CNN, Adam, CIFAR-10)."
)
CAPTIONS = {
    "accuracy_vs_lr": "Best and final validation accuracy and final test accuracy against lr.",
    "gap_vs_lr": "Generalisation gap (final train − test accuracy) against lr.",
    "mean_curves_by_lr": "Train and validation loss and accuracy per lr: mean over seeds (thick), single seeds (thin).",
}

POOR = 0.1  # an lr whose mean objective is this far below the best one falls short


def figures(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> dict[str, Figure]:
    everything, trials = trials, phase(trials, SEARCH)  # the scan as the search ran it
    figs = {
        "accuracy_vs_lr": metric_vs_figure(
            trials, "lr", ["best.val_acc", "metric.val_acc", "metric.test_acc"], "Accuracy against learning rate"
        ),
        "gap_vs_lr": metric_vs_figure(
            trials, "lr", ["metric.gap"], "Generalisation gap (final train − test accuracy) against learning rate"
        ),
    }
    best = best_lr(trials, manifest)
    if best is not None:  # the answer at a glance: the lr the selection rule chose, and its fresh seeds
        a = figs["accuracy_vs_lr"].axes[0]
        a.axvline(best, color="black", ls=":", lw=1.2, label=f"best lr on validation ({fmt_sci(best)})")
        confirm = ended(phase(everything, CONFIRM))
        if len(confirm):
            s = spread(confirm["metric.test_acc"])
            a.errorbar(
                [best],
                [s.mean],
                yerr=[[s.mean - s.lo], [s.hi - s.mean]],
                fmt="*",
                ms=13,
                color="black",
                capsize=4,
                zorder=6,
                label=f"its test accuracy on {s.n} fresh seeds (confirmation)",
            )
        draw.legend(a, draw.point_proxies(not_diverged(trials)), outside=True)
    ax = axis(trials, curves, manifest)
    if ax:
        figs["mean_curves_by_lr"] = mean_curves_figure(
            curves,
            trials,
            "lr",
            [m for m in FOUR if m in curves],
            "Train and validation loss and accuracy per learning rate",
            ax.x,
            ax.label,
            ax.rungs,
        )
    return figs


def best_lr(trials: pd.DataFrame, manifest: dict) -> float | None:
    """The best lr by the one selection rule (`analysis.selection`: final validation objective, mean over
    the seeds that ran to the end): the lr that the findings and the claims both name."""
    b = selection(trials, manifest, by=[], over=["lr"])
    return float(b["config.lr"].iloc[0]) if len(b) else None


def findings(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> list[str]:
    obj = f"metric.{manifest.get('metric', 'val_acc')}"
    everything, trials = trials, phase(trials, SEARCH)
    s = summarize(not_diverged(with_gap(trials)), ["config.lr"], [obj, "metric.test_acc", "metric.gap"])
    lr = best_lr(trials, manifest)
    if not len(s) or lr is None:
        return []
    b = s[np.isclose(s["config.lr"], lr)].iloc[0]
    confirm = ended(phase(everything, CONFIRM))
    again = f"; on {len(confirm)} fresh seeds {spread(confirm['metric.test_acc']).text()}" if len(confirm) else ""
    out = [
        f"Best lr {fmt_sci(lr)} (chosen on final validation accuracy): final validation accuracy {stat(b, obj)}, "
        f"final test accuracy {stat(b, 'metric.test_acc')}{again}."
    ]
    near = s[(s[f"{obj}.mean"] >= b[f"{obj}.mean"] - 0.01) & (s["config.lr"] != b["config.lr"])]
    if len(near):
        out.append(f"Within 0.01 of it: lr {', '.join(fmt_sci(v) for v in near['config.lr'])}.")
    poor = s[s[f"{obj}.mean"] < b[f"{obj}.mean"] - POOR]
    if len(poor):
        vals = ", ".join(f"{r[f'{obj}.mean']:.2f} at {fmt_sci(r['config.lr'])}" for _, r in poor.iterrows())
        out.append(
            f"{range_phrase(poor['config.lr'].tolist(), s['config.lr'].tolist(), 'lr')} falls short "
            f"(mean final validation accuracy {vals})."
        )
    bad = trials[trials["diverged"].astype(bool)] if "diverged" in trials else trials.iloc[:0]
    if len(bad):
        out.append(f"Diverged: lr {', '.join(fmt_sci(v) for v in sorted(bad['config.lr'].unique()))}.")
    g = s.dropna(subset=["metric.gap.mean"])
    if len(g):
        w = g.loc[g["metric.gap.mean"].idxmax()]
        out.append(
            f"Train − test gap {b['metric.gap.mean']:.3f} at the best lr; largest {w['metric.gap.mean']:.3f} "
            f"at lr {fmt_sci(w['config.lr'])}."
        )
    if len(curves) and "metric.val_acc" in curves:
        out.append(_speed(trials, curves, b[f"{obj}.mean"]))
    if len(curves) and "metric.train_loss" in curves:
        out += stuck_note(trials, curves)
    return out


def _speed(trials: pd.DataFrame, curves: pd.DataFrame, best: float) -> str:
    """Epochs to reach 90% of the best lr's accuracy, per lr."""
    target = np.floor(0.9 * best * 100) / 100
    speed = []
    for lr, g in curves[curves["trial_id"].isin(not_diverged(trials)["trial_id"])].groupby("config.lr"):
        first = [t["iteration"][t["metric.val_acc"] >= target].min() for _, t in g.groupby("trial_id")]
        hit = [f for f in first if np.isfinite(f)]
        speed.append(
            f"{fmt_sci(lr)}: "
            + (
                f"{np.mean(hit):.1f}" + (f" ({len(hit)} of {len(first)} seeds)" if len(hit) < len(first) else "")
                if hit
                else "not reached"
            )
        )
    return (
        f"Epochs to reach validation accuracy {target:.2f} (90% of the best lr's), mean over the seeds "
        f"that reach it: {'; '.join(speed)}."
    )


# ---- claims (docs/references.md#lr_scan) ---------------------------------------------------------


def _early_accuracy(curves: pd.DataFrame, trials: pd.DataFrame, lr: float, epochs: int) -> Sample:
    """Per seed of `lr` that ran to the end: its mean validation accuracy over the first `epochs`
    epochs (the area under the early learning curve: how fast it converges)."""
    t = ended(trials)
    t = t[np.isclose(t["config.lr"], lr)]
    c = curves[curves["trial_id"].isin(t["trial_id"]) & (curves["iteration"] <= epochs)]
    return Sample(f"lr {fmt_sci(lr)}", c.groupby("trial_id")["metric.val_acc"].mean().to_numpy(dtype=float))


def _faster(trials, curves, manifest):
    trials = phase(trials, SEARCH)  # two fixed lrs of the grid: the search's seeds
    epochs = max(1, int(manifest.get("iterations") or trials["config.iterations"].max()) // 3)
    v = greater(_early_accuracy(curves, trials, 1e-3, epochs), _early_accuracy(curves, trials, 1e-4, epochs))
    return replace(v, value=f"mean validation accuracy over the first {epochs} epochs: {v.value}")


PLATEAU = 0.05  # a training loss that falls by at most this share of its value over the second half is stuck


def loss_fall(trials: pd.DataFrame, curves: pd.DataFrame, lr: float) -> Sample:
    """Per seed of `lr` that ran to the end: how far its training loss fell over the second half of
    training, as a share of its value at the half-way epoch (0: a plateau; 1: down to zero)."""
    t = ended(trials)
    t = t[np.isclose(t["config.lr"], lr)]
    c = curves[curves["trial_id"].isin(t["trial_id"])]
    falls = []
    for _, g in c.groupby("trial_id"):
        loss = g.sort_values("iteration")["metric.train_loss"].to_numpy(dtype=float)
        if len(loss) >= 2 and np.isfinite(loss).all():
            mid = loss[(len(loss) - 1) // 2]
            falls.append((mid - loss[-1]) / mid)
    return Sample(f"lr {fmt_sci(lr)} loss fall", np.array(falls))


def _stuck(trials, curves, manifest):
    best = best_lr(trials, manifest)
    if best is None:
        raise ValueError("no lr whose seeds all ran to the end")
    if np.isclose(best, 4e-2):
        return Verdict(CONTRADICTED, "lr 4e-2 is the best lr on validation", RULE_GREATER)
    at = tuned_trials(trials, manifest, by=[], over=["lr"])  # the best lr's confirmation seeds, where confirmed
    big, ref = loss_fall(phase(trials, SEARCH), curves, 4e-2), loss_fall(at, curves, best)
    return every([at_least(big, PLATEAU, at_most=True), greater(replace(ref, label=f"best {ref.label}"), big)])


def stuck_note(trials: pd.DataFrame, curves: pd.DataFrame) -> list[str]:
    """Whether the lrs from 4e-2 up got stuck, as the hand-run reports saw, or only learned slower."""
    out = []
    for lr in sorted(v for v in ended(trials)["config.lr"].unique() if v >= 4e-2 - 1e-12):
        f = loss_fall(trials, curves, lr)
        if len(f.values):
            state = "stuck (a plateau)" if f.values.mean() <= PLATEAU else "still learning, not stuck"
            out.append(f"{fmt_sci(lr)} {spread(f.values).text(2)}: {state}")
    if not out:
        return []
    return [
        "Training loss fall over the second half of training, share of its half-way value (the hand-run reports "
        f"saw 4e-2 and 5e-2 stuck at a constant loss, docs/references.md#lr_scan): {'; '.join(out)}."
    ]


def _gap(trials, curves, manifest):
    t = with_gap(phase(trials, SEARCH))
    return greater(sample(t, "lr 1e-4", "metric.gap", lr=1e-4), sample(t, "lr 1e-2", "metric.gap", lr=1e-2))


CLAIMS = [
    Claim(
        "lr 1e-3 converges faster than 1e-4: its validation accuracy over the first third of training is higher",
        "1e-3 converges faster than 1e-4 (hand-run, VGG CNN, Adam, CIFAR-10; docs/references.md#lr_scan)",
        _faster,
    ),
    Claim(
        "Too large an lr gets stuck: at lr 4e-2 the training loss plateaus over the second half of training "
        "(falls by at most 5% of its value) while the best lr's falls further",
        "4e-2 and 5e-2 plateau lower, oscillate or get stuck at a constant loss (hand-run, CIFAR-10)",
        _stuck,
        # at quick (Fashion-MNIST, 2,000 images) every lr up to 3e-1 was still learning at the last epoch
        budgets=("full",),
    ),
    Claim(
        "The train − test gap shrinks as lr grows: it is smaller at lr 1e-2 than at 1e-4",
        "the train/test gap shrinks as lr grows within a range (hand-run, CIFAR-10)",
        _gap,
        datasets=("fashion_mnist", "cifar10"),
    ),
]
