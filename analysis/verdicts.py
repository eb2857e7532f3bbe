"""Claims: what a study expects to find, and whether a run reproduced it.

A study's analysis module declares the findings of its hand-run reports as `Claim`s: a sentence,
the reference it comes from (number and source), and a check over the run's tables that returns a
`Verdict`: reproduced, contradicted, or inconclusive (with the reason). The checks are built from
the few rules below, so every verdict states the statistical rule that decided it:

- only seeds that ran to the end count (`ended`): a trial that ASHA stopped early is left out, and
  a diverged seed counts with what it ended at (accuracy 0);
- one seed never decides: fewer than 2 seeds that ran to the end is inconclusive;
- `greater` (A > B + margin): with >= 3 seeds each, the exact one-sided Mann-Whitney test (a
  permutation test of the rank statistic U over every split of the pooled seeds, ties counting
  half) at p <= 0.05: rank-based, so one seed far off (a run that sometimes learns and sometimes
  not) does not hide a difference, and with 3 seeds each it asks that every seed of A be above every
  seed of B; with 2 seeds each (where no split reaches 0.05), every seed of A above every seed of B.
  Where the splits are too many to list (more than 200,000: 12 seeds a side and up, when a claim
  pools settings), 20,000 random splits from a fixed seed stand in for them (a Monte Carlo
  permutation test, p = (1 + hits) / (1 + 20,000));
  The opposite, by the same rule, is contradicted; anything else inconclusive;
- `not_below` (A >= B): contradicted when B > A by the rule of `greater`; reproduced when A's mean
  is at least B's (less `tolerance`) and it is not; else inconclusive;
- `at_least` / `at_most` (A >= x): the whole spread of A (95% CI with >= 3 seeds, else min-max)
  on the claimed side of x is reproduced, the whole spread on the other side contradicted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from math import comb

import numpy as np
import pandas as pd

from analysis.data import spread

REPRODUCED, CONTRADICTED, INCONCLUSIVE = "reproduced", "contradicted", "inconclusive"
VERDICTS = (REPRODUCED, CONTRADICTED, INCONCLUSIVE)
ALPHA = 0.05
RULE_GREATER = (
    "exact one-sided Mann-Whitney test, p <= 0.05 (>= 3 seeds each); with 2 seeds, every seed of "
    "one side above every seed of the other"
)
EXACT_SPLITS = 200_000  # above this many splits of the pooled seeds, random ones stand in
PERMUTATIONS = 20_000
RULE_BOUND = "the whole spread over seeds (95% CI with >= 3 seeds, else min-max) on one side of the bound"


@dataclass(frozen=True)
class Verdict:
    verdict: str  # reproduced | contradicted | inconclusive
    value: str  # this run's value(s), with their spread over seeds
    rule: str = ""  # the statistical rule that decided
    why: str = ""  # why it is inconclusive (or a note)


@dataclass(frozen=True)
class Claim:
    text: str  # the sentence, as a researcher would write it
    reference: str  # where it comes from: the hand-run number and its source
    check: Callable  # (trials, curves, manifest) -> Verdict
    datasets: tuple[str, ...] = ()  # the data that can show it (empty: any); elsewhere inconclusive
    # the budgets long enough to show it (empty: any); at another budget only a reproduction counts,
    # anything else is inconclusive with the reason
    budgets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sample:
    """One side of a comparison: a label and its values over the seeds that ran to the end."""

    label: str
    values: np.ndarray = field(default_factory=lambda: np.array([]))
    left_out: int = 0  # seeds that ASHA stopped early (or that failed)
    digits: int = 3  # decimals when shown

    def text(self) -> str:
        if not len(self.values):
            return f"{self.label}: no seed ran to the end"
        return f"{self.label} {spread(self.values).text(self.digits)}"


def ended(trials: pd.DataFrame) -> pd.DataFrame:
    """The seeds that ran to the end of the budget (or diverged on the way): what claims rest on."""
    if "status" not in trials:
        return trials
    return trials[trials["status"].isin(["completed", "diverged"])]


def matching(trials: pd.DataFrame, **where) -> pd.DataFrame:
    """The trials whose config keys have the values of `where` (floats compared with a tolerance)."""
    t = trials
    for k, v in where.items():
        col = t[f"config.{k}"]
        t = t[np.isclose(col.astype(float), float(v))] if isinstance(v, float) else t[col == v]
    return t


def sample(trials: pd.DataFrame, label: str, metric: str, **where) -> Sample:
    """The values of `metric` over the seeds of the trials that match `where` (config keys)."""
    t = matching(trials, **where)
    e = ended(t)
    v = e[metric].astype(float).to_numpy() if metric in e else np.array([])
    return Sample(label, v[np.isfinite(v)], len(t) - len(e))


def tuned(
    trials: pd.DataFrame, manifest: dict, label: str, metric: str, select: str = "metric.val_acc", **where
) -> Sample:
    """`sample` at the tuned nuisance values: among the trials that match `where`, the nuisance setting
    (`manifest["nuisance"]`) whose mean of `select` over the seeds that ran to the end is best (by the
    study's mode), then `metric` over that setting's seeds. Select on validation, report on test:
    `tuned(trials, manifest, "Adam", "metric.test_acc", optimizer="adam")`."""
    t = matching(trials, **where)
    keys = [f"config.{k}" for k in manifest.get("nuisance", []) if f"config.{k}" in t]
    e = ended(t)
    if keys and len(e):
        means = e.groupby(keys)[select].mean()
        best = means.idxmin() if manifest.get("mode", "max") == "min" else means.idxmax()
        best = best if isinstance(best, tuple) else (best,)
        for k, v in zip(keys, best):
            t = t[t[k] == v]
    return sample(t, label, metric)


def _too_few(*samples: Sample) -> str | None:
    short = [s for s in samples if len(s.values) < 2]
    if not short:
        return None
    return (
        "; ".join(
            f"{s.label}: {len(s.values)} seed{'s' if len(s.values) != 1 else ''} ran to the end"
            + (f" ({s.left_out} stopped early)" if s.left_out else "")
            for s in short
        )
        + ": one seed never decides"
    )


def u_p_value(a: np.ndarray, b: np.ndarray) -> float:
    """Exact one-sided p-value of the Mann-Whitney U statistic (A above B): the share of all the
    ways to split the pooled values into groups of len(a) and len(b) whose U is at least the
    observed one. Ties count half. Exact for any ties and the few seeds of a study; random splits from
    a fixed seed stand in where there are more than EXACT_SPLITS."""

    def u(x, y):
        return float((x[:, None] > y[None, :]).sum() + 0.5 * (x[:, None] == y[None, :]).sum())

    pooled, n = np.concatenate([a, b]), len(a)
    observed = u(a, b)
    if comb(len(pooled), n) > EXACT_SPLITS:  # a Monte Carlo permutation test, from a fixed seed
        order = np.argsort(np.random.default_rng(0).random((PERMUTATIONS, len(pooled))), axis=1)
        x, y = pooled[order[:, :n]][:, :, None], pooled[order[:, n:]][:, None, :]
        us = (x > y).sum(axis=(1, 2)) + 0.5 * (x == y).sum(axis=(1, 2))
        return float((1 + (us >= observed - 1e-12).sum()) / (1 + PERMUTATIONS))
    splits = [np.array(c) for c in combinations(range(len(pooled)), n)]
    hits = sum(u(pooled[c], np.delete(pooled, c)) >= observed - 1e-12 for c in splits)
    return hits / len(splits)


def _apart(a: np.ndarray, b: np.ndarray, margin: float) -> bool:
    """A > B + margin by the rule in the module docstring."""
    if min(len(a), len(b)) >= 3:
        return u_p_value(a - margin, b) <= ALPHA
    return bool(a.min() - margin > b.max())


def _pair(a: Sample, b: Sample, rule: str, holds, fails, undecided: str) -> Verdict:
    """The verdict on a claim about two samples: `fails()` contradicts it, else `holds()` reproduces it."""
    value = f"{a.text()} vs {b.text()}"
    why = _too_few(a, b)
    if why:
        return Verdict(INCONCLUSIVE, value, rule, why)
    if fails():
        return Verdict(CONTRADICTED, value, rule)
    if holds():
        return Verdict(REPRODUCED, value, rule)
    return Verdict(INCONCLUSIVE, value, rule, undecided)


def greater(a: Sample, b: Sample, margin: float = 0.0) -> Verdict:
    """Claim: A > B + margin."""
    return _pair(
        a,
        b,
        RULE_GREATER,
        lambda: _apart(a.values, b.values, margin),
        lambda: _apart(b.values, a.values, -margin),
        "the seeds do not separate the two",
    )


RULE_NOT_BELOW = "not below: the mean at least the other's, and the other not above it by the rule of 'greater'"


def not_below(a: Sample, b: Sample, tolerance: float = 0.0) -> Verdict:
    """Claim: A >= B (A is not worse than B)."""
    return _pair(
        a,
        b,
        RULE_NOT_BELOW,
        lambda: a.values.mean() >= b.values.mean() - tolerance,
        lambda: _apart(b.values, a.values, tolerance),
        "the mean is below the other's, but the seeds do not separate them",
    )


def at_least(a: Sample, bound: float, at_most: bool = False) -> Verdict:
    """Claim: A >= bound (or A <= bound with at_most=True)."""
    value = f"{a.text()} ({'<=' if at_most else '>='} {bound:g} claimed)"
    why = _too_few(a)
    if why:
        return Verdict(INCONCLUSIVE, value, RULE_BOUND, why)
    s = spread(a.values)
    lo, hi = (-s.hi, -s.lo) if at_most else (s.lo, s.hi)
    b = -bound if at_most else bound
    if lo >= b:
        return Verdict(REPRODUCED, value, RULE_BOUND)
    if hi < b:
        return Verdict(CONTRADICTED, value, RULE_BOUND)
    return Verdict(INCONCLUSIVE, value, RULE_BOUND, "the spread over seeds straddles the bound")


def every(verdicts: Sequence[Verdict]) -> Verdict:
    """A claim made of several parts: reproduced when every part is, contradicted when any part is."""
    value = "; ".join(v.value for v in verdicts)
    rule = (
        verdicts[0].rule if len({v.rule for v in verdicts}) == 1 else "; ".join(dict.fromkeys(v.rule for v in verdicts))
    )
    kinds = {v.verdict for v in verdicts}
    if CONTRADICTED in kinds:
        return Verdict(CONTRADICTED, value, rule)
    if kinds == {REPRODUCED}:
        return Verdict(REPRODUCED, value, rule)
    return Verdict(INCONCLUSIVE, value, rule, "; ".join(v.why for v in verdicts if v.why))


def dataset_of(manifest: dict) -> str | None:
    return (manifest.get("fixed") or {}).get("dataset")


def evaluate(claims: Sequence[Claim], trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    """The claims table of a run: claim, reference, this run's value, verdict, rule, and why."""
    rows = []
    for c in claims:
        data = dataset_of(manifest)
        if c.datasets and data not in c.datasets:
            v = Verdict(INCONCLUSIVE, "–", "", f"needs {' or '.join(c.datasets)}; this run used {data}")
        else:
            try:
                v = c.check(trials, curves, manifest)
            except (KeyError, ValueError, IndexError) as e:  # a run without the values the claim reads
                v = Verdict(INCONCLUSIVE, "–", "", f"this run lacks what the claim reads ({type(e).__name__}: {e})")
            budget = manifest.get("budget")
            if c.budgets and budget not in c.budgets and v.verdict != REPRODUCED:
                v = Verdict(
                    INCONCLUSIVE,
                    v.value,
                    v.rule,
                    f"needs --budget {' or '.join(c.budgets)}; at {budget}: "
                    f"{v.verdict}" + (f" ({v.why})" if v.why else ""),
                )
        rows.append(
            {
                "claim": c.text,
                "reference": c.reference,
                "value": v.value,
                "verdict": v.verdict,
                "rule": v.rule,
                "why": v.why,
            }
        )
    return pd.DataFrame(rows, columns=["claim", "reference", "value", "verdict", "rule", "why"])


def counts(table: pd.DataFrame) -> dict[str, int]:
    """{'reproduced': n, 'contradicted': n, 'inconclusive': n}."""
    return {v: int((table["verdict"] == v).sum()) if len(table) else 0 for v in VERDICTS}
