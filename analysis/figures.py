"""Figures of a study run. Each figure has a data function (a DataFrame of what is plotted: tests
assert on it) and a draw function that returns the Figure. `study_figures` lists a run's figures,
its headline first; every study also gets the hyperparameter-axis plots and the learning curves of
all its trials with ASHA's rungs.

Conventions, in every figure: accuracies are fractions on a [0, 1.02] axis with their error bars
clipped to [0, 1]; spread over seeds is the 95% CI of the mean (Student t) when every point has
n >= 3 seeds, else the min-max over seeds (the t factor for n = 2 is 12.7, which says nothing on
a [0, 1] scale), and the title says which; a value has the same colour in every figure of a run
(`colors`); log axes where the scan is logarithmic."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from analysis.tables import best_per_group, summarize, with_gap  # noqa: E402

# What a quantity is called in legends, and on axes (with its unit).
NAMES = {
    "lr": "learning rate", "optimizer": "optimizer", "dropout": "dropout p", "l2": "L2 penalty λ",
    "weight_decay": "weight decay", "seq_len": "sequence length T", "cell": "cell", "setting": "regulariser",
    "val_acc": "validation accuracy", "test_acc": "test accuracy", "train_acc": "train accuracy",
    "gap": "train − test gap", "train_loss": "train loss", "val_loss": "validation loss",
    "test_loss": "test loss", "iteration": "iteration", "epoch": "epoch", "step": "optimizer step",
}
UNITS = {
    "dropout": "probability of zeroing a unit", "l2": "× Σ‖θ‖₂ added to the loss",
    "weight_decay": "Adam's L2 coefficient", "seq_len": "digits", "val_acc": "fraction correct",
    "test_acc": "fraction correct", "train_acc": "fraction correct", "gap": "fraction",
    "train_loss": "cross-entropy, nats", "val_loss": "cross-entropy, nats", "test_loss": "cross-entropy, nats",
    "iteration": "report", "epoch": "passes over the training set", "step": "batches",
}
DIVERGED = dict(marker="x", color="red", s=50, linewidths=2, zorder=6, clip_on=False, label="diverged")
CHANCE = 0.1  # ten classes
NEUTRAL = "0.3"  # dark grey: points that stand for no particular value (no palette colour)
ACC_LIM = (0.0, 1.02)
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FADED = 0.4  # opacity of the curves of trials that ASHA stopped
LEGEND = dict(fontsize=9, title_fontsize=9, framealpha=0.9)


def _key(key: str) -> str:
    return key.split(".")[-1]


def name(key: str) -> str:
    return NAMES.get(_key(key), _key(key))


def label(key: str) -> str:
    """An axis label with its unit: 'metric.test_acc' -> 'test accuracy (fraction correct)'."""
    k = _key(key)
    return f"{name(k)} ({UNITS[k]})" if k in UNITS else name(k)


def legend_label(key: str) -> str:
    """'best.val_acc' -> 'best validation accuracy'; 'metric.test_acc' -> 'final test accuracy'."""
    return {"best": "best ", "metric": "final "}.get(key.split(".")[0], "") + name(key)


def is_acc(key: str) -> bool:
    """An accuracy (a fraction in [0, 1]); the gap is a difference of two, in [-1, 1]."""
    k = _key(key)
    return k.endswith("acc") or k.startswith("test_acc_")


def bounds(key: str) -> tuple[float, float] | None:
    """Where a quantity's values and error bars can lie."""
    return (0.0, 1.0) if is_acc(key) else (-1.0, 1.0) if _key(key) == "gap" else None


