"""Claims: what a study expects to find, and whether a run reproduced it.

A study's analysis module declares the findings of its hand-run reports as `Claim`s: a sentence,
the reference it comes from (number and source), and a check over the run's tables that returns a
`Verdict`: reproduced, contradicted, or inconclusive (with the reason). The checks are built from
the few rules below, so every verdict states the statistical rule that decided it:

- only seeds that ran to the end count (`ended`): a trial that ASHA stopped early is left out, and
  a diverged seed counts with what it ended at (accuracy 0);
- no decision rests on fewer than 3 seeds a side (`MIN_SEEDS`): with 2 seeds a side, "every seed of
  A above every seed of B" happens by chance in 1 of 6 splits (p = 1/6), so fewer is inconclusive;
- `greater` (A > B + margin): the exact one-sided Mann-Whitney test (a permutation test of the rank
  statistic U over every split of the pooled seeds, ties counting half) at p <= 0.05: rank-based, so one
  seed far off (a run that sometimes learns and sometimes not) does not hide a difference; with 3 seeds
  each it asks that every seed of A be above every seed of B. Where the splits are too many to list
  (more than 200,000: 12 seeds a side and up, when a claim pools settings), 20,000 random splits from a
  fixed seed stand in for them (a Monte Carlo permutation test, p = (1 + hits) / (1 + 20,000)). The
  opposite, by the same rule, is contradicted; anything else inconclusive;
- `not_below` (A >= B): contradicted when B > A by the rule of `greater`; reproduced when A's mean
  is at least B's (less `tolerance`) and it is not; else inconclusive;
- `about_equal` (A ≈ B within a stated margin): an equivalence test (TOST, two one-sided tests at 0.05):
  reproduced when the 90% bootstrap interval of the difference of the means lies inside ±margin,
  contradicted when A and B differ by more than the margin by the rule of `greater`, else inconclusive;
  `ratio=True` compares on logs (a margin of 0.1 is "within 10%");
- `at_least` / `at_most` (A >= x): the whole spread of A (95% CI) on the claimed side of x is
  reproduced, the whole spread on the other side contradicted;
- `learned`: a claim that compares what models learned is inconclusive unless each compared model is
  above a stated floor (above chance);
- every comparison reports its effect: the difference of the means with its 95% bootstrap interval
  (10,000 resamples of the seeds of each side, from a fixed seed), the p-value and the seeds a side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from itertools import combinations
from math import ceil, comb
from statistics import NormalDist

import numpy as np
import pandas as pd

from analysis.data import spread
from analysis.selection import tuned_trials

REPRODUCED, CONTRADICTED, INCONCLUSIVE = "reproduced", "contradicted", "inconclusive"
VERDICTS = (REPRODUCED, CONTRADICTED, INCONCLUSIVE)
ALPHA = 0.05
MIN_SEEDS = 3  # no decision rests on fewer seeds a side
RULE_GREATER = "exact one-sided Mann-Whitney test, p <= 0.05, >= 3 seeds a side"
EXACT_SPLITS = 200_000  # above this many splits of the pooled seeds, random ones stand in
PERMUTATIONS = 20_000
RULE_BOUND = "the whole 95% CI over seeds (>= 3 seeds) on one side of the bound"
BOOTSTRAP = 10_000
_ALPHA: ContextVar[float] = ContextVar("alpha", default=ALPHA)


def alpha() -> float:
    """The level every test decides at: ALPHA, or a look's share of it (`at_alpha`, `analysis.sequential`)."""
    return _ALPHA.get()


@contextmanager
def at_alpha(level: float):
    """Decide the checks run inside at `level` (one look of a sequential test)."""
    token = _ALPHA.set(level)
    try:
        yield
    finally:
        _ALPHA.reset(token)


