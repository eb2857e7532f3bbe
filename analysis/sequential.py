"""Seeds as many as a claim needs: a sequential test over the confirmation seeds.

The confirmation trains each chosen configuration on fresh seeds (as many as the search's, at least 3).
A comparison still undecided there gets more: the confirmation runs again on the next fresh seeds, in
looks of twice as many seeds a side (3, 6, 12, ...), up to the cap that the budget (`Budget.max_seeds`)
or `--max-seeds` sets. Looking more than once raises the chance of a false positive, so each look
decides at its share of ALPHA: 0.05 split evenly over the planned looks (Bonferroni), which keeps a
claim's overall false-positive rate at most 0.05 whichever look decides it. A claim is decided at the
first look that decides it, and keeps that verdict; still undecided at the cap, it is inconclusive with
its p-value and the seeds it would need. With one planned look (the cap at the confirmation's seeds,
the default) the test is the plain one at 0.05.

With 3 seeds a side, the exact Mann-Whitney p is at least 1/20 = 0.05: at a share of 0.05 below that,
a first look of 3 seeds decides bounds and equivalences only, never "A > B"; a look of 6 can (p >= 1/924).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

import analysis.verdicts as verdicts
from analysis.selection import CONFIRM
from analysis.verdicts import ALPHA, INCONCLUSIVE, MIN_SEEDS, Claim, at_alpha


def looks(first: int, cap: int | None) -> list[int]:
    """The planned confirmation seeds a side at each look: `first`, doubled at each look, up to `cap`."""
    out = [first]
    while cap and out[-1] < cap:
        out.append(min(2 * out[-1], cap))
    return out


def level(plan: Sequence[int]) -> float:
    """The level each look decides at."""
    return ALPHA / max(len(plan), 1)


def rule(plan: Sequence[int]) -> str:
    """The sequential rule, as the report states it."""
    if len(plan) <= 1:
        return f"one look at {plan[0] if plan else 0} confirmation seeds a side, at p <= {ALPHA:g}"
    return (
        f"looks at {', '.join(map(str, plan))} confirmation seeds a side, each at p <= {level(plan):.3g} "
        f"({ALPHA:g} / {len(plan)} planned looks, Bonferroni); a claim keeps the verdict of the first look "
        "that decides it"
    )


def at_look(table: pd.DataFrame, n: int) -> pd.DataFrame:
    """A table's rows as they stood at the look of `n` confirmation seeds: the search's rows and the
    confirmation's first `n` seeds."""
    if not len(table) or "phase" not in table or "config.seed" not in table:
        return table
    confirm = table["phase"] == CONFIRM
    seeds = sorted(table.loc[confirm, "config.seed"].dropna().unique())[:n]
    return table[~confirm | table["config.seed"].isin(seeds)]


def held(trials: pd.DataFrame, plan: Sequence[int]) -> list[int]:
    """The planned looks whose confirmation seeds the run holds (at least the first)."""
    n = trials.loc[trials["phase"] == CONFIRM, "config.seed"].nunique() if "phase" in trials else 0
    return [k for k in plan if k <= n] or list(plan[:1])


def undecided(row) -> bool:
    """A verdict that more seeds could decide: an inconclusive comparison (with its p-value) or one with
    too few seeds, neither waiting for another budget or dataset nor for a model that has not learned."""
    why, p = str(row["why"]), row["p"]
    seeds = (isinstance(p, float) and math.isfinite(p)) or f"fewer than {MIN_SEEDS} seeds" in why
    return row["verdict"] == INCONCLUSIVE and seeds and not why.startswith(("needs ", "not learned"))


def evaluate(claims: Sequence[Claim], trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    """The claims table (`verdicts.evaluate`) with each claim's `look`: decided at the first look that
    decides it, at that look's level; where none does, the last look's row."""
    plan = list(manifest.get("looks") or [])
    if len(plan) <= 1 or "phase" not in trials:
        table = verdicts.evaluate(claims, trials, curves, manifest)
        return table.assign(look="1 of 1" if plan else "")
    rows, done = {}, held(trials, plan)
    with at_alpha(level(plan)):
        for k, n in enumerate(done, 1):
            table = verdicts.evaluate(claims, at_look(trials, n), at_look(curves, n), manifest)
            for i, row in table.iterrows():
                if i in rows and not undecided(rows[i]):
                    continue
                rows[i] = row.copy()
                waits = str(row["why"]).startswith("needs ")  # another budget or dataset: seeds do not matter
                rows[i]["look"] = "" if waits else f"{k} of {len(plan)} ({n} seed{'s' if n != 1 else ''})"
    table = pd.DataFrame([rows[i] for i in sorted(rows)], columns=[*verdicts.COLUMNS, "look"])
    return table.reset_index(drop=True)


def open_claims(table: pd.DataFrame) -> int:
    """How many claims more seeds could decide."""
    return int(sum(undecided(r) for _, r in table.iterrows())) if len(table) else 0