def is_log(values) -> bool:
    """A scan is logarithmic when its positive values span more than a decade."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    v = v[v > 0]
    return len(v) > 1 and v.max() / v.min() > 10


def _numeric(values) -> bool:
    return pd.api.types.is_numeric_dtype(pd.Series(values)) and not pd.api.types.is_bool_dtype(pd.Series(values))


def colors(values) -> dict:
    """The same colour for the same value in every figure of a run: ordered numbers on viridis
    (dark = small), categories on tab10 in sorted order."""
    vals = sorted(pd.Series(values).dropna().unique().tolist(), key=lambda x: (isinstance(x, str), x))
    if all(isinstance(v, (int, float, np.number)) for v in vals) and len(vals) > 1:
        cmap = plt.get_cmap("viridis")
        return {v: cmap(i / (len(vals) - 1) * 0.85) for i, v in enumerate(vals)}
    cmap = plt.get_cmap("tab10")
    return {v: cmap(i % 10) for i, v in enumerate(vals)}


def fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, (float, np.floating)) else str(v)


def fmt_sci(v) -> str:
    """A learning rate for a label: 0.0001 -> '1e-4', 0.0015677 -> '1.6e-3'."""
    if not isinstance(v, (float, np.floating, int, np.integer)) or v == 0 or 1e-2 <= abs(v) < 1e3:
        return fmt(v)
    m, e = f"{float(v):.1e}".split("e")
    return f"{float(m):g}e{int(e)}"


def hue_label(hue: str, v) -> str:
    return str(v) if hue == "setting" else f"{hue}={fmt(v)}"


# ---- spread over seeds -------------------------------------------------------------------------

def spread_kind(s: pd.DataFrame, metrics: list[str]) -> str:
    """'ci' (mean ± 95% CI) when every plotted point has n >= 3 seeds, else 'range' (min-max)."""
    n = pd.concat([s[f"{m}.n"] for m in metrics]) if len(s) else pd.Series([], dtype=float)
    n = n[n > 0]
    return "ci" if len(n) and n.min() >= 3 else "range"


def spread_note(s: pd.DataFrame, metrics: list[str], kind: str) -> str:
    n = sorted({int(x) for m in metrics for x in s[f"{m}.n"] if x > 0}) if len(s) else [0]
    nt = f"n={n[0]}" if len(n) == 1 else f"n={n[0]}–{n[-1]}"
    if n[-1] <= 1:
        return "one seed per point (n=1): no spread over seeds"
    return f"mean ± 95% CI over seeds ({nt})" if kind == "ci" else f"mean over seeds, spread = min–max ({nt})"


def errors(s: pd.DataFrame, m: str, kind: str, clip: tuple | None = None) -> np.ndarray:
    """(2, N) lower and upper error-bar lengths of `m`, clipped so that mean - lower and
    mean + upper stay within `clip`."""
    mean = s[f"{m}.mean"].astype(float).to_numpy()
    if kind == "ci":
        lo = hi = s[f"{m}.ci95"].astype(float).fillna(0).to_numpy()
    else:
        lo = np.nan_to_num(mean - s[f"{m}.min"].astype(float).to_numpy())
        hi = np.nan_to_num(s[f"{m}.max"].astype(float).to_numpy() - mean)
    if clip is not None:
        lo, hi = np.minimum(lo, mean - clip[0]), np.minimum(hi, clip[1] - mean)
    return np.clip(np.nan_to_num(np.vstack([lo, hi])), 0, None)


def _series(ax, x, s, m, kind, band=False, clip=None, **kw):
    """Mean of `m` against x: error bars, or a line with a min-max band (`band`, numeric x)."""
    mean = s[f"{m}.mean"].astype(float).to_numpy()
    if kind == "range" and band:
        c = ax.errorbar(x, mean, marker="o", ms=5, lw=1.8, **kw)
        lo, hi = errors(s, m, kind, clip)
        ax.fill_between(np.asarray(x, dtype=float), mean - lo, mean + hi, color=c.lines[0].get_color(), alpha=0.18,
                        lw=0, label=f"_band {kw.get('label', '')}")
        return c
    return ax.errorbar(x, mean, yerr=errors(s, m, kind, clip), capsize=3, marker="o", ms=5, lw=1.8, **kw)


def _points(ax, trials, xcol, m, color, jitter=0.0):
    """Each trial as a small dot (hollow when ASHA stopped it), behind the means."""
    for stopped, g in trials.groupby(trials["stopped_early"].astype(bool) if "stopped_early" in trials
                                     else pd.Series(False, index=trials.index)):
        x = g[xcol].astype(str) if not _numeric(g[xcol]) else g[xcol]
        ax.scatter(x, g[m], s=22, zorder=4, alpha=0.7, linewidths=1, edgecolors=[color],
                   facecolors="none" if stopped else [color], label="_trial")


def _point_proxies(trials) -> list:
    out = [Line2D([], [], marker="o", ls="", color="gray", ms=5, label="one trial (seed)")]
    if "stopped_early" in trials and trials["stopped_early"].any():
        out.append(Line2D([], [], marker="o", ls="", color="gray", mfc="none", ms=5, label="stopped by ASHA"))
    return out


def _acc_ylim(ax):
    """Accuracy axes: [0, 1.02] (markers at 0, such as diverged trials, drawn unclipped)."""
    ax.set_ylim(*ACC_LIM)


LAST = ("chance", "ASHA rung", "diverged", "one trial", "stopped by ASHA")


def _legend(ax, extra=(), outside=False, **kw):
    """The axes' legend (plus `extra` handles): the plotted values first, in drawing order, then
    reference lines and markers; handles at full opacity, so faded lines still show their colour."""
    h, lab = ax.get_legend_handles_labels()
    h, lab = [*h, *extra], [*lab, *(e.get_label() for e in extra)]
    order = sorted(range(len(lab)), key=lambda i: (any(lab[i].startswith(p) for p in LAST), i))
    where = dict(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0) if outside else dict(loc="best")
    leg = ax.legend([h[i] for i in order], [lab[i] for i in order], **{**LEGEND, **where, **kw})
    for handle in leg.legend_handles:
        if handle is not None and hasattr(handle, "set_alpha"):
            handle.set_alpha(1)
    return leg


def _crosses(ax, trials, xcol, y=0.0):
    bad = trials[trials["diverged"].astype(bool)] if "diverged" in trials else trials.iloc[:0]
    if len(bad):
        x = bad[xcol].astype(str) if not _numeric(bad[xcol]) else bad[xcol]
        ax.scatter(x, np.full(len(bad), y), **DIVERGED)


def _log_x(ax, values) -> bool:
    """A log x axis for a logarithmic scan; symlog (linear around 0) when the scan includes 0."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    if not is_log(v):
        return False
    if (v == 0).any():
        ax.set_xscale("symlog", linthresh=float(v[v > 0].min()))
    else:
        ax.set_xscale("log")
    return True


