"""The cost of recording every trial in Optuna's database (`studies.engine.record`): what the
driver spends in the searcher's calls with the studies in a SQLite file (RDBStorage, WAL) against
the same searcher with Optuna's in-memory studies.

- Per call: `studies.engine.search.GridSearch` as optimizer_comparison's quick budget builds it (4
  optimizers x 6 Optuna lrs, TPE, 2 seeds), driven as Tune drives it: every trial suggested, then its
  reports (`on_trial_result`, one per iteration) and its end (`on_trial_complete`). Milliseconds per
  call, the median of `ROUNDS` rounds, each round a fresh searcher (a new database file in a temporary
  folder on the disk of the results, `./results`); the two arms alternate.
- In a real study (`--quick`: its smoke budget): the seconds the driver spent inside the searcher's
  calls (suggest, report, end: every database write of the run), timed by wrapping them in this
  process, against the run's wall time. The target: at most 2% (`TARGET`). The searcher runs on the
  driver while the trials train in their workers, so this is an upper bound of what the writes add.
"""

from __future__ import annotations

import functools
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

TARGET = 0.02  # the most the database may take of a quick study's wall time
ROUNDS = 5
ITERATIONS = 10  # reports per trial in the per-call benchmark (the quick image studies' epochs, about)


def _searcher(folder: str | None):
    from ray.tune.search.optuna import OptunaSearch

    from studies.engine.record import Record
    from studies.engine.search import GridSearch
    from studies.optimizer_comparison import STUDY

    b = STUDY.budgets["quick"]
    seeds = list(range(b.seeds))
    record = None
    if folder is not None:
        space = OptunaSearch.convert_search_space(STUDY.search)
        url = f"sqlite:///{folder}/optuna.db"
        record = Record(url, "bench/quick", STUDY.grid, space, "search", STUDY.metric, STUDY.mode)
    fixed = {"iterations": ITERATIONS}
    return GridSearch(STUDY.grid, seeds, fixed, STUDY.metric, STUDY.mode, STUDY.search, b.samples, STUDY.search_first,
                      record=record), seeds  # fmt: skip


def drive(folder: str | None) -> dict[str, float]:
    """One round: a searcher's every call as Tune makes them; seconds per call of each kind."""
    s, seeds = _searcher(folder)
    times = {"suggest": [], "report": [], "complete": []}
    ids = []
    while True:
        t = time.perf_counter()
        got = s.suggest(f"t{len(ids)}")
        if got == s.FINISHED:
            break
        times["suggest"].append(time.perf_counter() - t)
        ids.append(f"t{len(ids)}")
    for k, tid in enumerate(ids):
        for it in range(1, ITERATIONS + 1):
            value = 0.5 + 0.04 * it - 0.01 * (k % 7)
            result = {"val_acc": value, "training_iteration": it, **{f"seed{x}/val_acc": value for x in seeds}}
            t = time.perf_counter()
            s.on_trial_result(tid, result)
            times["report"].append(time.perf_counter() - t)
        t = time.perf_counter()
        s.on_trial_complete(tid, result)
        times["complete"].append(time.perf_counter() - t)
    return {k: statistics.mean(v) for k, v in times.items()}


def per_call(rounds: int = ROUNDS) -> pd.DataFrame:
    root = Path("results")
    root.mkdir(exist_ok=True)
    arms = {"in memory": [], "SQLite (RDBStorage)": []}
    for _ in range(rounds):
        arms["in memory"].append(drive(None))
        with tempfile.TemporaryDirectory(prefix=".bench-db-", dir=root) as d:
            arms["SQLite (RDBStorage)"].append(drive(d))
    rows = []
    for kind in ("suggest", "report", "complete"):
        mem = statistics.median(r[kind] for r in arms["in memory"]) * 1e3
        db = statistics.median(r[kind] for r in arms["SQLite (RDBStorage)"]) * 1e3
        rows.append({"call": kind, "in memory ms": mem, "database ms": db, "extra ms": db - mem})
    return pd.DataFrame(rows)


class _Timed:
    """The seconds this process spends in the searcher's calls, while installed."""

    def __init__(self):
        from studies.engine.search import GridSearch

        self.cls, self.seconds, self.calls, self.saved = GridSearch, 0.0, 0, {}

    def __enter__(self):
        for name in ("suggest", "on_trial_result", "on_trial_complete"):
            orig = self.saved[name] = getattr(self.cls, name)

            @functools.wraps(orig)
            def timed(*a, _orig=orig, **k):
                t = time.perf_counter()
                try:
                    return _orig(*a, **k)
                finally:
                    self.seconds += time.perf_counter() - t
                    self.calls += 1

            setattr(self.cls, name, timed)
        return self

    def __exit__(self, *exc):
        for name, orig in self.saved.items():
            setattr(self.cls, name, orig)


def in_a_study(name: str, budget: str) -> dict:
    from benchmarks.study_runs import study_run

    with _Timed() as timer:
        r = study_run(name, budget, arm="database")
    return {
        "study": name,
        "budget": budget,
        "trials": r.n_trials,
        "searcher calls": timer.calls,
        "in the searcher s": timer.seconds,
        "wall s": r.wall_s,
        "share of wall": timer.seconds / r.wall_s,
        "load": r.load,
    }


def run(quick: bool = False):
    calls = per_call(2 if quick else ROUNDS)
    budget = "smoke" if quick else "quick"
    studies = pd.DataFrame([in_a_study("optimizer_comparison", budget)])
    share = float(studies["share of wall"].max())
    extra = calls.set_index("call")["extra ms"]
    notes = [
        f"per report the database adds {extra['report']:.2f} ms, per trial {extra['suggest']:.1f} ms at its "
        f"suggestion and {extra['complete']:.1f} ms at its end (medians of {2 if quick else ROUNDS} rounds)",
        f"in the {budget} study the driver spent {share:.2%} of the wall time in the searcher's calls, every "
        f"database write included: {'within' if share <= TARGET else 'above'} the {TARGET:.0%} target",
    ]
    import os

    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1) * 0.75:
        notes.append(f"the machine was shared with other work (1-minute load {load:.1f} on {os.cpu_count()} cores)")
    return [("Per call of the searcher (optimizer_comparison's quick searcher)", calls),
            ("In a real study run", studies)], notes  # fmt: skip
