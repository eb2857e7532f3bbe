"""Numbers over seeds: the spread rule (defined here once), grouped tables with mean, standard
deviation, 95% confidence interval, min, max and n, and the data that the figures plot (each figure
has a data function here or in its study's module: a DataFrame of what is plotted, which tests read).

The spread rule: with n >= 3 seeds, the 95% confidence interval of the mean (Student t); with
fewer, the min-max over the seeds (the t factor for n = 2 is 12.7, which says nothing on a [0, 1]
accuracy axis). Figures, findings, reports and claims all use `spread` or `interval`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

from analysis.selection import chosen, keys_of, matches, selection, tuned_trials


def ci95(values: ArrayLike, level: float = 0.95) -> float:
    """Half-width of the 95% (or `level`) confidence interval of the mean (Student t); NaN for n < 2."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return float("nan")
    return float(stats.t.ppf((1 + level) / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


MIN_CI = 3  # seeds from which the spread is a 95% CI rather than the min-max


@dataclass(frozen=True)
class Spread:
    mean: float
    lo: float
    hi: float
    n: int

    @property
    def kind(self) -> str:
        """'ci' (mean ± 95% CI) or 'range' (min-max over seeds)."""
        return "ci" if self.n >= MIN_CI else "range"

    def text(self, digits: int = 3) -> str:
        """'0.986 ± 0.012 (95% CI, n=3)', '0.542 (0.111–0.972 over 2 seeds)' or '0.900 (1 seed)'."""
        if self.n >= MIN_CI:
            return f"{self.mean:.{digits}f} ± {(self.hi - self.lo) / 2:.{digits}f} (95% CI, n={self.n})"
        if self.n == 2:
            return f"{self.mean:.{digits}f} ({self.lo:.{digits}f}–{self.hi:.{digits}f} over 2 seeds)"
        return f"{self.mean:.{digits}f} (1 seed)" if self.n else "–"


def spread(values: ArrayLike, level: float = 0.95) -> Spread:
    """The spread of values over seeds, by the rule above (non-finite values left out; `level`: the
    confidence interval's, for a test at another level)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return Spread(np.nan, np.nan, np.nan, 0)
    m = float(v.mean())
    if len(v) >= MIN_CI:
        h = ci95(v, level)
        return Spread(m, m - h, m + h, len(v))
    return Spread(m, float(v.min()), float(v.max()), len(v))


def interval(row: pd.Series, m: str) -> tuple[float, float]:
    """The spread of `m` in a `summarize` row as an interval: mean ± 95% CI for n >= 3, else min-max."""
    if row[f"{m}.n"] >= MIN_CI:
        return row[f"{m}.mean"] - row[f"{m}.ci95"], row[f"{m}.mean"] + row[f"{m}.ci95"]
    return row[f"{m}.min"], row[f"{m}.max"]


def stat(row: pd.Series, m: str, digits: int = 3) -> str:
    """The spread of `m` in a `summarize` row as text (see `Spread.text`)."""
    lo, hi = interval(row, m)
    return Spread(row[f"{m}.mean"], lo, hi, int(row[f"{m}.n"])).text(digits)


def spread_kind(s: pd.DataFrame, metrics: list[str]) -> str:
    """For a figure of `summarize` rows: 'ci' (mean ± 95% CI) when every plotted point has n >= MIN_CI
    seeds, else 'range' (min-max): one kind per figure, so that its error bars compare."""
    n = pd.concat([s[f"{m}.n"] for m in metrics]) if len(s) else pd.Series([], dtype=float)
    n = n[n > 0]
    return "ci" if len(n) and n.min() >= MIN_CI else "range"


def spread_note(s: pd.DataFrame, metrics: list[str], kind: str) -> str:
    """What a figure's error bars are, for its title: 'mean ± 95% CI over seeds (n=3)'."""
    n = sorted({int(x) for m in metrics for x in s[f"{m}.n"] if x > 0}) if len(s) else [0]
    nt = f"n={n[0]}" if len(n) == 1 else f"n={n[0]}–{n[-1]}"
    if n[-1] <= 1:
        return "one seed per point (n=1): no spread over seeds"
    return f"mean ± 95% CI over seeds ({nt})" if kind == "ci" else f"mean over seeds, spread = min–max ({nt})"


def summarize(trials: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """One row per value of `by`, with `<metric>.mean/.std/.ci95/.min/.max/.n` over the trials (seeds)."""
    out = []
    for key, g in trials.groupby(by, dropna=False, sort=True):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        for m in metrics:
            v = g[m].astype(float)
            v = v[np.isfinite(v)]
            row[f"{m}.mean"] = v.mean() if len(v) else np.nan
            row[f"{m}.std"] = v.std(ddof=1) if len(v) > 1 else np.nan
            row[f"{m}.ci95"] = ci95(v)
            row[f"{m}.min"] = v.min() if len(v) else np.nan
            row[f"{m}.max"] = v.max() if len(v) else np.nan
            row[f"{m}.n"] = len(v)
        out.append(row)
    return pd.DataFrame(out).infer_objects()


def not_diverged(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials that did not diverge: what means over seeds are taken of."""
    return trials[~trials["diverged"].astype(bool)] if "diverged" in trials else trials


def best_per_group(trials: pd.DataFrame, manifest: dict, metric: str, by: list[str] | None = None) -> pd.DataFrame:
    """The isolation view: for each scientific value (or value of `by`), its tuned nuisance setting
    (chosen on validation by `analysis.selection`), with the summary of `metric` over that setting's
    seeds (its confirmation seeds where the run has them; diverged seeds left out)."""
    by = manifest.get("scientific", []) if by is None else by
    t = not_diverged(tuned_trials(trials, manifest, by=by))
    return summarize(t, keys_of(trials, by) + keys_of(trials, manifest.get("nuisance", [])), [metric])


def with_gap(trials: pd.DataFrame) -> pd.DataFrame:
    """`metric.gap`: the generalisation gap, train accuracy minus test accuracy (fraction)."""
    if "metric.train_acc" not in trials or "metric.test_acc" not in trials:
        return trials
    return trials.assign(**{"metric.gap": trials["metric.train_acc"] - trials["metric.test_acc"]})


SUMMARY_METRICS = (
    "best.{objective}",
    "metric.val_acc",
    "metric.test_acc",
    "metric.test_ppl",
    "metric.train_acc",
    "metric.gap",
    "metric.test_loss",
)


def run_summary(trials: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    """A run's results per scientific value (and per nuisance setting where there is a search):
    mean, std, 95% CI, min, max and n over seeds for the objective and the accuracies, plus how
    many trials each group had, how many ASHA stopped and how many diverged (left out of the
    means), and `tuned`: whether the row is its scientific value's tuned setting (`analysis.selection`).
    This is `summary.csv` / `summary.parquet`."""
    t = with_gap(trials)
    for col in ("stopped_early", "diverged"):
        t = t.assign(**{col: t[col].astype(bool)}) if col in t else t.assign(**{col: False})
    keys = [
        f"config.{k}" for k in [*manifest.get("scientific", []), *manifest.get("nuisance", [])] if f"config.{k}" in t
    ]
    if not keys:  # nothing varied: one row for the whole run
        t, keys = t.assign(study=manifest.get("study", "")), ["study"]
    if "phase" in t and t["phase"].nunique() > 1:  # the search's seeds and the confirmation's, apart
        keys = [*keys, "phase"]
    metrics = [m.format(objective=manifest.get("metric", "val_acc")) for m in SUMMARY_METRICS]
    metrics = list(dict.fromkeys(m for m in metrics if m in t))
    counts = t.groupby(keys, dropna=False, sort=True).agg(
        trials=("diverged", "size"), stopped_early=("stopped_early", "sum"), diverged=("diverged", "sum")
    )
    s = summarize(t[~t["diverged"]], keys, metrics)
    out = counts.reset_index().merge(s, on=keys, how="left") if len(s) else counts.reset_index()
    out = out.astype({"trials": int, "stopped_early": int, "diverged": int})
    if "study" in keys or not chosen(manifest):  # nothing tuned: every row is its scientific value's only setting
        return out.assign(tuned=True)
    return out.assign(tuned=matches(out, selection(trials, manifest)))


# ---- what the figures plot -----------------------------------------------------------------------


def metric_vs(trials: pd.DataFrame, x: str, metrics: list[str], hue: str | None = None) -> pd.DataFrame:
    """Mean, 95% CI, min, max and n of each metric per value of x (and hue), diverged trials left out."""
    by = [f"config.{x}"] + ([f"config.{hue}"] if hue else [])
    return summarize(not_diverged(with_gap(trials)), by, metrics)


def fixed_value_trials(trials: pd.DataFrame, key: str, value: float) -> pd.DataFrame:
    """The trials whose `key` is `value` (float-tolerant): e.g. the optimizers at the hand-run lr."""
    col = pd.to_numeric(trials[f"config.{key}"], errors="coerce")
    return trials[np.isclose(col, value, rtol=1e-6, atol=0)]


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


def has_curves(curves: pd.DataFrame) -> bool:
    """Whether a run's curves table holds learning curves to draw."""
    return len(curves) > 0 and "trial_id" in curves and "metric.val_acc" in curves


def x_axis(trials: pd.DataFrame, manifest: dict) -> tuple[str, str, list[float]]:
    """The curves' x column, what it counts ('step', 'samples' or 'epoch'), and ASHA's rungs on it:
    optimizer steps where a trial reports every `steps_per_report` steps (palindromes), training
    samples where it reports every `samples_per_report` samples (arithmetic), else epochs."""
    if "config.steps_per_report" in trials and trials["config.steps_per_report"].notna().any():
        spr = float(trials["config.steps_per_report"].dropna().iloc[0])
        return "step", "step", asha_rungs(manifest, spr)
    if "config.samples_per_report" in trials and trials["config.samples_per_report"].notna().any():
        spr = float(trials["config.samples_per_report"].dropna().iloc[0])
        return "samples", "samples", asha_rungs(manifest, spr)
    return "iteration", "epoch", asha_rungs(manifest)


def curve_lines(curves: pd.DataFrame, trials: pd.DataFrame, hue: str) -> pd.DataFrame:
    """The curves with each trial's hue value and whether ASHA stopped it or it diverged."""
    flags = trials[["trial_id", f"config.{hue}", "stopped_early", "diverged"]]
    c = curves.drop(columns=[f"config.{hue}"], errors="ignore")
    return c.merge(flags, on="trial_id", how="inner")


def mean_curves(
    curves: pd.DataFrame, trials: pd.DataFrame, hue: str, metrics: list[str], x: str = "iteration"
) -> pd.DataFrame:
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


def class_names(manifest: dict, n: int) -> list[str]:
    """The names of a run's `n` classes, as its manifest records them (`classes`); else '0'..'n-1'."""
    names = manifest.get("classes") if manifest else None
    return [str(c) for c in names] if names and len(names) == n else [str(k) for k in range(n)]