def _categories(ax, values):
    """Fix the order of a categorical x axis (sorted), before anything is drawn on it."""
    cats = sorted(pd.Series(values).dropna().astype(str).unique())
    ax.plot(cats, [np.nan] * len(cats), label="_categories")


def _ok(trials):
    return trials[~trials["diverged"].astype(bool)] if "diverged" in trials else trials


# ---- data --------------------------------------------------------------------------------------

def metric_vs(trials: pd.DataFrame, x: str, metrics: list[str], hue: str | None = None) -> pd.DataFrame:
    """Mean, 95% CI, min, max and n of each metric per value of x (and hue), diverged trials left out."""
    by = [f"config.{x}"] + ([f"config.{hue}"] if hue else [])
    return summarize(_ok(with_gap(trials)), by, metrics)


def best_per_value(trials: pd.DataFrame, sci: str, nuisance: list[str], metric: str) -> pd.DataFrame:
    """Isolation plot data: per scientific value, the nuisance setting with the best mean."""
    return best_per_group(_ok(trials), [f"config.{sci}"], [f"config.{k}" for k in nuisance], metric)


def asha_rungs(manifest: dict, scale: float = 1) -> list[float]:
    """Where ASHA compares trials: grace * reduction**k below the maximum iterations (times
    `scale`, e.g. steps per report)."""
    a, it = manifest.get("asha") or {}, manifest.get("iterations")
    g, r = a.get("grace"), a.get("reduction")
    if not (g and r and it) or r <= 1:
        return []
    out, k = [], 0
    while g * r**k < it:
        out.append(g * r**k * scale)
        k += 1
    return out


def curve_lines(curves: pd.DataFrame, trials: pd.DataFrame, hue: str) -> pd.DataFrame:
    """The curves with each trial's hue value and whether ASHA stopped it or it diverged."""
    flags = trials[["trial_id", f"config.{hue}", "stopped_early", "diverged"]]
    c = curves.drop(columns=[f"config.{hue}"], errors="ignore")
    return c.merge(flags, on="trial_id", how="inner")


def mean_curves(curves: pd.DataFrame, trials: pd.DataFrame, hue: str, metrics: list[str],
                x: str = "iteration") -> pd.DataFrame:
    """Per hue value and x: mean, min, max and n over its (non-diverged) trials, and whether all
    of them still report there (`complete`: where ASHA stopped some, the mean would mix seeds)."""
    c = curve_lines(curves, trials, hue)
    c = c[~c["diverged"].astype(bool)]
    hcol = f"config.{hue}"
    s = summarize(c, [hcol, x], metrics)
    if not len(s):
        return s
    n_trials = c.groupby(hcol)["trial_id"].nunique().rename("trials")
    s = s.merge(n_trials, left_on=hcol, right_index=True)
    s["complete"] = s[f"{metrics[0]}.n"] == s["trials"]
    return s


def fixed_value_trials(trials: pd.DataFrame, key: str, value: float) -> pd.DataFrame:
    """The trials whose `key` is `value` (float-tolerant): e.g. the optimizers at the hand-run lr."""
    col = pd.to_numeric(trials[f"config.{key}"], errors="coerce")
    return trials[np.isclose(col, value, rtol=1e-6, atol=0)]


def optimizer_views(trials: pd.DataFrame, fixed_lr: float = 1e-4, objective: str = "best.val_acc",
                    shown: str = "metric.test_acc") -> pd.DataFrame:
    """Both views of an optimizer comparison, per optimizer: at the hand-run fixed lr, and at the
    lr whose mean `objective` is best (the isolation view). `shown` is summarised for that lr; rank
    1 = best mean `shown` within the view."""
    rows = []
    fixed = fixed_value_trials(_ok(trials), "lr", fixed_lr)
    for view, sel in (("fixed lr", fixed), ("tuned lr", None)):
        if sel is None:
            best = best_per_value(trials, "optimizer", ["lr"], objective)
            keep = pd.Series(False, index=trials.index)
            for _, b in best.iterrows():
                keep |= (trials["config.optimizer"] == b["config.optimizer"]) & (trials["config.lr"] == b["config.lr"])
            sel = _ok(trials[keep])
        if not len(sel):
            continue
        s = summarize(sel, ["config.optimizer", "config.lr"], [objective, shown])
        s.insert(0, "view", view)
        s["rank"] = s[f"{shown}.mean"].rank(ascending=False, method="min").astype(int)
        rows.append(s)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def class_names(trials: pd.DataFrame, n: int = 10) -> list[str]:
    ds = trials["config.dataset"].iloc[0] if "config.dataset" in trials and len(trials) else None
    return list(CIFAR10) if ds == "cifar10" else [str(k) for k in range(n)]