@dataclass(frozen=True)
class Verdict:
    verdict: str  # reproduced | contradicted | inconclusive
    value: str  # this run's value(s), with their spread over seeds
    rule: str = ""  # the statistical rule that decided
    why: str = ""  # why it is inconclusive (or a note)
    effect: str = ""  # the difference with its 95% interval (comparisons)
    p: float = float("nan")  # the p-value of the test that decided (comparisons)
    seeds: str = ""  # seeds a side, "3 vs 3"


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


def tuned(trials: pd.DataFrame, manifest: dict, label: str, metric: str, select: str | None = None, **where) -> Sample:
    """`sample` at the tuned nuisance values (`analysis.selection`): among the trials that match `where`,
    the nuisance setting chosen on validation (`select`, default the study's objective), then `metric`
    over that setting's seeds (its confirmation seeds where the run has them). Select on validation,
    report on test: `tuned(trials, manifest, "Adam", "metric.test_acc", optimizer="adam")`."""
    t = matching(trials, **where)
    return sample(tuned_trials(t, manifest, by=[], metric=select), label, metric)


def _too_few(*samples: Sample) -> str | None:
    short = [s for s in samples if len(s.values) < MIN_SEEDS]
    if not short:
        return None
    return (
        "; ".join(
            f"{s.label}: {len(s.values)} seed{'s' if len(s.values) != 1 else ''} ran to the end"
            + (f" ({s.left_out} stopped early)" if s.left_out else "")
            for s in short
        )
        + f": no decision rests on fewer than {MIN_SEEDS} seeds a side"
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
    return u_p_value(a - margin, b) <= alpha()


def difference(a: np.ndarray, b: np.ndarray, level: float = 0.95, paired: bool = False) -> tuple[float, float, float]:
    """The difference of the means, A − B, with its `level` percentile bootstrap interval: each side's
    seeds resampled with replacement, BOOTSTRAP times, from a fixed seed (`paired`: the same seeds on both
    sides, a[i] and b[i] from one seed, resampled together)."""
    rng = np.random.default_rng(0)
    ia = rng.integers(0, len(a), (BOOTSTRAP, len(a)))
    da = a[ia].mean(axis=1)
    db = b[ia if paired else rng.integers(0, len(b), (BOOTSTRAP, len(b)))].mean(axis=1)
    lo, hi = np.quantile(da - db, [(1 - level) / 2, (1 + level) / 2])
    return float(a.mean() - b.mean()), float(lo), float(hi)


def _effect(a: Sample, b: Sample) -> dict:
    """The effect fields of a comparison: the difference with its 95% interval, and the seeds a side."""
    seeds = f"{len(a.values)} vs {len(b.values)}"
    if not (len(a.values) and len(b.values)):
        return {"seeds": seeds}
    d, lo, hi = difference(a.values, b.values)
    n = max(a.digits, b.digits)
    return {"effect": f"{d:+.{n}f} [{lo:+.{n}f}, {hi:+.{n}f}]", "seeds": seeds}


def _pair(a: Sample, b: Sample, rule: str, holds, fails, undecided: str, p=None) -> Verdict:
    """The verdict on a claim about two samples: `fails()` contradicts it, else `holds()` reproduces it.
    `p()`: the p-value reported beside it (default: the one-sided test of A above B)."""
    value, fx = f"{a.text()} vs {b.text()}", _effect(a, b)
    why = _too_few(a, b)
    if why:
        return Verdict(INCONCLUSIVE, value, rule, why, **fx)
    fx["p"] = p() if p else u_p_value(a.values, b.values)
    if fails():
        return Verdict(CONTRADICTED, value, rule, **fx)
    if holds():
        return Verdict(REPRODUCED, value, rule, **fx)
    return Verdict(INCONCLUSIVE, value, rule, undecided + needed(a.values, b.values), **fx)


def needed(a: np.ndarray, b: np.ndarray, power: float = 0.8) -> str:
    """What an undecided comparison would take: the seeds a side at which the observed difference, in
    units of the pooled standard deviation, decides at the current level with `power` (the normal
    approximation of the Mann-Whitney test, efficiency 3/pi against the t test)."""
    sd = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    d = abs(a.mean() - b.mean()) / sd if sd > 0 else 0.0
    if not d:
        return "; no difference between the means to detect"
    z = NormalDist().inv_cdf(1 - alpha()) + NormalDist().inv_cdf(power)
    return f"; about {ceil(2 * (z / d) ** 2 / (3 / np.pi))} seeds a side would decide it (80% power)"


def greater(a: Sample, b: Sample, margin: float = 0.0) -> Verdict:
    """Claim: A > B + margin."""
    return _pair(
        a,
        b,
        RULE_GREATER,
        lambda: _apart(a.values, b.values, margin),
        lambda: _apart(b.values, a.values, -margin),
        "the seeds do not separate the two",
        lambda: u_p_value(a.values - margin, b.values),
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
        lambda: u_p_value(b.values - tolerance, a.values),
    )


def rule_equal(margin: float, ratio: bool) -> str:
    what = f"within {margin:.0%} (on logs)" if ratio else f"within ±{margin:g}"
    return (
        f"about equal {what}: TOST, the {1 - 2 * alpha():.0%} bootstrap interval of the difference inside the margin; "
        "contradicted when they differ by more than the margin by the rule of 'greater'"
    )


def about_equal(a: Sample, b: Sample, margin: float, ratio: bool = False, paired: bool = False) -> Verdict:
    """Claim: A ≈ B, |A − B| <= margin (an equivalence test, TOST at 0.05). With `ratio`, on the logs of
    the values: A / B within [1 / (1 + margin), 1 + margin]. With `paired`, A and B hold the same seeds in
    the same order (two implementations from the same initial weights): the seed-by-seed differences
    are resampled together."""
    paired = paired and len(a.values) == len(b.values)
    if ratio:
        m = float(np.log1p(margin))
        a_, b_ = (Sample(s.label, np.log(s.values), s.left_out, s.digits) for s in (a, b))
    else:
        m, a_, b_ = margin, a, b
    why = _too_few(a, b)
    tost = lambda: difference(a_.values, b_.values, 1 - 2 * alpha(), paired)  # noqa: E731
    v = _pair(
        a,
        b,
        rule_equal(margin, ratio) + ("; seed by seed" if paired else ""),
        lambda: -m <= tost()[1] and tost()[2] <= m,
        lambda: _apart(a_.values, b_.values, m) or _apart(b_.values, a_.values, m),
        "the interval of the difference reaches past the margin: the seeds do not show equivalence",
        lambda: max(u_p_value(a_.values + m, b_.values), u_p_value(b_.values + m, a_.values)),
    )
    if why:
        return v
    if not ratio:
        if not paired:
            return v
        d, lo, hi = difference(a.values, b.values, paired=True)
        n = max(a.digits, b.digits)
        return replace(v, effect=f"{d:+.{n}f} [{lo:+.{n}f}, {hi:+.{n}f}] seed by seed")
    d, lo, hi = difference(a_.values, b_.values, paired=paired)
    return replace(v, effect=f"ratio {np.exp(d):.3f} [{np.exp(lo):.3f}, {np.exp(hi):.3f}]")


def at_least(a: Sample, bound: float, at_most: bool = False) -> Verdict:
    """Claim: A >= bound (or A <= bound with at_most=True)."""
    value = f"{a.text()} ({'<=' if at_most else '>='} {bound:g} claimed)"
    why = _too_few(a)
    if why:
        return Verdict(INCONCLUSIVE, value, RULE_BOUND, why, seeds=str(len(a.values)))
    s = spread(a.values, 1 - alpha())
    lo, hi = (-s.hi, -s.lo) if at_most else (s.lo, s.hi)
    b = -bound if at_most else bound
    fx = {"effect": f"{s.mean - bound:+.{a.digits}f} [{s.lo - bound:+.{a.digits}f}, {s.hi - bound:+.{a.digits}f}]"}
    fx["seeds"] = str(len(a.values))
    if lo >= b:
        return Verdict(REPRODUCED, value, RULE_BOUND, **fx)
    if hi < b:
        return Verdict(CONTRADICTED, value, RULE_BOUND, **fx)
    return Verdict(INCONCLUSIVE, value, RULE_BOUND, "the spread over seeds straddles the bound", **fx)


def learned(
    verdict: Verdict, floor: float, *samples: Sample, chance: float | None = None, below: bool = False
) -> Verdict:
    """A claim about what models learned holds only where each compared model learned: every sample's
    mean at least `floor` (a stated level above chance; at most `floor` with `below`, for a perplexity);
    otherwise the verdict is inconclusive."""
    ok = (lambda m: m <= floor) if below else (lambda m: m >= floor)
    short = [s for s in samples if not len(s.values) or not ok(s.values.mean())]
    side = "at most" if below else "at least"
    rule = f"{verdict.rule}; each compared model {side} {floor:g} (learned" + (
        f"; chance {chance:g})" if chance is not None else ")"
    )
    if not short:
        return replace(verdict, rule=rule)
    names = ", ".join(f"{s.label} {s.values.mean():.{s.digits}f}" if len(s.values) else s.label for s in short)
    word = "above" if below else "below"
    return replace(verdict, verdict=INCONCLUSIVE, rule=rule, why=f"not learned ({word} {floor:g}): {names}")


RANKING = "'>' where the seeds separate neighbours by the rule of 'greater', '~' where they do not"


def ranking(samples: Sequence[Sample]) -> str:
    """The samples from the highest mean down, '>' between neighbours that the seeds separate (the rule
    of `greater`), '~' between those they do not: never a '>' between overlapping seeds."""
    s = sorted((x for x in samples if len(x.values)), key=lambda x: -x.values.mean())
    out = s[0].text() if s else ""
    for a, b in zip(s, s[1:]):
        out += (" > " if greater(a, b).verdict == REPRODUCED else " ~ ") + b.text()
    return out


def every(verdicts: Sequence[Verdict]) -> Verdict:
    """A claim made of several parts: reproduced when every part is, contradicted when any part is."""
    value = "; ".join(v.value for v in verdicts)
    rule = (
        verdicts[0].rule if len({v.rule for v in verdicts}) == 1 else "; ".join(dict.fromkeys(v.rule for v in verdicts))
    )
    fx = {
        "effect": "; ".join(v.effect for v in verdicts if v.effect),
        "p": max((v.p for v in verdicts if np.isfinite(v.p)), default=float("nan")),
        "seeds": "; ".join(v.seeds for v in verdicts if v.seeds),
    }
    kinds = {v.verdict for v in verdicts}
    if CONTRADICTED in kinds:
        return Verdict(CONTRADICTED, value, rule, **fx)
    if kinds == {REPRODUCED}:
        return Verdict(REPRODUCED, value, rule, **fx)
    return Verdict(INCONCLUSIVE, value, rule, "; ".join(v.why for v in verdicts if v.why), **fx)


COLUMNS = ["claim", "reference", "value", "verdict", "rule", "why", "effect", "p", "seeds"]


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
                v = replace(
                    v,
                    verdict=INCONCLUSIVE,
                    why=f"needs --budget {' or '.join(c.budgets)}; at {budget}: "
                    f"{v.verdict}" + (f" ({v.why})" if v.why else ""),
                )
        rows.append({"claim": c.text, "reference": c.reference, **{k: getattr(v, k) for k in COLUMNS[2:]}})
    return pd.DataFrame(rows, columns=COLUMNS)


def counts(table: pd.DataFrame) -> dict[str, int]:
    """{'reproduced': n, 'contradicted': n, 'inconclusive': n}."""
    return {v: int((table["verdict"] == v).sum()) if len(table) else 0 for v in VERDICTS}
