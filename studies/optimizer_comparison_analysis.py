"""Analysis of the optimizer comparison (studies/optimizer_comparison.py): both views of it, each
optimizer at its own best lr (the isolation plot) and all at the hand-run reports' fixed lr (the
first lr the search tried, `search_first`), the lr scan per optimizer, and per-class accuracy."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import draw
from analysis.curves import FOUR, axis, mean_curves_figure
from analysis.data import (
    fixed_value_trials,
    not_diverged,
    spread_kind,
    spread_note,
    summarize,
)
from analysis.plots import best_per_value_figure, metric_vs_figure
from analysis.selection import CONFIRM, SEARCH, phase, resampled_choice, selection, tuned_trials
from analysis.style import colors, fmt, fmt_sci, label, legend_label
from analysis.verdicts import (
    CONTRADICTED,
    INCONCLUSIVE,
    MIN_SEEDS,
    RANKING,
    REPRODUCED,
    Claim,
    Sample,
    Verdict,
    ended,
    greater,
    ranking,
    sample,
)

REFERENCES = "docs/references.md#optimizer_comparison"  # where every claim's reference is told in full
HEADLINE = "best_per_optimizer"
# What the hand-run reports measured (docs/references.md; single runs on the full setup): the trend to compare with.
REFERENCE = (
    "at lr 1e-4 for every optimizer, test accuracy Adam 0.825, NAdam 0.824, RMSprop 0.827, SGD 0.78-0.80; "
    "per class, vehicles (car, ship, truck) above animals (cat, dog, bird) (VGG CNN, CIFAR-10)."
)
CAPTIONS = {
    "best_per_optimizer": "Isolation plot: final test accuracy of each optimizer at its lr tuned on validation.",
    "optimizer_views": "Both views: every optimizer at the hand-run fixed lr, and each at its tuned lr.",
    "fixed_lr_curves": "The hand-run view: learning curves of every optimizer at the same fixed lr.",
    "lr_per_optimizer": "Best validation accuracy against lr, one line per optimizer.",
    "per_class_accuracy": "Per-class test accuracy of each optimizer's best configuration.",
}

VEHICLES = ("airplane", "automobile", "ship", "truck")  # CIFAR-10's vehicles; its other classes are animals


def fixed_lr(manifest: dict) -> float | None:
    """The hand-run reports' lr: the first lr the search tries (the manifest's `search_first`; for a
    run recorded before manifests held it, the study's declaration)."""
    first = manifest.get("search_first")
    if first is None:
        from studies.optimizer_comparison import STUDY

        first = STUDY.search_first
    return (first or {}).get("lr")


# ---- data ----------------------------------------------------------------------------------------


def at_fixed_lr(trials: pd.DataFrame, lr: float) -> pd.DataFrame:
    """The seeds at the hand-run fixed lr: its confirmation seeds where the run confirmed it (the same fresh
    seeds as the tuned lrs'), else the search's (that lr is tried first, never chosen)."""
    at = fixed_value_trials(trials, "lr", lr)
    confirmed = phase(at, CONFIRM)
    return confirmed if len(confirmed) else phase(at, SEARCH)


def optimizer_views(
    trials: pd.DataFrame, manifest: dict, fixed_lr: float, shown: str = "metric.test_acc"
) -> pd.DataFrame:
    """Both views of an optimizer comparison, per optimizer: at the hand-run fixed lr, and at its tuned
    lr (the isolation view, chosen on validation by `analysis.selection`). `shown` is summarised for that
    lr; rank 1 = best mean `shown` within the view."""
    rows = []
    fixed = not_diverged(ended(at_fixed_lr(trials, fixed_lr)))
    for view, sel in (("fixed lr", fixed), ("tuned lr", not_diverged(tuned_trials(trials, manifest)))):
        if not len(sel):
            continue
        s = summarize(sel, ["config.optimizer", "config.lr"], [shown])
        s.insert(0, "view", view)
        s["rank"] = s[f"{shown}.mean"].rank(ascending=False, method="min").astype(int)
        rows.append(s)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def _dataset_classes(trials: pd.DataFrame) -> list[str] | None:
    """Class names from the trials' dataset, for a run whose manifest does not record them."""
    ds = trials["config.dataset"].iloc[0] if "config.dataset" in trials and len(trials) else None
    if ds is None:
        return None
    from datasets import class_names  # studies/ put our `datasets` first on sys.path

    try:
        return list(class_names(ds))
    except ValueError:
        return None