def per_class(trials: pd.DataFrame, sci: str, nuisance: list[str], objective: str) -> pd.DataFrame:
    """Per-class test accuracy (mean, spread, n over seeds) of each scientific value's best
    configuration (best mean `objective` over its nuisance settings). One row per value and class."""
    cols = sorted((c for c in trials if c.startswith("metric.test_acc_")), key=lambda c: int(c.rsplit("_", 1)[1]))
    if not cols:
        return pd.DataFrame()
    names = class_names(trials, len(cols))
    best = best_per_value(trials, sci, nuisance, objective)
    out = []
    for _, b in best.iterrows():
        sel = _ok(trials)
        for k in [sci, *nuisance]:
            sel = sel[sel[f"config.{k}"] == b[f"config.{k}"]]
        s = summarize(sel.assign(_all=0), ["_all"], cols)
        for c, cname in zip(cols, names):
            row = {f"config.{k}": b[f"config.{k}"] for k in [sci, *nuisance]}
            row.update({"class": int(c.rsplit("_", 1)[1]), "class_name": cname,
                        **{f"acc.{st}": s[f"{c}.{st}"].iloc[0] for st in ("mean", "ci95", "min", "max", "n")}})
            out.append(row)
    return pd.DataFrame(out)


def regularization_data(trials: pd.DataFrame, keys=("dropout", "l2", "weight_decay")) -> pd.DataFrame:
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


def regularizer_setting(df: pd.DataFrame, keys=("dropout", "l2", "weight_decay")) -> pd.Series:
    """One label per row for the regularisation grid: 'dropout p=0.5', 'L2 λ=0.01', or 'none'."""
    short = {"dropout": "dropout p", "l2": "L2 λ", "weight_decay": "weight decay"}
    keys = [k for k in keys if f"config.{k}" in df]

    def one(r):
        on = [f"{short[k]}={fmt(r[f'config.{k}'])}" for k in keys if r[f"config.{k}"]]
        return ", ".join(on) or "none"

    return df.apply(one, axis=1) if len(df) else pd.Series([], dtype=object)


# ---- drawing -----------------------------------------------------------------------------------

def metric_vs_figure(trials, x, metrics, title, hue=None, chance=None):
    """Metrics against a scientific hyperparameter (one line per metric, or per hue value), with
    the spread over seeds, every trial as a dot and diverged trials as red crosses at 0."""
    fig, ax = plt.subplots(figsize=(7.6, 4.6))
    ok, xcol = _ok(with_gap(trials)), f"config.{x}"
    numeric = _numeric(trials[xcol])
    shown = metrics if hue is None else metrics[:1]
    s = metric_vs(trials, x, shown, hue)
    kind = spread_kind(s, shown)
    if not numeric:
        _categories(ax, trials[xcol])
    clip = bounds(shown[0]) if len({bounds(m) for m in shown}) == 1 else None
    if hue is None:
        for i, m in enumerate(metrics):
            _series(ax, s[xcol] if numeric else s[xcol].astype(str), s, m, kind, band=numeric, clip=clip,
                    color=f"C{i}", label=legend_label(m))
            _points(ax, ok, xcol, m, f"C{i}")
    else:
        pal, hcol = colors(trials[f"config.{hue}"]), f"config.{hue}"
        for v, g in s.groupby(hcol, sort=True):
            _series(ax, g[xcol] if numeric else g[xcol].astype(str), g, shown[0], kind, band=numeric, clip=clip,
                    color=pal[v], label=hue_label(hue, v))
            _points(ax, ok[ok[hcol] == v], xcol, shown[0], pal[v])
    _crosses(ax, trials, xcol)
    if chance is not None:
        ax.axhline(chance, color="gray", ls=":", lw=1.2, label=f"chance ({chance:g})")
    if numeric and not _log_x(ax, trials[xcol]) and trials[xcol].nunique() <= 10:
        ax.set_xticks(sorted(trials[xcol].unique()))
    ax.set(xlabel=label(x), ylabel=label(shown[0]) if len(shown) == 1 else "accuracy (fraction correct)")
    if all(is_acc(m) for m in shown):
        _acc_ylim(ax)
    elif clip:
        ax.axhline(0, color="gray", lw=0.8)
    ax.set_title(f"{title}\n{spread_note(s, shown, kind)}", fontsize=11)
    ax.grid(alpha=0.3)
    _legend(ax, _point_proxies(ok), outside=True)
    fig.tight_layout()
    return fig


