"""The one selection rule: which configuration is "tuned" (or "best"), chosen on validation only.

For each value of the keys `by` (default: the study's scientific hyperparameters but those it selects),
the setting of the keys `over` (default: the scientific keys it selects, `select`, and its nuisance
hyperparameters) is chosen:

- among the settings whose seeds all ran to the end (none stopped early by ASHA or failed), with the
  most such seeds of the group (so a setting with 2 seeds never wins over settings with 3 by luck);
- by the mean over those seeds of the study's objective at the end of training (`metric.<objective>`,
  a validation metric: `val_acc`, `val_ppl`, ...), in the study's mode (max or min); a diverged seed
  counts as the worst value there is;
- ties go to the first setting in sorted order.

Selection never reads a test metric: `select` refuses any metric that is not a validation one. Where
the run has a confirmation phase (`phase` column: "search" and "confirm"), the choice is made on the
search seeds, and what is reported about the chosen setting comes from its confirmation seeds, disjoint
from the search seeds, so that the winner's score is not inflated by its own selection.

`tuned_trials` gives the rows (seeds) at the chosen settings; `selection` one row per group with the
chosen setting and its selection score; `mark_tuned` adds the `tuned` column that the summary shows;
`matches` finds the rows of given settings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SEARCH, CONFIRM = "search", "confirm"
RULE_SELECT = (
    "tuned = the setting with the best mean final validation objective over its seeds, among the settings "
    "whose seeds all ran to the end (the most seeds first); chosen on the search seeds, reported on fresh ones "
    "where the run confirmed"
)


class SelectionError(Exception):
    """A selection on a metric that is not a validation one (a defect of the analysis, never caught)."""


def is_validation(metric: str) -> bool:
    """Whether a table column is a validation metric (`metric.val_acc`, `best.val_ppl`, ...)."""
    return metric.split(".", 1)[-1].startswith("val")


def objective(manifest: dict, metric: str | None = None) -> tuple[str, str]:
    """The selection column and mode: the study's objective at the end of training, unless `metric`."""
    m = metric or f"metric.{manifest.get('metric', 'val_acc')}"
    if not is_validation(m):
        raise SelectionError(f"selection on {m!r}: select on a validation metric (metric.val_*), report on test")
    return m, manifest.get("mode", "max")


def keys_of(trials: pd.DataFrame, names) -> list[str]:
    """`config.<name>` for each name that is a column of `trials`."""
    return [f"config.{k}" for k in names if f"config.{k}" in trials]


def chosen(manifest: dict) -> list[str]:
    """The keys a run chooses ("tuned"): the scientific keys it selects (`select`: the best lr of an lr
    scan), then its nuisance keys."""
    return list(dict.fromkeys([*manifest.get("select", []), *manifest.get("nuisance", [])]))


def chosen_by(manifest: dict) -> list[str]:
    """The keys the choice is made per value of: the scientific keys that are not selected."""
    return [k for k in manifest.get("scientific", []) if k not in manifest.get("select", [])]


def phase(trials: pd.DataFrame, which: str) -> pd.DataFrame:
    """The rows of one phase (a run without a confirmation phase is all search)."""
    if "phase" not in trials:
        return trials if which == SEARCH else trials.iloc[:0]
    return trials[trials["phase"].fillna(SEARCH) == which]


def _scores(trials: pd.DataFrame, by: list[str], over: list[str], metric: str, mode: str) -> pd.DataFrame:
    """Per (by, over) setting: its seeds, how many ran to the end, and its selection score."""
    status = trials["status"] if "status" in trials else pd.Series("completed", index=trials.index)
    done = status.isin(["completed", "diverged"])
    worst = -np.inf if mode == "max" else np.inf
    diverged = trials["diverged"].astype(bool) if "diverged" in trials else pd.Series(False, index=trials.index)
    value = trials[metric].astype(float).where(~diverged, worst)
    value = value.where(np.isfinite(value) | value.isin([worst]), worst)
    t = trials.assign(_done=done, _value=value.where(done))
    keys = by + over
    g = t.groupby(keys, dropna=False, sort=True) if keys else t.assign(_all=0).groupby("_all")
    s = g.agg(seeds=("_done", "size"), ended=("_done", "sum"), score=("_value", "mean")).reset_index()
    return s.drop(columns=["_all"], errors="ignore")