def per_class(trials: pd.DataFrame, manifest: dict, sci: str = "optimizer") -> pd.DataFrame:
    """Per-class test accuracy (mean, spread, n over seeds) of each scientific value at its tuned
    setting (`analysis.selection`). One row per value and class; classes named by the manifest's
    `classes`, else by the trials' dataset, else by index."""
    cols = sorted((c for c in trials if c.startswith("metric.test_acc_")), key=lambda c: int(c.rsplit("_", 1)[1]))
    if not cols:
        return pd.DataFrame()
    names = manifest.get("classes") or _dataset_classes(trials)
    names = [str(c) for c in names] if names and len(names) == len(cols) else [str(k) for k in range(len(cols))]
    t = not_diverged(tuned_trials(trials, manifest, by=[sci]))
    nuisance = [k for k in manifest.get("nuisance", []) if f"config.{k}" in t]
    out = []
    for key, sel in t.groupby([f"config.{k}" for k in [sci, *nuisance]]):
        config = dict(zip([f"config.{k}" for k in [sci, *nuisance]], key))
        s = summarize(sel.assign(_all=0), ["_all"], cols)
        for c, cname in zip(cols, names):
            acc = {f"acc.{st}": s[f"{c}.{st}"].iloc[0] for st in ("mean", "ci95", "min", "max", "n")}
            out.append({**config, "class": int(c.rsplit("_", 1)[1]), "class_name": cname, **acc})
    return pd.DataFrame(out)


# ---- figures -------------------------------------------------------------------------------------


def _spread_bars(ax, xs, s: pd.DataFrame, m: str, kind: str, **kw) -> None:
    """Black error bars (the spread over seeds of `m`, within [0, 1]) on bars at `xs`."""
    ax.errorbar(
        xs, s[f"{m}.mean"].astype(float), yerr=draw.errors(s, m, kind, (0.0, 1.0)), fmt="none", ecolor="black", **kw
    )


def optimizer_views_figure(
    trials: pd.DataFrame, manifest: dict, fixed_lr: float, shown: str = "metric.test_acc"
) -> Figure:
    """Both views side by side: `shown` per optimizer at the hand-run fixed lr (hatched) and at
    each optimizer's tuned lr (solid)."""
    v = optimizer_views(trials, manifest, fixed_lr, shown)
    kind = spread_kind(v, [shown])
    opts = sorted(v["config.optimizer"].unique())
    pal = colors(trials["config.optimizer"])
    fig, ax = plt.subplots(figsize=(8.4, 4.8))
    w = 0.38
    for j, (view, hatch, alpha) in enumerate((("fixed lr", "//", 0.45), ("tuned lr", None, 0.9))):
        g = v[v["view"] == view].set_index("config.optimizer").reindex(opts)
        xs = np.arange(len(opts)) + (j - 0.5) * w
        have = g[f"{shown}.mean"].notna().to_numpy()
        g, xs = g[have], xs[have]
        lab = f"lr = {fmt_sci(fixed_lr)} for all (hand-run view)" if view == "fixed lr" else "lr tuned per optimizer"
        color = [pal[o] for o in np.array(opts)[have]]
        ax.bar(xs, g[f"{shown}.mean"], w, color=color, alpha=alpha, hatch=hatch, edgecolor="black", lw=0.6, label=lab)
        _spread_bars(ax, xs, g, shown, kind, capsize=3, lw=1.1, label=f"_{view} spread")
        for x, (_, r) in zip(xs, g.iterrows()):
            draw.bar_note(ax, x, f"{r[f'{shown}.mean']:.3f}\n#{int(r['rank'])}", fontsize=8)
    tuned = v[v["view"] == "tuned lr"].set_index("config.optimizer")["config.lr"]
    ax.set_xticks(np.arange(len(opts)), [f"{o}\ntuned lr {fmt_sci(tuned[o])}" if o in tuned else o for o in opts])
    ax.set(xlabel=label("optimizer"), ylabel=label(shown))
    draw.acc_ylim(ax)
    ax.set_title(
        f"Optimizers at one fixed lr vs. each at its tuned lr ({legend_label(shown)})\n"
        f"{spread_note(v, [shown], kind)}; #: rank within the view",
        fontsize=11,
    )
    ax.grid(axis="y", alpha=0.3)
    draw.legend(ax, outside=True)
    fig.tight_layout()
    return fig