def curves_figure(curves, trials, hue, metrics=("metric.val_acc", "metric.train_loss"), title="",
                  x="iteration", rungs=(), xlabel=None):
    """Learning curves of every trial coloured by `hue`; trials that ASHA stopped are faded, its
    rungs are dashed vertical lines, diverged trials end in a red cross."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.2 * len(metrics), 4.4), squeeze=False)
    c = curve_lines(curves, trials, hue)
    pal = colors(trials[f"config.{hue}"])
    for ax, m in zip(axes[0], metrics):
        seen, crossed = set(), False
        for _, g in c.groupby("trial_id", sort=False):
            v, stopped = g[f"config.{hue}"].iloc[0], bool(g["stopped_early"].iloc[0])
            ax.plot(g[x], g[m], color=pal.get(v, "gray"), alpha=FADED if stopped else 0.9, lw=1.0 if stopped else 1.5,
                    label=hue_label(hue, v) if v not in seen else None)
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
                    ax.scatter([g[x].iloc[-1]], [0.97], transform=ax.get_xaxis_transform(),
                               **{**DIVERGED, "label": lab})
                crossed = True
        _curve_axis(ax, c[m], m, x, xlabel, rungs)
    _legend(axes[0][-1], outside=True, title="faded: stopped by ASHA" if c["stopped_early"].any() else None)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _curve_axis(ax, values, m: str, x: str, xlabel, rungs):
    """What every learning-curve panel shares: ASHA's rungs, log loss, whole epochs, labels."""
    for i, r in enumerate(rungs):
        ax.axvline(r, color="gray", ls="--", lw=0.9, label="ASHA rung" if i == 0 else None)
    _log_loss(ax, values, m)
    _integer_x(ax, x)
    if is_acc(m):
        _acc_ylim(ax)
    ax.set(xlabel=xlabel or label(x), ylabel=label(m))
    ax.grid(alpha=0.3)


def _integer_x(ax, x: str):
    """Epochs and report numbers are whole."""
    if x == "iteration":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _log_loss(ax, values, m):
    v = pd.to_numeric(values, errors="coerce")
    v = v[np.isfinite(v)]
    if m.endswith("loss") and len(v) and (v > 0).all() and v.max() / v.min() > 20:
        ax.set_yscale("log")




FOUR = ("metric.train_loss", "metric.test_loss", "metric.train_acc", "metric.test_acc")


def mean_curves_figure(curves, trials, hue, metrics=FOUR, title="", x="iteration", xlabel=None, rungs=()):
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
        _curve_axis(ax, c[m], m, x, xlabel, rungs)
        ax.set_title(name(m))
    _legend(axes.flat[ncol - 1], outside=True, title="thick: mean over seeds\nthin: single seeds")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def panel_curves_figure(curves, trials, panel, hue, metrics=("metric.val_acc",), title="", x="iteration",
                        xlabel=None, rungs=(), chance=None):
    """Learning curves in one column per value of `panel`, coloured by `hue` (e.g. per cell,
    coloured by sequence length); every trial drawn, faded where ASHA stopped it."""
    pvals = sorted(trials[f"config.{panel}"].dropna().unique().tolist())
    fig, axes = plt.subplots(len(metrics), len(pvals), figsize=(4.6 * len(pvals), 3.6 * len(metrics)),
                             squeeze=False, sharey="row", sharex=True)
    pal = colors(trials[f"config.{hue}"])
    c = curve_lines(curves, trials, hue).merge(trials[["trial_id", f"config.{panel}"]], on="trial_id",
                                                suffixes=("_curve", ""))
    for j, pv in enumerate(pvals):
        for i, m in enumerate(metrics):
            ax, seen = axes[i][j], set()
            for _, g in c[c[f"config.{panel}"] == pv].groupby("trial_id", sort=False):
                v, stopped = g[f"config.{hue}"].iloc[0], bool(g["stopped_early"].iloc[0])
                ax.plot(g[x], g[m], color=pal.get(v, "gray"), alpha=FADED if stopped else 0.95,
                        lw=1.0 if stopped else 1.6, label=hue_label(hue, v) if v not in seen else "_seed")
                seen.add(v)
            for k, r in enumerate(rungs):
                ax.axvline(r, color="gray", ls="--", lw=0.9, label="ASHA rung" if k == 0 else None)
            if chance is not None and is_acc(m):
                ax.axhline(chance, color="gray", ls=":", lw=1.2, label=f"chance ({chance:g})")
            _log_loss(ax, c[m], m)
            _integer_x(ax, x)
            if is_acc(m):
                _acc_ylim(ax)
            ax.set(xlabel=xlabel or label(x) if i == len(metrics) - 1 else "", ylabel=label(m) if j == 0 else "")
            if i == 0:
                ax.set_title(f"{panel} = {fmt(pv)}")
            ax.grid(alpha=0.3)
    _legend(axes[0][-1], outside=True, title="faded: stopped by ASHA" if trials["stopped_early"].any() else None)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def best_per_value_figure(trials, sci, nuisance, metric, title):
    """The isolation plot: per scientific value, its best nuisance setting's mean `metric`, with
    the spread over seeds and the seeds themselves."""
    s = best_per_value(trials, sci, nuisance, metric)
    kind = spread_kind(s, [metric])
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    pal, scol = colors(trials[f"config.{sci}"]), f"config.{sci}"
    xs = [fmt(v) for v in s[scol]]
    clip = bounds(metric)
    ax.bar(xs, s[f"{metric}.mean"], color=[pal[v] for v in s[scol]], alpha=0.85, label="_bars")
    ax.errorbar(xs, s[f"{metric}.mean"].astype(float), yerr=errors(s, metric, kind, clip), fmt="none", ecolor="black",
                capsize=5, lw=1.4, label=spread_note(s, [metric], kind).split(", ", 1)[-1])
    ok = _ok(trials)
    for i, (_, r) in enumerate(s.iterrows()):
        sel = ok
        for k in [sci, *nuisance]:
            sel = sel[sel[f"config.{k}"] == r[f"config.{k}"]]
        _points(ax, sel.assign(_x=xs[i]), "_x", metric, "black")
        extra = "\n".join(f"{k}={fmt_sci(r[f'config.{k}'])}" for k in nuisance)
        ax.annotate(f"{r[f'{metric}.mean']:.3f}" + (f"\n{extra}" if extra else ""), (i, 0.03), ha="center",
                    va="bottom", fontsize=9, zorder=7,
                    bbox=dict(boxstyle="round,pad=0.2", fc="white", alpha=0.85, lw=0))
    nuis = f" (its best {', '.join(nuisance)})" if nuisance else ""
    ax.set(xlabel=label(sci), ylabel=f"{label(metric)}{nuis}")
    ax.set_title(f"{title}\n{spread_note(s, [metric], kind)}", fontsize=11)
    if is_acc(metric):
        _acc_ylim(ax)
    ax.grid(axis="y", alpha=0.3)
    _legend(ax, _point_proxies(ok), outside=True)
    fig.tight_layout()
    return fig


