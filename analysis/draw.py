"""What every figure draws the same way: error bars clipped to a quantity's range, each trial as a
dot (hollow when ASHA stopped it), diverged trials as red crosses, log axes for logarithmic scans,
ASHA's rungs, and the legend (outside the axes, values first, at full opacity).

Spread over seeds follows `analysis.data`: the 95% CI of the mean (Student t) when every point of
a figure has n >= 3 seeds, else the min-max over seeds; the title says which (`data.spread_note`)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402
from matplotlib.legend import Legend  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from analysis.style import ACC_LIM, DIVERGED, LEGEND, is_acc, is_log, label, numeric  # noqa: E402

LAST = ("chance", "ASHA rung", "diverged", "one trial", "stopped by ASHA")  # legend entries after the values


def errors(s: pd.DataFrame, m: str, kind: str, clip: tuple | None = None) -> np.ndarray:
    """(2, N) lower and upper error-bar lengths of `m` (kind 'ci' or 'range', see
    `data.spread_kind`), clipped so that mean - lower and mean + upper stay within `clip`."""
    mean = s[f"{m}.mean"].astype(float).to_numpy()
    if kind == "ci":
        lo = hi = s[f"{m}.ci95"].astype(float).fillna(0).to_numpy()
    else:
        lo = np.nan_to_num(mean - s[f"{m}.min"].astype(float).to_numpy())
        hi = np.nan_to_num(s[f"{m}.max"].astype(float).to_numpy() - mean)
    if clip is not None:
        lo, hi = np.minimum(lo, mean - clip[0]), np.minimum(hi, clip[1] - mean)
    return np.clip(np.nan_to_num(np.vstack([lo, hi])), 0, None)


def series(
    ax: Axes, x, s: pd.DataFrame, m: str, kind: str, band: bool = False, clip: tuple | None = None, **kw
) -> ErrorbarContainer:
    """Mean of `m` against x: error bars, or a line with a min-max band (`band`, numeric x)."""
    mean = s[f"{m}.mean"].astype(float).to_numpy()
    if kind == "range" and band:
        c = ax.errorbar(x, mean, marker="o", ms=5, lw=1.8, **kw)
        lo, hi = errors(s, m, kind, clip)
        ax.fill_between(
            np.asarray(x, dtype=float),
            mean - lo,
            mean + hi,
            color=c.lines[0].get_color(),
            alpha=0.18,
            lw=0,
            label=f"_band {kw.get('label', '')}",
        )
        return c
    return ax.errorbar(x, mean, yerr=errors(s, m, kind, clip), capsize=3, marker="o", ms=5, lw=1.8, **kw)


def points(ax: Axes, trials: pd.DataFrame, xcol: str, m: str, color) -> None:
    """Each trial as a small dot (hollow when ASHA stopped it), behind the means."""
    for stopped, g in trials.groupby(
        trials["stopped_early"].astype(bool) if "stopped_early" in trials else pd.Series(False, index=trials.index)
    ):
        x = g[xcol].astype(str) if not numeric(g[xcol]) else g[xcol]
        ax.scatter(
            x,
            g[m],
            s=22,
            zorder=4,
            alpha=0.7,
            linewidths=1,
            edgecolors=[color],
            facecolors="none" if stopped else [color],
            label="_trial",
        )


def point_proxies(trials: pd.DataFrame) -> list[Line2D]:
    """Legend entries for the trial dots."""
    out = [Line2D([], [], marker="o", ls="", color="gray", ms=5, label="one trial (seed)")]
    if "stopped_early" in trials and trials["stopped_early"].any():
        out.append(Line2D([], [], marker="o", ls="", color="gray", mfc="none", ms=5, label="stopped by ASHA"))
    return out


def acc_ylim(ax: Axes) -> None:
    """Accuracy axes: [0, 1.02] (markers at 0, such as diverged trials, drawn unclipped)."""
    ax.set_ylim(*ACC_LIM)


def legend(ax: Axes, extra: tuple | list = (), outside: bool = False, **kw) -> Legend:
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


def crosses(ax: Axes, trials: pd.DataFrame, xcol: str, y: float = 0.0) -> None:
    """The diverged trials as red crosses at `y`."""
    bad = trials[trials["diverged"].astype(bool)] if "diverged" in trials else trials.iloc[:0]
    if len(bad):
        x = bad[xcol].astype(str) if not numeric(bad[xcol]) else bad[xcol]
        ax.scatter(x, np.full(len(bad), y), **DIVERGED)


def log_x(ax: Axes, values) -> bool:
    """A log x axis for a logarithmic scan; symlog (linear around 0) when the scan includes 0."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    if not is_log(v):
        return False
    if (v == 0).any():
        ax.set_xscale("symlog", linthresh=float(v[v > 0].min()))
    else:
        ax.set_xscale("log")
    return True


def categories(ax: Axes, values) -> None:
    """Fix the order of a categorical x axis (sorted), before anything is drawn on it."""
    cats = sorted(pd.Series(values).dropna().astype(str).unique())
    ax.plot(cats, [np.nan] * len(cats), label="_categories")


def integer_x(ax: Axes, x: str) -> None:
    """Epochs and report numbers are whole."""
    if x == "iteration":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def log_loss(ax: Axes, values: pd.Series, m: str) -> None:
    """A log y axis for a loss (or a perplexity, e^loss) that spans more than a factor of 20."""
    v = pd.to_numeric(values, errors="coerce")
    v = v[np.isfinite(v)]
    if m.endswith(("loss", "ppl")) and len(v) and (v > 0).all() and v.max() / v.min() > 20:
        ax.set_yscale("log")


def rungs_and_chance(ax: Axes, rungs: list[float], m: str, chance: float | None = None) -> None:
    """ASHA's rungs as dashed vertical lines; chance as a dotted horizontal line on accuracy axes."""
    for i, r in enumerate(rungs):
        ax.axvline(r, color="gray", ls="--", lw=0.9, label="ASHA rung" if i == 0 else None)
    if chance is not None and is_acc(m):
        ax.axhline(chance, color="gray", ls=":", lw=1.2, label=f"chance ({chance:g})")


def curve_axis(ax: Axes, values: pd.Series, m: str, x: str, xlabel: str | None, rungs: list[float]) -> None:
    """What every learning-curve panel shares: ASHA's rungs, log loss, whole epochs, labels."""
    rungs_and_chance(ax, rungs, m)
    log_loss(ax, values, m)
    integer_x(ax, x)
    if is_acc(m):
        acc_ylim(ax)
    ax.set(xlabel=xlabel or label(x), ylabel=label(m))
    ax.grid(alpha=0.3)


def bar_note(ax: Axes, x, text: str, fontsize: float = 9) -> None:
    """`text` at the foot of the bar at `x`, on a white box (the bar's mean, its lr, its rank)."""
    ax.annotate(
        text,
        (x, 0.03),
        ha="center",
        va="bottom",
        fontsize=fontsize,
        zorder=7,
        bbox=dict(boxstyle="round,pad=0.2", fc="white", alpha=0.85, lw=0),
    )