def per_class_figure(trials: pd.DataFrame, manifest: dict, title: str, sci: str = "optimizer") -> Figure:
    """Grouped bars: per class, the test accuracy of each scientific value at its tuned setting."""
    d = per_class(trials, manifest, sci)
    nuisance = [k for k in manifest.get("nuisance", []) if f"config.{k}" in d]
    scol = f"config.{sci}"
    vals = sorted(d[scol].unique(), key=lambda x: (isinstance(x, str), x))
    kind = spread_kind(d, ["acc"])
    pal = colors(trials[scol])
    names = d.drop_duplicates("class").sort_values("class")["class_name"].tolist()
    fig, ax = plt.subplots(figsize=(min(13.0, 4.0 + 0.22 * len(names) * max(1, len(vals))), 4.6))
    w = 0.8 / max(1, len(vals))
    for j, v in enumerate(vals):
        g = d[d[scol] == v].sort_values("class")
        xs = np.arange(len(g)) + (j - (len(vals) - 1) / 2) * w
        extra = ", ".join(f"{k}={fmt_sci(g[f'config.{k}'].iloc[0])}" for k in nuisance)
        ax.bar(xs, g["acc.mean"], w, color=pal[v], label=f"{fmt(v)}" + (f" ({extra})" if extra else ""))
        _spread_bars(ax, xs, g, "acc", kind, capsize=1.5, lw=0.8, label="_spread")
    ax.set_xticks(np.arange(len(names)), names, rotation=30 if max(map(len, names)) > 2 else 0)
    ax.set(xlabel="class", ylabel="test accuracy of the class (fraction correct)")
    draw.acc_ylim(ax)
    ax.set_title(f"{title}\n{spread_note(d, ['acc'], kind)}", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    draw.legend(ax, outside=True, title=f"{sci} (at its tuned {', '.join(nuisance)})" if nuisance else sci)
    fig.tight_layout()
    return fig


def figures(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> dict[str, Figure]:
    figs = {
        "best_per_optimizer": best_per_value_figure(
            trials, manifest, "optimizer", "metric.test_acc", "Final test accuracy per optimizer, each at its tuned lr"
        )
    }
    lr = fixed_lr(manifest)
    fixed = fixed_value_trials(trials, "lr", lr) if lr is not None else trials.iloc[:0]
    if len(fixed):
        figs["optimizer_views"] = optimizer_views_figure(trials, manifest, lr)
        ax = axis(trials, curves, manifest)
        if ax:
            c = curves[curves["trial_id"].isin(fixed["trial_id"])]
            title = f"Fixed lr = {fmt_sci(lr)} for every optimizer (the hand-run reports' setup)"
            metrics = [m for m in FOUR if m in curves]
            figs["fixed_lr_curves"] = mean_curves_figure(
                c, fixed, "optimizer", metrics, title, ax.x, ax.label, ax.rungs
            )
    title = "What Optuna saw: best validation accuracy against lr, per optimizer (hollow: stopped by ASHA)"
    figs["lr_per_optimizer"] = metric_vs_figure(phase(trials, SEARCH), "lr", ["best.val_acc"], title, hue="optimizer")
    if any(c.startswith("metric.test_acc_") for c in trials):
        title = "Per-class test accuracy of each optimizer's best lr"
        figs["per_class_accuracy"] = per_class_figure(trials, manifest, title)
    return figs


# ---- findings ------------------------------------------------------------------------------------


def _ranking(d: pd.DataFrame, key: str, m: str) -> list:
    return d.sort_values(f"{m}.mean", ascending=False, kind="stable")[key].tolist()


def _samples(view: pd.DataFrame, m: str) -> list[Sample]:
    """One Sample of `m` per optimizer of a view (its seeds at that view's lr)."""
    return [
        Sample(f"{o} (lr {fmt_sci(g['config.lr'].iloc[0])})", g[m].astype(float).dropna().to_numpy())
        for o, g in view.groupby("config.optimizer")
    ]


def findings(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> list[str]:
    tried = trials.groupby("config.optimizer")["config.lr"].nunique()
    tuned = not_diverged(tuned_trials(trials, manifest))
    if not len(tuned):
        return []
    n = f"{int(tried.min())}{'' if tried.min() == tried.max() else f'–{int(tried.max())}'}"
    rank = _ranking(summarize(tuned, ["config.optimizer"], ["metric.test_acc"]), "config.optimizer", "metric.test_acc")
    b = tuned.groupby("config.optimizer")["config.lr"].first()
    out = [
        f"Isolation view (lr tuned per optimizer on validation, among {n} lrs each; final test accuracy; {RANKING}): "
        + ranking(_samples(tuned, "metric.test_acc"))
        + "."
    ]
    lr = fixed_lr(manifest)
    if lr is not None:
        out += _views(lr, trials, manifest)
    pc = per_class(trials, manifest)
    if len(pc):
        top = rank[0]
        c = pc[pc["config.optimizer"] == top].sort_values("acc.mean")
        word = "class " if c["class_name"].str.isdigit().all() else ""
        names = lambda rows: ", ".join(f"{word}{r['class_name']} ({r['acc.mean']:.2f})" for _, r in rows.iterrows())
        out.append(
            f"Per-class test accuracy of the best ({top}, lr {fmt_sci(b.loc[top])}): weakest "
            f"{names(c.head(2))}; strongest {names(c.tail(2).iloc[::-1])}."
        )
        if set(c["class_name"]) >= {*VEHICLES, "cat", "dog"}:
            veh = c[c["class_name"].isin(VEHICLES)]["acc.mean"].mean()
            ani = c[~c["class_name"].isin(VEHICLES)]["acc.mean"].mean()
            out.append(f"Vehicles {veh:.2f} vs animals {ani:.2f} mean per-class test accuracy.")
    return out


def _views(lr: float, trials: pd.DataFrame, manifest: dict) -> list[str]:
    """The fixed-lr view, ranked the same way as the isolation view."""
    fixed = not_diverged(ended(at_fixed_lr(trials, lr)))
    if not len(fixed):
        return []
    out = [
        f"Fixed-lr view (lr = {fmt_sci(lr)} for all, as the hand-run reports; final test accuracy): "
        + ranking(_samples(fixed, "metric.test_acc"))
        + "."
    ]
    tuned = tuned_trials(trials, manifest)
    if len(tuned) and np.isclose(tuned["config.lr"].astype(float), lr, rtol=1e-6).all():
        out.append(f"Every optimizer's tuned lr is {fmt_sci(lr)} itself, so both views coincide.")
    return out


# ---- claims (docs/references.md#optimizer_comparison) --------------------------------------------

CAR_SHIP_TRUCK, CAT_DOG_BIRD = ("automobile", "ship", "truck"), ("cat", "dog", "bird")  # as the reports name them


def _fixed_lr(manifest: dict) -> float:
    return float((manifest.get("search_first") or {}).get("lr", 1e-4))


def _at(trials, optimizer, lr):
    t = at_fixed_lr(trials, lr)
    return sample(t, f"{optimizer} lr {fmt_sci(lr)}", "metric.test_acc", optimizer=optimizer)


def _sgd_below_at_fixed(trials, curves, manifest):
    lr = _fixed_lr(manifest)
    return greater(_at(trials, "adam", lr), _at(trials, "sgd", lr))


RULE_LARGER = (
    "the tuned lr of each (the selection rule, on >= 3 seeds each); its stability: the share of 2,000 bootstrap "
    "resamples of the seeds in which SGD's choice is larger than Adam's, >= 0.95 reproduces, <= 0.05 contradicts"
)


def _sgd_lr_larger(trials, curves, manifest):
    chosen = {o: selection(trials[trials["config.optimizer"] == o], manifest) for o in ("sgd", "adam")}
    if any(not len(b) for b in chosen.values()):
        raise ValueError("an optimizer has no lr whose seeds all ran to the end")
    sgd, adam = (float(chosen[o]["config.lr"].iloc[0]) for o in ("sgd", "adam"))
    n = {o: int(chosen[o]["ended"].iloc[0]) for o in chosen}
    value = f"tuned lr: sgd {fmt_sci(sgd)}, adam {fmt_sci(adam)}"
    fx = {"seeds": f"{n['sgd']} vs {n['adam']}"}
    if min(n.values()) < MIN_SEEDS:
        return Verdict(INCONCLUSIVE, value, RULE_LARGER, f"fewer than {MIN_SEEDS} seeds per lr", **fx)
    pick = {o: resampled_choice(trials[trials["config.optimizer"] == o], manifest, "lr") for o in chosen}
    share = float((pick["sgd"] > pick["adam"]).mean())
    fx["effect"] = f"SGD's lr larger in {share:.0%} of resamples"
    value += f"; SGD's choice larger than Adam's in {share:.1%} of 2,000 resamples of the seeds"
    if share >= 0.95:
        return Verdict(REPRODUCED, value, RULE_LARGER, **fx)
    if share <= 0.05:
        return Verdict(CONTRADICTED, value, RULE_LARGER, **fx)
    return Verdict(INCONCLUSIVE, value, RULE_LARGER, "the choice of lr moves between resamples of the seeds", **fx)


def _paired_gap(a: pd.DataFrame, s: pd.DataFrame, label: str) -> Sample:
    """Adam's minus SGD's final test accuracy, seed by seed (the seeds of both that ran to the end)."""
    a, s = (ended(x).set_index("config.seed")["metric.test_acc"] for x in (a, s))
    both = a.index.intersection(s.index)
    return Sample(label, (a.loc[both] - s.loc[both]).to_numpy(dtype=float))


def _tuning_closes_gap(trials, curves, manifest):
    """The gap at the fixed lr against the gap at the tuned lrs, each seed by seed: on the confirmation's
    fresh seeds where the run confirmed both (the same seeds), else the fixed lr's search seeds (tried,
    never chosen) and the tuned lrs' search seeds."""
    lr, opt = _fixed_lr(manifest), trials["config.optimizer"]
    at = at_fixed_lr(trials, lr)
    fixed = _paired_gap(
        at[at["config.optimizer"] == "adam"], at[at["config.optimizer"] == "sgd"], f"Adam − SGD at lr {fmt_sci(lr)}"
    )
    tuned = [tuned_trials(trials[opt == o], manifest) for o in ("adam", "sgd")]
    return greater(fixed, _paired_gap(*tuned, "at their tuned lrs"))


def _vehicles(trials, curves, manifest):
    classes = list(manifest.get("classes") or [])
    b = ended(tuned_trials(trials, manifest))
    col = lambda names: b[[f"metric.test_acc_{classes.index(n)}" for n in names]].mean(axis=1).to_numpy()
    return greater(
        Sample("vehicles (car, ship, truck)", col(CAR_SHIP_TRUCK)),
        Sample("animals (cat, dog, bird)", col(CAT_DOG_BIRD)),
    )


CLAIMS = [
    Claim(
        "At the hand-run fixed lr (1e-4), SGD ends below Adam in test accuracy",
        "lr 1e-4: Adam 0.825, NAdam 0.824, RMSprop 0.827, SGD 0.78-0.80 (hand-run, VGG CNN, CIFAR-10; "
        "docs/references.md#optimizer_comparison)",
        _sgd_below_at_fixed,
    ),
    Claim(
        "Tuned per optimizer, SGD's best lr is larger than Adam's",
        "the hand-run reports' flaw: one lr (1e-4) for every optimizer (docs/references.md#optimizer_comparison)",
        _sgd_lr_larger,
        # the choice's stability is resampled from the search seeds, 3 per lr at full; the quick search's 2 per
        # lr decide nothing (its claims read the confirmation seeds)
        budgets=("full",),
    ),
    Claim(
        "Tuning lr per optimizer narrows SGD's gap to Adam: the gap at the fixed lr is larger than at each "
        "optimizer's tuned lr (seed by seed)",
        "SGD 0.78-0.80 against Adam 0.825 at one fixed lr (hand-run); a fair comparison tunes lr per optimizer",
        _tuning_closes_gap,
    ),
    Claim(
        "Per class, vehicles (car, ship, truck) are recognised better than animals (cat, dog, bird)",
        "vehicles clearly above animals (hand-run, CIFAR-10)",
        _vehicles,
        datasets=("cifar10",),
    ),
]