def optimizer_views_figure(trials, fixed_lr=1e-4, objective="best.val_acc", shown="metric.test_acc"):
    """Both views side by side: `shown` per optimizer at the hand-run fixed lr (hatched) and at
    each optimizer's own best lr (solid)."""
    v = optimizer_views(trials, fixed_lr, objective, shown)
    kind = spread_kind(v, [shown])
    opts = sorted(v["config.optimizer"].unique())
    pal = colors(trials["config.optimizer"])
    fig, ax = plt.subplots(figsize=(8.4, 4.8))
    w = 0.38
    for j, (view, hatch, alpha) in enumerate((("fixed lr", "//", 0.45), ("tuned lr", None, 0.9))):
        g = v[v["view"] == view].set_index("config.optimizer").reindex(opts)
        xs = np.arange(len(opts)) + (j - 0.5) * w
        have = g[f"{shown}.mean"].notna().to_numpy()
        lab = f"lr = {fmt_sci(fixed_lr)} for all (hand-run view)" if view == "fixed lr" else "lr tuned per optimizer"
        ax.bar(xs[have], g.loc[have, f"{shown}.mean"], w, color=[pal[o] for o in np.array(opts)[have]],
               alpha=alpha, hatch=hatch, edgecolor="black", lw=0.6, label=lab)
        ax.errorbar(xs[have], g.loc[have, f"{shown}.mean"].astype(float), fmt="none", ecolor="black", capsize=3,
                    yerr=errors(g[have], shown, kind, (0.0, 1.0)), lw=1.1, label=f"_{view} spread")
        for x, (_, r) in zip(xs[have], g[have].iterrows()):
            ax.annotate(f"{r[f'{shown}.mean']:.3f}\n#{int(r['rank'])}", (x, 0.03), ha="center", va="bottom",
                        fontsize=8, zorder=7, bbox=dict(boxstyle="round,pad=0.2", fc="white", alpha=0.85, lw=0))
    tuned = v[v["view"] == "tuned lr"].set_index("config.optimizer")["config.lr"]
    ax.set_xticks(np.arange(len(opts)), [f"{o}\nbest lr {fmt_sci(tuned[o])}" if o in tuned else o for o in opts])
    ax.set(xlabel=label("optimizer"), ylabel=label(shown))
    _acc_ylim(ax)
    ax.set_title(f"Optimizers at one fixed lr vs. each at its own best lr ({legend_label(shown)})\n"
                 f"{spread_note(v, [shown], kind)}; #: rank within the view", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    _legend(ax, outside=True)
    fig.tight_layout()
    return fig


def per_class_figure(trials, sci, nuisance, objective, title):
    """Grouped bars: per class, the test accuracy of each scientific value's best configuration."""
    d = per_class(trials, sci, nuisance, objective)
    scol = f"config.{sci}"
    vals = sorted(d[scol].unique(), key=lambda x: (isinstance(x, str), x))
    kind = "ci" if d["acc.n"].min() >= 3 else "range"
    pal = colors(trials[scol])
    names = d.drop_duplicates("class").sort_values("class")["class_name"].tolist()
    fig, ax = plt.subplots(figsize=(min(13.0, 4.0 + 0.22 * len(names) * max(1, len(vals))), 4.6))
    w = 0.8 / max(1, len(vals))
    for j, v in enumerate(vals):
        g = d[d[scol] == v].sort_values("class")
        xs = np.arange(len(g)) + (j - (len(vals) - 1) / 2) * w
        extra = ", ".join(f"{k}={fmt_sci(g[f'config.{k}'].iloc[0])}" for k in nuisance)
        ax.bar(xs, g["acc.mean"], w, color=pal[v], label=f"{fmt(v)}" + (f" ({extra})" if extra else ""))
        ax.errorbar(xs, g["acc.mean"].astype(float), yerr=errors(g, "acc", kind, (0.0, 1.0)), fmt="none",
                    ecolor="black", capsize=1.5, lw=0.8, label="_spread")
    ax.set_xticks(np.arange(len(names)), names, rotation=30 if max(map(len, names)) > 2 else 0)
    ax.set(xlabel="class", ylabel="test accuracy of the class (fraction correct)")
    _acc_ylim(ax)
    ax.set_title(f"{title}\n{spread_note(d, ['acc'], kind)}", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    _legend(ax, outside=True, title=f"{sci} (its best {', '.join(nuisance)})" if nuisance else sci)
    fig.tight_layout()
    return fig


def hparam_axes_figure(trials, keys, metric, title, hue=None):
    """The playbook's basic hyperparameter-axis plots: the objective of every trial against each
    varied key; diverged trials as red crosses at 0, ASHA-stopped ones hollow. Points are coloured
    by the panel's key when it is categorical, else by another categorical key where there is one."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4.8 * len(keys) + 1.6, 4.0), squeeze=False)
    ok = _ok(trials)
    for ax, k in zip(axes[0], keys):
        col = f"config.{k}"
        if not _numeric(trials[col]):
            _categories(ax, trials[col])
        h = hue or (k if not _numeric(trials[col]) else
                    next((o for o in keys if o != k and not _numeric(trials[f"config.{o}"])), None))
        if h:  # a categorical key's values keep their colour; on their own axis they need no legend
            pal = colors(trials[f"config.{h}"])
            for v, g in ok.groupby(f"config.{h}", sort=True):
                _points(ax, g, col, metric, pal[v])
                if h != k:
                    ax.plot([], [], "o", color=pal[v], label=hue_label(h, v))
        else:
            _points(ax, ok, col, metric, NEUTRAL)
        _crosses(ax, trials, col)
        if _numeric(trials[col]) and _log_x(ax, trials[col]):
            pass
        elif _numeric(trials[col]) and trials[col].nunique() <= 10:
            ax.set_xticks(sorted(trials[col].dropna().unique()))
        ax.set(xlabel=label(k), ylabel=label(metric) if ax is axes[0][0] else "")
        if is_acc(metric):
            _acc_ylim(ax)
        ax.grid(alpha=0.3)
        if h and h != k and ax is not axes[0][-1]:
            _legend(ax, loc="lower left", fontsize=8)
    _legend(axes[0][-1], _point_proxies(ok), outside=True)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def regularization_figure(trials, keys=("dropout", "l2", "weight_decay")):
    """Per regulariser (the others at 0): train and test accuracy (top) and the generalisation
    gap (bottom, its own scale) against strength."""
    d = regularization_data(trials, keys)
    keys = [k for k in keys if f"config.{k}" in trials]
    ms = ["metric.train_acc", "metric.test_acc", "metric.gap"]
    kind = spread_kind(d, ms)
    fig, axes = plt.subplots(2, len(keys), figsize=(4.8 * len(keys), 6.6), squeeze=False, sharex="col",
                             gridspec_kw=dict(height_ratios=[3, 2]))
    for j, k in enumerate(keys):
        s = d[d["scan"] == k].sort_values("value")
        top, bottom = axes[0][j], axes[1][j]
        for m, c, ax in (("metric.train_acc", "C0", top), ("metric.test_acc", "C1", top), ("metric.gap", "C3", bottom)):
            _series(ax, s["value"], s, m, kind, band=True, clip=bounds(m), color=c, label=legend_label(m))
        pos = s.loc[s["value"] > 0, "value"]
        for ax in (top, bottom):
            if is_log(s["value"]):
                ax.set_xscale("symlog", linthresh=float(pos.min()))
            elif len(s):
                ax.set_xticks(s["value"].tolist())
            ax.grid(alpha=0.3)
        _acc_ylim(top)
        bottom.axhline(0, color="gray", lw=0.8)
        top.set(ylabel="accuracy (fraction correct)" if j == 0 else "", title=f"against {name(k)}")
        bottom.set(xlabel=label(k), ylabel=label("gap") if j == 0 else "")
    gap, e = d["metric.gap.mean"].astype(float), errors(d, "metric.gap", kind, bounds("gap"))
    lo, hi = np.nanmin(gap - e[0], initial=0.0), np.nanmax(gap + e[1], initial=0.02)
    pad = max(0.01, 0.1 * (hi - lo))
    for ax in axes[1]:  # one gap scale for every regulariser, so that they compare
        ax.set_ylim(min(0, lo - pad), hi + pad)
    _legend(axes[0][-1], outside=True)
    _legend(axes[1][-1], outside=True)
    fig.suptitle(f"Regularisation: final train/test accuracy and generalisation gap\n{spread_note(d, ms, kind)}")
    fig.tight_layout()
    return fig


# ---- per study ---------------------------------------------------------------------------------

HEADLINE = {"lr_scan": "accuracy_vs_lr", "optimizer_comparison": "best_per_optimizer",
            "regularization": "gap_vs_strength", "palindrome": "accuracy_vs_length"}
FIXED_LR = 1e-4  # the hand-run reports' lr: the optimizer study's first Optuna suggestion


def x_axis(trials: pd.DataFrame, manifest: dict) -> tuple[str, str, list[float]]:
    """The curves' x column, its label, and ASHA's rungs on it: optimizer steps where a trial
    reports every `steps_per_report` steps (palindromes), else epochs."""
    if "config.steps_per_report" in trials and trials["config.steps_per_report"].notna().any():
        spr = float(trials["config.steps_per_report"].dropna().iloc[0])
        return "step", label("step"), asha_rungs(manifest, spr)
    return "iteration", label("epoch"), asha_rungs(manifest)


def study_figures(study: str, trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> dict:
    """Figure name -> Figure for one run, the headline figure first."""
    sci, nuis = list(manifest.get("scientific", [])), list(manifest.get("nuisance", []))
    metric = f"metric.{manifest.get('metric', 'val_acc')}"
    has_curves = len(curves) > 0 and "trial_id" in curves and "metric.val_acc" in curves
    x, xlabel, rungs = x_axis(trials, manifest) if has_curves else ("iteration", "", [])
    if has_curves and x not in curves:
        x, xlabel = "iteration", label("iteration")
    figs = {}
    hue = next((k for k in sci if f"config.{k}" in trials), None)
    four = [m for m in FOUR if m in curves]
    two = [m for m in ("metric.val_acc", "metric.train_loss") if m in curves]
    if study == "lr_scan":
        figs["accuracy_vs_lr"] = metric_vs_figure(trials, "lr", ["best.val_acc", "metric.val_acc", "metric.test_acc"],
                                                  "Accuracy against learning rate")
        figs["gap_vs_lr"] = metric_vs_figure(trials, "lr", ["metric.gap"],
                                             "Generalisation gap (final train − test accuracy) against learning rate")
        if has_curves:
            figs["mean_curves_by_lr"] = mean_curves_figure(
                curves, trials, "lr", four, "Train and test loss and accuracy per learning rate", x, xlabel, rungs)
    elif study == "optimizer_comparison":
        figs["best_per_optimizer"] = best_per_value_figure(
            trials, "optimizer", nuis, "best.val_acc", "Best validation accuracy per optimizer, lr tuned for each")
        fixed = fixed_value_trials(trials, "lr", FIXED_LR)
        if len(fixed):
            figs["optimizer_views"] = optimizer_views_figure(trials, FIXED_LR)
            if has_curves:
                c = curves[curves["trial_id"].isin(fixed["trial_id"])]
                figs["fixed_lr_curves"] = mean_curves_figure(
                    c, fixed, "optimizer", four, f"Fixed lr = {fmt_sci(FIXED_LR)} for every optimizer (the hand-run "
                    "reports' setup)", x, xlabel, rungs)
        figs["lr_per_optimizer"] = metric_vs_figure(trials, "lr", ["best.val_acc"],
                                                    "Best validation accuracy against lr, per optimizer",
                                                    hue="optimizer")
        if any(c.startswith("metric.test_acc_") for c in trials):
            figs["per_class_accuracy"] = per_class_figure(
                trials, "optimizer", nuis, "best.val_acc", "Per-class test accuracy of each optimizer's best lr")
    elif study == "regularization":
        figs["gap_vs_strength"] = regularization_figure(trials)
        trials = trials.assign(**{"config.setting": regularizer_setting(trials)})
        if has_curves:
            curves = curves.merge(trials[["trial_id", "config.setting"]], on="trial_id", how="left")
        hue = "setting"
    elif study == "palindrome":
        figs["accuracy_vs_length"] = metric_vs_figure(
            trials, "seq_len", ["metric.test_acc"], "Palindrome: final test accuracy against length", hue="cell",
            chance=CHANCE)
        if has_curves:
            figs["curves_per_cell"] = panel_curves_figure(
                curves, trials, "cell", "seq_len", two,
                "Palindrome learning curves per cell, coloured by sequence length T", x, xlabel, rungs, CHANCE)
        hue = "seq_len"
    keys = [k for k in [*sci, *nuis] if f"config.{k}" in trials and trials[f"config.{k}"].nunique() > 1]
    if keys:
        figs["hparam_axes"] = hparam_axes_figure(trials, keys, metric, f"{legend_label(metric)} of every trial "
                                                 "against each hyperparameter")
    if has_curves and hue:
        figs["curves_all_trials"] = curves_figure(curves, trials, hue, two,
                                                  "Learning curves of all trials", x, rungs, xlabel)
    return figs
