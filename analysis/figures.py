"""Figures of a study run. Each figure has a data function (a DataFrame, what is plotted: tests
assert on it) and a draw function that returns the Figure. `FIGURES[study]` lists a study's own
figures; every study also gets the hyperparameter-axis plot and all learning curves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.tables import summarize  # noqa: E402

LABELS = {
    "lr": "learning rate", "optimizer": "optimizer", "dropout": "dropout p", "l2": "L2 penalty λ",
    "weight_decay": "weight decay", "seq_len": "sequence length T (digits)", "cell": "cell",
    "val_acc": "validation accuracy", "test_acc": "test accuracy", "train_acc": "train accuracy",
    "train_loss": "train loss (cross-entropy, nats)", "val_loss": "validation loss (nats)",
    "test_loss": "test loss (nats)", "iteration": "iteration (epoch or report block)", "step": "optimizer step",
}
DIVERGED = dict(marker="x", color="red", s=40, zorder=5, label="diverged")


def label(key: str) -> str:
    return LABELS.get(key.split(".")[-1], key.split(".")[-1])


def legend_label(key: str) -> str:
    """'best.val_acc' -> 'best validation accuracy'; 'metric.test_acc' -> 'final test accuracy'."""
    return {"best": "best ", "metric": "final "}.get(key.split(".")[0], "") + label(key)


def is_log(values) -> bool:
    """A scan is logarithmic when its positive values span more than a decade."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    v = v[v > 0]
    return len(v) > 1 and v.max() / v.min() > 10


def colors(values) -> dict:
    """The same colour for the same value in every figure of a run: ordered values on viridis,
    categories on tab10."""
    vals = sorted(pd.Series(values).dropna().unique().tolist(), key=lambda x: (isinstance(x, str), x))
    if all(isinstance(v, (int, float, np.number)) for v in vals) and len(vals) > 1:
        cmap = plt.get_cmap("viridis")
        return {v: cmap(i / (len(vals) - 1) * 0.9) for i, v in enumerate(vals)}
    cmap = plt.get_cmap("tab10")
    return {v: cmap(i % 10) for i, v in enumerate(vals)}


def fmt(v) -> str:
    return f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)


# ---- data -------------------------------------------------------------------------------------

def metric_vs(trials: pd.DataFrame, x: str, metrics: list[str], hue: str | None = None) -> pd.DataFrame:
    """Mean, 95% CI and n of each metric per value of x (and hue), diverged trials left out."""
    ok = trials[~trials["diverged"]]
    by = [f"config.{x}"] + ([f"config.{hue}"] if hue else [])
    return summarize(ok, by, metrics)


def best_per_value(trials: pd.DataFrame, sci: str, nuisance: list[str], metric: str) -> pd.DataFrame:
    """Isolation plot data: per scientific value, the nuisance setting with the best mean."""
    from analysis.tables import best_per_group

    return best_per_group(trials[~trials["diverged"]], [f"config.{sci}"], [f"config.{k}" for k in nuisance], metric)


# ---- drawing ----------------------------------------------------------------------------------

def _errorbar(ax, s: pd.DataFrame, x: str, m: str, **kw):
    return ax.errorbar(s[x], s[f"{m}.mean"].astype(float), yerr=s[f"{m}.ci95"].astype(float).fillna(0), capsize=3,
                       marker="o", **kw)


