"""Analysis of the MLP architecture study (studies/mlp_architecture.py): train and test accuracy and
their gap per architecture, in two views (each architecture at its own tuned lr, and all at the
hand-run lr), the same against the parameter count, the learning curves per architecture, and what
Optuna saw (validation accuracy against lr)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from analysis import draw
from analysis.curves import FOUR, axis, mean_curves_figure
from analysis.data import not_diverged, spread_kind, spread_note, summarize, with_gap
from analysis.plots import metric_vs_figure
from analysis.selection import SEARCH, phase, seeds_said, selection, tuned_trials
from analysis.style import colors, fmt_sci, label
from analysis.verdicts import RANKING, Claim, Sample, ended, every, greater, matching, ranking, sample, tuned

REFERENCES = "docs/references.md#mlp_architecture"  # where every claim's reference is told in full
HEADLINE = "accuracy_per_arch"
# What the hand-run reports measured (docs/references.md; single runs on the full setup): the trend to compare with.
REFERENCE = (
    "train / test accuracy: 3072-128-64-10 0.98 / 0.46; 3072-512-64-10 (Adam lr 1e-3, batch 32, 150 epochs) "
    "test ~0.50; 3072-2048-1024-256-128-64-10 0.99 / 0.55; the split-axis MLP 0.962 / 0.634 (CIFAR-10)."
)
CAPTIONS = {
    "accuracy_per_arch": "Final train and test accuracy (top) and their gap (bottom) per architecture: each at its "
    "own tuned lr (left), all at the hand-run lr (right).",
    "accuracy_vs_params": "Final train and test accuracy against the number of parameters, each architecture at "
    "its tuned lr.",
    "curves_per_arch": "Learning curves per architecture at its tuned lr: mean over seeds (thick), single seeds "
    "(thin).",
    "lr_per_arch": "What Optuna saw: final validation accuracy of every trial against lr, per architecture.",
}

ROLES = {"128-64": "baseline", "512-64": "wide", "2048-1024-256-128-64": "deep"}  # the hand-run MLPs, by sizes
ORDER = ("baseline", "wide", "deep", "split-axis")
SHAPES = {"cifar10": (3, 32, 32), "fashion_mnist": (1, 28, 28), "digits": (1, 8, 8)}  # (C, H, W) of an image


def arch(trials: pd.DataFrame) -> pd.Series:
    """One label per trial: 'baseline 128-64', 'wide 512-64', 'deep 2048-1024-256-128-64', 'split-axis
    128 | 128-64' (its row and column MLPs, then its fully connected stack), or 'mlp 256-64'."""

    def one(r):
        hidden = str(r["config.hidden"])
        if r["config.model"] == "split_mlp":
            return f"split-axis {r.get('config.axis_hidden', '')} | {hidden}"
        return f"{ROLES.get(hidden, r['config.model'])} {hidden}"

    return trials.apply(one, axis=1) if len(trials) else pd.Series([], dtype=object)


CURVE_HUE = arch  # the learning curves of all trials are coloured by architecture


def _rank(label: str) -> tuple:
    role = label.split(" ")[0]
    return (ORDER.index(role) if role in ORDER else len(ORDER), label)


def _with_arch(trials: pd.DataFrame) -> pd.DataFrame:
    return trials.assign(**{"config.arch": arch(trials)})


def hand_run_lr(manifest: dict) -> float:
    """The hand-run lr, tried first for every architecture (the manifest's `search_first`)."""
    return float((manifest.get("search_first") or {}).get("lr", 1e-3))


def tuned_lr(trials: pd.DataFrame, manifest: dict) -> dict[str, float]:
    """Each architecture's tuned lr, by the one selection rule (`analysis.selection`, on validation)."""
    b = selection(_with_arch(trials), manifest, by=["arch"])
    return {r["config.arch"]: float(r["config.lr"]) for _, r in b.iterrows()}


def view(trials: pd.DataFrame, manifest: dict, which: str) -> pd.DataFrame:
    """The full-length trials of one view: 'tuned' (each architecture at its tuned lr) or 'hand-run'
    (every architecture at the hand-run lr), with `config.arch`."""
    if which == "hand-run":
        t = _with_arch(ended(phase(trials, SEARCH)))  # the hand-run lr: tried, never chosen
        return t[np.isclose(t["config.lr"].astype(float), hand_run_lr(manifest))]
    return ended(tuned_trials(_with_arch(trials), manifest, by=["arch"]))


