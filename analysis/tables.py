"""Grouped tables over seeds: mean, standard deviation, 95% confidence interval and n."""

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
    """One row per value of `by`, with `<metric>.mean/.std/.ci95/.n` over the trials (seeds)."""
    out = []
    for key, g in trials.groupby(by, dropna=False, sort=True):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        for m in metrics:
            v = g[m].astype(float)
            v = v[np.isfinite(v)]
            row[f"{m}.mean"] = v.mean() if len(v) else np.nan
            row[f"{m}.std"] = v.std(ddof=1) if len(v) > 1 else np.nan
            row[f"{m}.ci95"] = ci95(v)
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