def metric_vs_figure(trials, x, metrics, title, hue=None, diverged_metric=None):
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if hue is None:
        s = metric_vs(trials, x, metrics)
        for m in metrics:
            _errorbar(ax, s, f"config.{x}", m, label=legend_label(m))
            ok = trials[~trials["diverged"]]
            ax.scatter(ok[f"config.{x}"], ok[m], s=10, alpha=0.35, color=ax.lines[-1].get_color())
    else:
        s = metric_vs(trials, x, metrics[:1], hue)
        pal = colors(trials[f"config.{hue}"])
        for v, g in s.groupby(f"config.{hue}", sort=True):
            _errorbar(ax, g, f"config.{x}", metrics[0], label=f"{hue}={fmt(v)}", color=pal[v])
    bad = trials[trials["diverged"]]
    if len(bad):
        ax.scatter(bad[f"config.{x}"], np.zeros(len(bad)), **DIVERGED)
    if is_log(trials[f"config.{x}"]):
        ax.set_xscale("log")
    ax.set(xlabel=label(x), ylabel=label(metrics[0]) if len(metrics) == 1 or hue else "accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


VAL_AND_LOSS = ("metric.val_acc", "metric.train_loss")


def curves_figure(curves, trials, hue, metrics=VAL_AND_LOSS, title="",
                  x="iteration"):
    """Learning curves coloured by `hue`; trials that ASHA stopped are faded, its rungs dashed."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4), squeeze=False)
    pal = colors(trials[f"config.{hue}"])
    stopped = set(trials.loc[trials["stopped_early"], "trial_id"])
    for ax, m in zip(axes[0], metrics):
        seen = set()
        for tid, g in curves.groupby("trial_id", sort=False):
            v = g[f"config.{hue}"].iloc[0]
            ax.plot(g[x], g[m], color=pal.get(v, "gray"), alpha=0.3 if tid in stopped else 0.9,
                    lw=1.2, label=f"{hue}={fmt(v)}" if v not in seen else None)
            seen.add(v)
        if m.endswith("loss") and (curves[m] > 0).all() and curves[m].max() / max(curves[m].min(), 1e-12) > 20:
            ax.set_yscale("log")
        ax.set(xlabel=label(x), ylabel=label(m))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, title="faded: stopped by ASHA" if stopped else None, title_fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def best_per_value_figure(trials, sci, nuisance, metric, title):
    s = best_per_value(trials, sci, nuisance, metric)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    pal = colors(trials[f"config.{sci}"])
    xs = [fmt(v) for v in s[f"config.{sci}"]]
    ax.bar(xs, s[f"{metric}.mean"], yerr=s[f"{metric}.ci95"].fillna(0), capsize=4,
           color=[pal[v] for v in s[f"config.{sci}"]])
    for i, r in s.reset_index(drop=True).iterrows():
        extra = ", ".join(f"{k}={r[f'config.{k}']:.2g}" for k in nuisance)
        ax.annotate(f"{r[f'{metric}.mean']:.3f}\n{extra}", (i, r[f"{metric}.mean"]), ha="center", va="bottom",
                    fontsize=8, xytext=(0, 4), textcoords="offset points")
    ax.set(xlabel=label(sci), ylabel=f"{label(metric)} (best {', '.join(nuisance)}; mean ± 95% CI)", title=title)
    ax.set_ylim(0, min(1.15, max(1.0, ax.get_ylim()[1])))
    ax.grid(axis="y", alpha=0.3)
    return fig


def hparam_axes_figure(trials, keys, metric, title):
    """The playbook's basic hyperparameter-axis plots: the objective against each varied key."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4.4 * len(keys), 3.8), squeeze=False)
    for ax, k in zip(axes[0], keys):
        col = f"config.{k}"
        ok, bad = trials[~trials["diverged"]], trials[trials["diverged"]]
        ax.scatter(ok[col].astype(str) if ok[col].dtype == object else ok[col], ok[metric], s=18, alpha=0.7,
                   label="trial")
        if len(bad):
            ax.scatter(bad[col].astype(str) if bad[col].dtype == object else bad[col], np.zeros(len(bad)), **DIVERGED)
        if ok[col].dtype != object and is_log(trials[col]):
            ax.set_xscale("log")
        ax.set(xlabel=label(k), ylabel=label(metric))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def regularization_figure(trials, keys=("dropout", "l2", "weight_decay")):
    """Train and test accuracy and their gap against each regulariser, the others held at 0."""
    keys = [k for k in keys if f"config.{k}" in trials]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.8 * len(keys), 4), squeeze=False)
    t = trials.assign(**{"metric.gap": trials["metric.train_acc"] - trials["metric.test_acc"]})
    for ax, k in zip(axes[0], keys):
        others = [o for o in keys if o != k]
        sub = t[(t[[f"config.{o}" for o in others]] == 0).all(axis=1)] if others else t
        s = metric_vs(sub, k, ["metric.train_acc", "metric.test_acc", "metric.gap"])
        for m, c in (("metric.train_acc", "C0"), ("metric.test_acc", "C1"), ("metric.gap", "C3")):
            _errorbar(ax, s, f"config.{k}", m, color=c, label=label(m) if m != "metric.gap" else "gap (train − test)")
        if is_log(sub[f"config.{k}"]):
            ax.set_xscale("symlog", linthresh=float(sub.loc[sub[f"config.{k}"] > 0, f"config.{k}"].min()))
        ax.set(xlabel=label(k), ylabel="accuracy", title=f"against {label(k)}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Regularisation: train/test accuracy and generalisation gap (mean ± 95% CI over seeds)")
    fig.tight_layout()
    return fig


def study_figures(study: str, trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> dict:
    """Figure name -> Figure for one run."""
    sci, nuis, metric = manifest["scientific"], manifest["nuisance"], f"metric.{manifest['metric']}"
    figs = {}
    if study == "lr_scan":
        figs["accuracy_vs_lr"] = metric_vs_figure(trials, "lr", ["best.val_acc", "metric.val_acc", "metric.test_acc"],
                                                  "Accuracy against learning rate (mean ± 95% CI over seeds)")
        figs["curves_by_lr"] = curves_figure(curves, trials, "lr", VAL_AND_LOSS,
                                             "Learning curves by learning rate")
    elif study == "optimizer_comparison":
        figs["best_per_optimizer"] = best_per_value_figure(
            trials, "optimizer", nuis, "best.val_acc", "Best validation accuracy per optimizer, lr tuned for each")
        figs["lr_per_optimizer"] = metric_vs_figure(trials, "lr", ["best.val_acc"],
                                                    "Validation accuracy against lr, per optimizer", hue="optimizer")
        figs["curves_by_optimizer"] = curves_figure(curves, trials, "optimizer", VAL_AND_LOSS,
                                                    "Learning curves by optimizer (all lrs)")
    elif study == "regularization":
        figs["gap_vs_strength"] = regularization_figure(trials)
    elif study == "palindrome":
        figs["accuracy_vs_length"] = metric_vs_figure(
            trials, "seq_len", ["metric.test_acc"], "Palindrome: test accuracy against length (mean ± 95% CI)",
            hue="cell")
        figs["accuracy_vs_length"].axes[0].axhline(0.1, color="gray", ls=":", lw=1, label="chance")
        figs["curves_by_length"] = curves_figure(curves, trials, "seq_len", VAL_AND_LOSS,
                                                 "Learning curves by sequence length (all cells)", x="step")
    keys = [k for k in [*sci, *nuis] if f"config.{k}" in trials]
    if keys:
        figs["hparam_axes"] = hparam_axes_figure(trials, keys, metric, f"{label(metric)} against each hyperparameter")
    return figs
