"""Whole quick studies with the compiled training step (`--compile on`) and without (`--compile off`).

The recurrent studies whose models the `compiled` benchmark times: palindrome, arithmetic_shift and
lr_schedule, each its own default command with `--compile off`, then with `--compile on`, the same
seeds. Per study: both wall times (the whole command, alone on the machine) and every claim's verdict
in both arms, which must be equal: the compiled step trains the same numbers (tests/test_compile.py),
so a verdict that moves is a bug, not noise.
"""

from __future__ import annotations

import pandas as pd

from benchmarks.evaluation import trial_shares
from benchmarks.study_runs import study_run

STUDIES = ("palindrome", "arithmetic_shift", "lr_schedule")


def arms(names=STUDIES, budget: str = "quick") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(wall times, claims): one row per study, and one per claim with its verdict in each arm."""
    walls, claims = [], []
    for name in names:
        runs = {a: study_run(name, budget, arm=f"compile-{a}", flags=("--compile", a)) for a in ("off", "on")}
        off, on = runs["off"], runs["on"]
        verdicts = {a: r.claims.set_index("claim")["verdict"] for a, r in runs.items()}
        same = verdicts["off"].equals(verdicts["on"])
        walls.append(
            {
                "study": name,
                "budget": budget,
                "trials": off.n_trials,
                "off wall s": off.wall_s,
                "on wall s": on.wall_s,
                "speed-up": off.wall_s / on.wall_s,
                "off compute s": off.compute_s,
                "on compute s": on.compute_s,
                "eval % (median trial, off)": trial_shares(off.trials, off.curves).median(),
                "claims": len(verdicts["off"]),
                "verdicts equal": "yes" if same else "NO",
            }
        )
        for claim in verdicts["off"].index.union(verdicts["on"].index, sort=False):
            claims.append(
                {
                    "study": name,
                    "claim": claim,
                    "off": verdicts["off"].get(claim, "-"),
                    "on": verdicts["on"].get(claim, "-"),
                }
            )
    return pd.DataFrame(walls), pd.DataFrame(claims)


def run(quick: bool = False) -> tuple[list, list[str]]:
    budget = "smoke" if quick else "quick"
    walls, claims = arms(budget=budget)
    notes = [
        "each study's own command (`python -m studies.NAME --budget "
        f"{budget} --compile off|on`), one after the other, alone on the machine; wall s = the whole command "
        "(Ray, Tune, tables, figures, report), compute s = the sum of its Tune trials' own seconds",
        "verdicts equal: "
        + ("every claim has the same verdict in both arms" if (walls["verdicts equal"] == "yes").all() else "NOT"),
    ]
    return [
        (f"Quick studies with --compile off and on ({budget})", walls),
        ("Their claims' verdicts in both arms", claims),
    ], notes