def _eligible(s: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The settings (`_scores` rows) that may be chosen: every seed ran to the end, and as many seeds as the
    most of their group."""
    s = s[(s["ended"] == s["seeds"]) & (s["ended"] > 0)]
    most = s.groupby(by, dropna=False)["ended"].transform("max") if by else s["ended"].max()
    return s[s["ended"] == most]


def selection(
    trials: pd.DataFrame, manifest: dict, by: list[str] | None = None, over: list[str] | None = None, metric=None
) -> pd.DataFrame:
    """One row per value of `by`: the chosen setting of `over` (columns `config.*`), its selection score
    (`score`, the mean validation objective over its search seeds) and `ended` (their number)."""
    metric, mode = objective(manifest, metric)
    by = keys_of(trials, chosen_by(manifest) if by is None else by)
    over = [k for k in keys_of(trials, chosen(manifest) if over is None else over) if k not in by]
    search = phase(trials, SEARCH)
    if not len(search) or metric not in search:
        return pd.DataFrame(columns=[*by, *over, "score", "ended"])
    s = _eligible(_scores(search, by, over, metric, mode), by)
    s = s.sort_values([*by, "score"], ascending=[True] * len(by) + [mode == "min"], kind="stable")
    s = s.groupby(by, sort=True, dropna=False).head(1) if by else s.head(1)
    return s[[*by, *over, "score", "ended"]].reset_index(drop=True)


def resampled_choice(trials: pd.DataFrame, manifest: dict, key: str, n: int = 2000, metric=None) -> np.ndarray:
    """How stable the choice is: the value of `key` that the rule chooses among `trials` (one scientific
    value's) when each eligible setting's seeds are resampled with replacement, `n` times from a fixed
    seed. A choice that rests on noise between close settings moves between resamples."""
    metric, mode = objective(manifest, metric)
    search = phase(trials, SEARCH)
    s = _eligible(_scores(search, [], keys_of(search, [key]), metric, mode), [])
    if not len(s):
        return np.array([])
    col, rng = f"config.{key}", np.random.default_rng(0)
    worst = -np.inf if mode == "max" else np.inf
    means = []
    for v in s[col]:
        x = search.loc[search[col] == v, metric].astype(float).to_numpy()
        x = np.where(np.isfinite(x), x, worst)
        means.append(x[rng.integers(0, len(x), (n, len(x)))].mean(axis=1))
    m = np.stack(means)
    pick = m.argmax(axis=0) if mode == "max" else m.argmin(axis=0)
    return s[col].to_numpy()[pick]


def best(trials: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    """The run's best configuration (one row, or none): the selection over every scientific and nuisance
    setting at once."""
    return selection(
        trials, manifest, by=[], over=list(dict.fromkeys([*manifest.get("scientific", []), *chosen(manifest)]))
    )


def matches(trials: pd.DataFrame, chosen: pd.DataFrame) -> pd.Series:
    """Whether each row of `trials` has one of the settings in `chosen` (its `config.*` columns; NaN
    matches NaN, a key a setting lacks)."""
    keys = [c for c in chosen.columns if c.startswith("config.")]
    if not keys:
        return pd.Series(len(chosen) > 0, index=trials.index)
    hit = trials[keys].merge(chosen[keys].drop_duplicates(), how="left", on=keys, indicator=True)["_merge"]
    return pd.Series((hit == "both").to_numpy(), index=trials.index)


def tuned_trials(
    trials: pd.DataFrame,
    manifest: dict,
    by: list[str] | None = None,
    over: list[str] | None = None,
    metric=None,
    report: str = "auto",
) -> pd.DataFrame:
    """The rows (seeds) at each group's chosen setting. `report`: "auto" gives the confirmation seeds of
    the chosen settings where the run has them, else the search seeds; "search" or "confirm" one phase."""
    chosen = selection(trials, manifest, by, over, metric)
    at = trials[matches(trials, chosen)]
    confirm = phase(at, CONFIRM)
    if report != "auto":
        return confirm if report == CONFIRM else phase(at, SEARCH)
    keys = [c for c in chosen.columns if c.startswith("config.")]
    confirmed = chosen[matches(chosen, confirm[keys])]
    # each chosen setting's confirmation seeds where it has them, else its search seeds
    return pd.concat([confirm, phase(at[~matches(at, confirmed)], SEARCH)]).sort_index()


def seeds_said(rows: pd.DataFrame) -> str:
    """Which seeds `rows` hold, for a figure's title: "confirmation seeds 3-5", "search seeds 0-2", or
    both, where some chosen settings were confirmed and the others read their search seeds."""
    said = []
    for which, name in ((CONFIRM, "confirmation"), (SEARCH, "search")):
        seeds = sorted(set(phase(rows, which)["config.seed"].dropna().astype(int)))
        if seeds:
            said.append(f"{name} seeds {seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else f"{name} seed {seeds[0]}")
    return " and ".join(said) if len(said) < 2 else f"{said[0]} where confirmed, else {said[1]}"


def mark_tuned(trials: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    """`trials` with a boolean `tuned` column: the rows at their scientific value's chosen setting (all
    rows of a study with nothing to tune)."""
    if not chosen(manifest):
        return trials.assign(tuned=True)
    return trials.assign(tuned=matches(trials, selection(trials, manifest)))
