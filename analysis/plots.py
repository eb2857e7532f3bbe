"""The generic plots of a run's final values, for any study: a metric against a hyperparameter, the
isolation plot (each scientific value at its best nuisance setting) and the playbook's
hyperparameter-axis plots. Each has a data function in `analysis.data` (what is plotted) and
returns the Figure; learning curves are in `analysis.curves`."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from analysis import draw
from analysis.data import best_per_group, metric_vs, not_diverged, spread_kind, spread_note, with_gap
from analysis.selection import tuned_trials
from analysis.style import NEUTRAL, bounds, colors, fmt, fmt_sci, hue_label, is_acc, label, legend_label, numeric


def metric_vs_figure(
    trials: pd.DataFrame,
    x: str,
    metrics: list[str],
    title: str,
    hue: str | None = None,
    chance: float | None = None,
    ax=None,
) -> Figure:
    """Metrics against a scientific hyperparameter (one line per metric, or per hue value), with
    the spread over seeds, every trial as a dot and diverged trials as red crosses at 0; on `ax` (one
    panel of a figure) where given."""
    fig, ax = plt.subplots(figsize=(7.6, 4.6)) if ax is None else (ax.figure, ax)
    ok, xcol = not_diverged(with_gap(trials)), f"config.{x}"
    is_num = numeric(trials[xcol])
    shown = metrics if hue is None else metrics[:1]
    s = metric_vs(trials, x, shown, hue)
    kind = spread_kind(s, shown)
    if not is_num:
        draw.categories(ax, trials[xcol])
    clip = bounds(shown[0]) if len({bounds(m) for m in shown}) == 1 else None
    # one trial per point: the mean is the trial, so its marker is hollow, and the trial's dot on it tells
    # (filled, or hollow where ASHA stopped it)
    one = {"mfc": "white"} if len(s) and (s[f"{shown[0]}.n"] <= 1).all() else {}
    if hue is None:
        for i, m in enumerate(metrics):
            draw.series(
                ax,
                s[xcol] if is_num else s[xcol].astype(str),
                s,
                m,
                kind,
                band=is_num,
                clip=clip,
                color=f"C{i}",
                label=legend_label(m),
                **one,
            )
            draw.points(ax, ok, xcol, m, f"C{i}")
    else:
        pal, hcol = colors(trials[f"config.{hue}"]), f"config.{hue}"
        every_x = s[xcol].unique()
        for v, g in s.groupby(hcol, sort=True):
            # a value measured at some x only (e.g. a flaw run at the shortest and longest length) gets no
            # line: a line would claim the values in between
            xs = sorted(g[xcol].unique()) if is_num else []
            gaps = any(a < x < b for a, b in zip(xs, xs[1:]) for x in every_x)
            draw.series(
                ax,
                g[xcol] if is_num else g[xcol].astype(str),
                g,
                shown[0],
                kind,
                band=is_num and not gaps,
                clip=clip,
                color=pal[v],
                label=hue_label(hue, v),
                **({"ls": "none"} if gaps else {}),
                **one,
            )
            draw.points(ax, ok[ok[hcol] == v], xcol, shown[0], pal[v])
    draw.crosses(ax, trials, xcol)
    if chance is not None:
        ax.axhline(chance, color="gray", ls=":", lw=1.2, label=f"chance ({chance:g})")
    if is_num and not draw.log_x(ax, trials[xcol]) and trials[xcol].nunique() <= 10:
        ax.set_xticks(sorted(trials[xcol].unique()))
    ax.set(xlabel=label(x), ylabel=label(shown[0]) if len(shown) == 1 else "accuracy (fraction correct)")
    if all(is_acc(m) for m in shown):
        draw.acc_ylim(ax)
    elif clip:
        ax.axhline(0, color="gray", lw=0.8)
    ax.set_title(f"{title}\n{spread_note(s, shown, kind)}", fontsize=11)
    ax.grid(alpha=0.3)
    draw.legend(ax, draw.point_proxies(ok), outside=True)
    fig.tight_layout()
    return fig


def best_per_value_figure(trials: pd.DataFrame, manifest: dict, sci: str, metric: str, title: str) -> Figure:
    """The isolation plot: per value of the scientific key `sci`, its tuned nuisance setting's mean
    `metric` (chosen on validation, `analysis.selection`), with the spread over seeds and the seeds."""
    s = best_per_group(trials, manifest, metric, by=[sci])
    kind = spread_kind(s, [metric])
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    pal, scol = colors(trials[f"config.{sci}"]), f"config.{sci}"
    xs = [fmt(v) for v in s[scol]]
    clip = bounds(metric)
    ax.bar(xs, s[f"{metric}.mean"], color=[pal[v] for v in s[scol]], alpha=0.85, label="_bars")
    ax.errorbar(
        xs,
        s[f"{metric}.mean"].astype(float),
        yerr=draw.errors(s, metric, kind, clip),
        fmt="none",
        ecolor="black",
        capsize=5,
        lw=1.4,
        label=spread_note(s, [metric], kind).split(", ", 1)[-1],
    )
    nuisance = [k for k in manifest.get("nuisance", []) if f"config.{k}" in trials]
    ok = not_diverged(tuned_trials(trials, manifest, by=[sci]))
    for i, (_, r) in enumerate(s.iterrows()):
        sel = ok[ok[scol] == r[scol]]
        draw.points(ax, sel.assign(_x=xs[i]), "_x", metric, "black")
        extra = "\n".join(f"{k}={fmt_sci(r[f'config.{k}'])}" for k in nuisance)
        draw.bar_note(ax, i, f"{r[f'{metric}.mean']:.3f}" + (f"\n{extra}" if extra else ""))
    nuis = f" (at its tuned {', '.join(nuisance)})" if nuisance else ""
    ax.set(xlabel=label(sci), ylabel=f"{label(metric)}{nuis}")
    ax.set_title(f"{title}\n{spread_note(s, [metric], kind)}", fontsize=11)
    if is_acc(metric):
        draw.acc_ylim(ax)
    ax.grid(axis="y", alpha=0.3)
    draw.legend(ax, draw.point_proxies(ok), outside=True)
    fig.tight_layout()
    return fig


def hparam_axes_figure(
    trials: pd.DataFrame, keys: list[str], metric: str, title: str, hue: str | None = None
) -> Figure:
    """The playbook's basic hyperparameter-axis plots: the objective of every trial against each
    varied key; diverged trials as red crosses at 0, ASHA-stopped ones hollow. Points are coloured
    by the panel's key when it is categorical, else by another categorical key where there is one."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4.8 * len(keys) + 1.6, 4.0), squeeze=False)
    ok = not_diverged(trials)
    for ax, k in zip(axes[0], keys):
        col = f"config.{k}"
        is_num = numeric(trials[col])
        if not is_num:
            draw.categories(ax, trials[col])
        h = hue or (k if not is_num else next((o for o in keys if o != k and not numeric(trials[f"config.{o}"])), None))
        if h:  # a categorical key's values keep their colour; on their own axis they need no legend
            pal = colors(trials[f"config.{h}"])
            for v, g in ok.groupby(f"config.{h}", sort=True):
                draw.points(ax, g, col, metric, pal[v])
                if h != k:
                    ax.plot([], [], "o", color=pal[v], label=hue_label(h, v))
        else:
            draw.points(ax, ok, col, metric, NEUTRAL)
        draw.crosses(ax, trials, col)
        if is_num and not draw.log_x(ax, trials[col]) and trials[col].nunique() <= 10:
            ax.set_xticks(sorted(trials[col].dropna().unique()))
        ax.set(xlabel=label(k), ylabel=label(metric) if ax is axes[0][0] else "")
        if is_acc(metric):
            draw.acc_ylim(ax)
        ax.grid(alpha=0.3)
        if h and h != k and ax is not axes[0][-1]:
            draw.legend(ax, loc="lower left", fontsize=8)
    draw.legend(axes[0][-1], draw.point_proxies(ok), outside=True)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def hparam_axes(trials: pd.DataFrame, manifest: dict) -> Figure | None:
    """Every study's `hparam_axes` figure: the objective of every trial against each hyperparameter
    that the run varied (scientific and nuisance); None where it varied none."""
    metric = f"metric.{manifest.get('metric', 'val_acc')}"
    keys = [
        k
        for k in [*manifest.get("scientific", []), *manifest.get("nuisance", [])]
        if f"config.{k}" in trials and trials[f"config.{k}"].nunique() > 1
    ]
    if not keys:
        return None
    return hparam_axes_figure(
        trials, keys, metric, f"{legend_label(metric)} of every trial against each hyperparameter"
    )