def parameters(trials: pd.DataFrame, manifest: dict) -> pd.Series:
    """The number of trainable parameters of each trial's model, built as the trial built it (on the
    meta device: no memory), for the dataset's image shape."""
    import torch

    from studies.engine.config import full_config
    from studies.engine.tasks import IMAGE, build_model

    classes = len(manifest.get("classes") or range(10))
    cache: dict = {}

    def one(r):
        model = [k for k in ("model", "hidden", "axis_hidden", "width") if pd.notna(r.get(f"config.{k}"))]
        c = full_config({k: r[f"config.{k}"] for k in model}, IMAGE)
        shape = SHAPES.get(r.get("config.dataset"), SHAPES["cifar10"])
        size = r.get("config.image_size")
        if size is not None and pd.notna(size) and int(size) < shape[-1]:
            shape = (shape[0], int(size), int(size))
        key = (repr(sorted(c.items())), shape)
        if key not in cache:
            with torch.device("meta"):
                cache[key] = sum(p.numel() for p in build_model(c, shape, classes).parameters())
        return cache[key]

    return trials.apply(one, axis=1) if len(trials) else pd.Series([], dtype=float)


METRICS = ["metric.train_acc", "metric.test_acc", "metric.gap"]


def arch_table(trials: pd.DataFrame, manifest: dict, which: str = "tuned") -> pd.DataFrame:
    """Per architecture in one view: its lr, parameter count, and train, test accuracy and gap over
    seeds (mean, spread, n), in the order baseline, wide, deep, split-axis."""
    t = view(trials, manifest, which)
    if not len(t):
        return pd.DataFrame()
    t = not_diverged(with_gap(t)).assign(params=parameters(t, manifest) if len(t) else [])
    s = summarize(t, ["config.arch", "config.lr", "params"], METRICS)
    return s.iloc[sorted(range(len(s)), key=lambda i: _rank(s["config.arch"].iloc[i]))].reset_index(drop=True)


# ---- figures -------------------------------------------------------------------------------------


def _tick(r: pd.Series, with_lr: bool) -> str:
    role, _, sizes = r["config.arch"].partition(" ")
    return f"{role}\n{sizes}" + (f"\nlr {fmt_sci(r['config.lr'])}" if with_lr else "")


def accuracy_per_arch_figure(trials: pd.DataFrame, manifest: dict) -> Figure:
    """Two views side by side (each architecture at its tuned lr; all at the hand-run lr): train and
    test accuracy (top) and their gap (bottom) per architecture."""
    views = [
        ("tuned", "each at its own tuned lr"),
        ("hand-run", f"all at the hand-run lr {fmt_sci(hand_run_lr(manifest))}"),
    ]
    views = [(w, f"{title}\n{seeds_said(view(trials, manifest, w))}") for w, title in views]
    data = {w: arch_table(trials, manifest, w) for w, _ in views}
    kind = (
        spread_kind(pd.concat([d for d in data.values() if len(d)]), METRICS)
        if any(len(d) for d in data.values())
        else "range"
    )
    fig, axes = plt.subplots(
        2, 2, figsize=(12.5, 7.0), sharex="col", sharey="row", gridspec_kw=dict(height_ratios=[3, 2])
    )
    for j, (w, title) in enumerate(views):
        d, top, bottom = data[w], axes[0][j], axes[1][j]
        x = np.arange(len(d))
        for m, c, ax, dx in (
            ("metric.train_acc", "C0", top, -0.08),
            ("metric.test_acc", "C1", top, 0.08),
            ("metric.gap", "C3", bottom, 0.0),
        ):
            if len(d):
                draw.series(
                    ax,
                    x + dx,
                    d,
                    m,
                    kind,
                    clip=(-1.0, 1.0) if m.endswith("gap") else (0.0, 1.0),
                    color=c,
                    ls="none",
                    label="final " + label(m).split(" (")[0],
                )
                for xi, v in zip(x + dx, d[f"{m}.mean"]):  # the differences are small on a [0, 1] axis: the values
                    ax.annotate(
                        f"{v:.3f}",
                        (xi, v),
                        textcoords="offset points",
                        xytext=(0, -14) if dx else (8, -3),
                        ha="center" if dx else "left",
                        fontsize=7.5,
                        color=c,
                    )
        top.set_title(title)
        draw.acc_ylim(top)
        bottom.axhline(0, color="gray", lw=0.8)
        bottom.set_xticks(x, [_tick(r, w == "tuned") for _, r in d.iterrows()], fontsize=8)
        top.set(ylabel="accuracy (fraction correct)" if j == 0 else "")
        bottom.set(ylabel=label("gap") if j == 0 else "", xlabel="architecture")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    draw.legend(axes[0][-1], outside=True)
    draw.legend(axes[1][-1], outside=True)
    note = (
        spread_note(pd.concat([d for d in data.values() if len(d)]), METRICS, kind)
        if any(len(d) for d in data.values())
        else "no full-length trial"
    )
    fixed = manifest.get("fixed") or {}
    width = float(fixed.get("width", 1.0))
    scaled = f"; every architecture at {width:g} x its width" if width != 1.0 else ""
    if fixed.get("lr_schedule", "none") != "none":
        scaled += f"; {fixed['lr_schedule']} lr schedule"
    fig.suptitle(f"MLP architectures: final train/test accuracy and train − test gap{scaled}\n{note}")
    fig.tight_layout()
    return fig


