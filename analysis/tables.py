"""Grouped tables over seeds: mean, standard deviation, 95% confidence interval, min, max and n."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def ci95(values) -> float:
    """Half-width of the 95% confidence interval of the mean (Student t); NaN for n < 2."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return float("nan")
    return float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


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


def best_per_group(trials: pd.DataFrame, scientific: list[str], nuisance: list[str], metric: str,
                   mode: str = "max") -> pd.DataFrame:
    """The isolation view: for each scientific value, the nuisance setting whose mean over seeds
    is best, with that setting's summary."""
    if not nuisance:
        return summarize(trials, scientific, [metric])
    s = summarize(trials, scientific + nuisance, [metric])
    s = s.sort_values(f"{metric}.mean", ascending=(mode == "min"))
    return s.groupby(scientific, sort=True).head(1).sort_values(scientific).reset_index(drop=True)


def with_gap(trials: pd.DataFrame) -> pd.DataFrame:
    """`metric.gap`: the generalisation gap, train accuracy minus test accuracy (fraction)."""
    if "metric.train_acc" not in trials or "metric.test_acc" not in trials:
        return trials
    return trials.assign(**{"metric.gap": trials["metric.train_acc"] - trials["metric.test_acc"]})


SUMMARY_METRICS = ("best.{objective}", "metric.val_acc", "metric.test_acc", "metric.train_acc", "metric.gap",
                   "metric.test_loss")


def run_summary(trials: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    """A run's results per scientific value (and per nuisance setting where there is a search):
    mean, std, 95% CI, min, max and n over seeds for the objective and the accuracies, plus how
    many trials each group had, how many ASHA stopped and how many diverged (left out of the
    means). This is `summary.csv` / `summary.parquet`."""
    t = with_gap(trials)
    for col in ("stopped_early", "diverged"):
        t = t.assign(**{col: t[col].astype(bool)}) if col in t else t.assign(**{col: False})
    keys = [f"config.{k}" for k in [*manifest.get("scientific", []), *manifest.get("nuisance", [])]
            if f"config.{k}" in t]
    if not keys:  # nothing varied: one row for the whole run
        t, keys = t.assign(study=manifest.get("study", "")), ["study"]
    metrics = [m.format(objective=manifest.get("metric", "val_acc")) for m in SUMMARY_METRICS]
    metrics = list(dict.fromkeys(m for m in metrics if m in t))
    counts = t.groupby(keys, dropna=False, sort=True).agg(
        trials=("diverged", "size"), stopped_early=("stopped_early", "sum"), diverged=("diverged", "sum"))
    s = summarize(t[~t["diverged"]], keys, metrics)
    out = counts.reset_index().merge(s, on=keys, how="left") if len(s) else counts.reset_index()
    return out.astype({"trials": int, "stopped_early": int, "diverged": int})