def accuracy_vs_params_figure(trials: pd.DataFrame, manifest: dict) -> Figure:
    """Train (triangles) and test (circles) accuracy against the parameter count, each architecture at
    its tuned lr, in its colour."""
    d = arch_table(trials, manifest, "tuned")
    fig, ax = plt.subplots(figsize=(8.4, 4.8))
    kind = spread_kind(d, METRICS) if len(d) else "range"
    pal = colors(_with_arch(trials)["config.arch"])
    for i in range(len(d)):
        r = d.iloc[[i]]
        a = r["config.arch"].iloc[0]
        for m, marker in (("metric.train_acc", "^"), ("metric.test_acc", "o")):
            ax.errorbar(
                r["params"],
                r[f"{m}.mean"].astype(float),
                yerr=draw.errors(r, m, kind, (0.0, 1.0)),
                marker=marker,
                ms=7,
                capsize=3,
                ls="none",
                color=pal[a],
                label=a if m.endswith("test_acc") else "_train",
            )
        ax.annotate(
            f"{r['metric.test_acc.mean'].iloc[0]:.3f}\nlr {fmt_sci(r['config.lr'].iloc[0])}",
            (r["params"].iloc[0], r["metric.test_acc.mean"].iloc[0]),
            textcoords="offset points",
            xytext=(0, -26),
            ha="center",
            fontsize=8,
        )
    ax.plot([], [], "^", color="gray", label="train accuracy (triangles)")
    ax.plot([], [], "o", color="gray", label="test accuracy (circles)")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1e6:g}M" if v >= 1e6 else f"{v / 1e3:g}k"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if len(d):  # room for the labels of the smallest and the largest model
        ax.set_xlim(d["params"].min() / 1.6, d["params"].max() * 1.6)
    draw.acc_ylim(ax)
    ax.set(xlabel="trainable parameters", ylabel="final accuracy (fraction correct)")
    ax.set_title(
        "Accuracy against model size, each architecture at its tuned lr\n"
        + (spread_note(d, METRICS, kind) if len(d) else "no full-length trial"),
        fontsize=11,
    )
    ax.grid(alpha=0.3)
    draw.legend(ax, outside=True)
    fig.tight_layout()
    return fig


def figures(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> dict[str, Figure]:
    figs = {
        "accuracy_per_arch": accuracy_per_arch_figure(trials, manifest),
        "accuracy_vs_params": accuracy_vs_params_figure(trials, manifest),
    }
    ax = axis(trials, curves, manifest)
    tuned = view(trials, manifest, "tuned")
    if ax and len(tuned):
        c = curves[curves["trial_id"].isin(tuned["trial_id"])]
        figs["curves_per_arch"] = mean_curves_figure(
            c,
            tuned,
            "arch",
            [m for m in FOUR if m in curves],
            "Learning curves per architecture, each at its tuned lr",
            ax.x,
            ax.label,
            ax.rungs,
        )
    if "config.lr" in trials and trials["config.lr"].nunique() > 1:
        figs["lr_per_arch"] = metric_vs_figure(
            _with_arch(phase(trials, SEARCH)),
            "lr",
            ["metric.val_acc"],
            "What Optuna saw: final validation accuracy against lr, per architecture",
            hue="arch",
        )
    return figs


# ---- findings ------------------------------------------------------------------------------------


def _chain(d: pd.DataFrame, t: pd.DataFrame, m: str, extra=lambda r: "") -> str:
    """The architectures of a view (`arch_table` rows `d`, their seeds `t`) ranked by `m` (verdicts.ranking)."""
    t = not_diverged(with_gap(t))
    return ranking(
        [
            Sample(
                f"{r['config.arch'].split(' ')[0]}{extra(r)}", t.loc[t["config.arch"] == r["config.arch"], m].to_numpy()
            )
            for _, r in d.iterrows()
        ]
    )


def findings(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> list[str]:
    out = []
    tuned, hand = arch_table(trials, manifest, "tuned"), arch_table(trials, manifest, "hand-run")
    tv, hv = view(trials, manifest, "tuned"), view(trials, manifest, "hand-run")
    if len(tuned):
        out.append(
            f"Each architecture at its tuned lr, final test accuracy ({RANKING}): "
            + _chain(
                tuned,
                tv,
                "metric.test_acc",
                lambda r: f" (lr {fmt_sci(r['config.lr'])}, {int(r['params']):,} parameters)",
            )
            + "."
        )
        out.append(
            "Final train accuracy at the tuned lr: "
            + _chain(tuned, tv, "metric.train_acc")
            + "; train − test gap: "
            + _chain(tuned, tv, "metric.gap")
            + "."
        )
    if len(hand):
        lr = fmt_sci(hand_run_lr(manifest))
        out.append(
            f"All at the hand-run lr {lr}, final test accuracy: "
            + _chain(hand, hv, "metric.test_acc")
            + "; train accuracy: "
            + _chain(hand, hv, "metric.train_acc")
            + "."
        )
    split = tuned["config.arch"].str.startswith("split-axis") if len(tuned) else pd.Series([], dtype=bool)
    pick = selection(tv[~tv["config.arch"].str.startswith("split-axis")], manifest, by=[], over=["arch"])
    if split.any() and len(pick):
        s, b = tuned[split].iloc[0], tuned[tuned["config.arch"] == pick["config.arch"].iloc[0]].iloc[0]
        out.append(
            f"The split-axis MLP ({int(s['params']):,} parameters) against the plain MLP chosen on validation, "
            f"{b['config.arch']} ({int(b['params']):,} parameters): test accuracy "
            f"{s['metric.test_acc.mean']:.3f} vs {b['metric.test_acc.mean']:.3f}, gap "
            f"{s['metric.gap.mean']:.3f} vs {b['metric.gap.mean']:.3f}."
        )
    return out


# ---- claims (docs/references.md#mlp_architecture) ------------------------------------------------

PLAIN = {"baseline": ("mlp", "128-64"), "wide": ("mlp", "512-64"), "deep": ("mlp", "2048-1024-256-128-64")}


def _where(role: str) -> dict:
    if role == "split-axis":
        return dict(model="split_mlp")
    model, hidden = PLAIN[role]
    return dict(model=model, hidden=hidden)


def _at_tuned(trials, manifest, role, metric="metric.test_acc"):
    t = matching(trials, **_where(role))
    lrs = tuned_lr(t, manifest)
    if not lrs:
        raise ValueError(f"{role}: no lr whose seeds all ran to the end")
    lr = next(iter(lrs.values()))
    return tuned(t, manifest, f"{role} (lr {fmt_sci(lr)})", metric)


def _at_hand_run(trials, manifest, role, metric="metric.train_acc"):
    lr = hand_run_lr(manifest)
    return sample(trials, role, metric, lr=lr, **_where(role))


CLAIMS = [
    Claim(
        "The deep MLP ends above the baseline in test accuracy (each at its tuned lr)",
        "test 0.55 (3072-2048-1024-256-128-64-10) vs 0.46 (3072-128-64-10) (hand-run, CIFAR-10; "
        "docs/references.md#mlp_architecture)",
        lambda t, c, m: greater(_at_tuned(t, m, "deep"), _at_tuned(t, m, "baseline")),
        datasets=("cifar10",),
    ),  # Fashion-MNIST: every MLP ends at about the same test accuracy (see findings)
    Claim(
        "The split-axis MLP ends above the deep MLP in test accuracy (each at its tuned lr)",
        "test 0.634 (split-axis) vs 0.55 (deep) (hand-run, CIFAR-10)",
        lambda t, c, m: greater(_at_tuned(t, m, "split-axis"), _at_tuned(t, m, "deep")),
    ),
    Claim(
        "The wider and the deeper MLP fit the training set better than the baseline (final train accuracy, all "
        "at the hand-run lr)",
        "train 0.99 (deep) against 0.98 (baseline) (hand-run, CIFAR-10, Adam lr 1e-3)",
        lambda t, c, m: every(
            [
                greater(_at_hand_run(t, m, "wide"), _at_hand_run(t, m, "baseline")),
                greater(_at_hand_run(t, m, "deep"), _at_hand_run(t, m, "baseline")),
            ]
        ),
    ),
]
