"""The confirmation phase: after the search, the configuration chosen for each scientific value is
trained again on fresh seeds, disjoint from the search seeds, and the claims, the headline figures and
the best configuration rest on those runs (`analysis.selection`). The choice is made by the one
selection rule on the search's validation objective, so the confirmation seeds report a value that the
selection did not see: the winner's score is not inflated by its own choice.

The confirmation is a second Tune experiment in the same Ray session (`<run>/tune/confirm`), a grid of
the chosen configurations, every trial run to the end (no ASHA), with the same trainable, retries,
checkpoints and resume as the search. Its rows carry `phase` = "confirm", the search's "search".

A study confirms when its budget selects something: its nuisance search with more than one sample per
scientific value (the tuned values), or the scientific keys it names in `Study.select` (the best lr of an
lr scan). A grid with neither, or a budget that tries one nuisance setting per scientific value (nothing
to choose between: its search seeds are no selection's winners), has nothing to confirm; `--no-confirm`
skips the phase."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd

from analysis.selection import CONFIRM, SEARCH, selection
from analysis.sequential import looks, open_claims

MIN_CONFIRM = 3  # confirmation seeds: no decision rests on fewer than 3 seeds a side


def selection_manifest(p) -> dict:
    """What the selection rule reads of a run (the manifest's keys), from its plan."""
    study = p.study
    return {
        "scientific": study.scientific,
        "select": list(study.select),
        "nuisance": list(study.search),
        "metric": study.metric,
        "mode": study.mode,
    }


def chooses(p) -> bool:
    """Whether a plan's run selects anything: `Study.select` keys, or a nuisance search with more than one
    sample per scientific value (one sample is the only candidate: nothing is chosen, nothing to confirm)."""
    return bool(p.study.select) or (bool(p.study.search) and p.budget.samples > 1)


def confirm_seeds(seeds: list[int], budget: str = "") -> list[int]:
    """Fresh seeds for the confirmation, the next after the search seeds, so the two sets never overlap:
    as many as the search's, at least 3 (at the smoke budget, a test of the machinery, as many)."""
    n = len(seeds) if budget == "smoke" else max(MIN_CONFIRM, len(seeds))
    return list(range(max(seeds) + 1, max(seeds) + 1 + n))


def _same(cell, value) -> bool:
    """Whether a table cell holds a config's value, as `results` writes it (sequences as '128-64', None as
    a missing cell; floats within rounding)."""
    from studies.engine.results import _value

    value = _value(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return cell is None or (isinstance(cell, float) and math.isnan(cell))
    if isinstance(cell, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return abs(cell - value) <= 1e-12 * max(1.0, abs(cell), abs(value))
    return cell == value or str(cell) == str(value)


def configs(trials: pd.DataFrame, p) -> list[dict]:
    """The configurations to confirm: for each scientific value, the point of the plan's grid with the
    chosen values of the selected keys (`selection` on the search trials), and beside it the hand-run
    setting (`search_first`) where the study asks for it (`confirm_first`: claims compare the two on the
    same seeds).
    Empty where the study selects nothing or no setting ran to the end."""
    if not chooses(p) or not len(trials):
        return []
    hand = {k: v for k, v in p.study.search_first.items() if k in p.study.search} if p.study.confirm_first else {}
    wanted = getattr(getattr(p, "budget", None), "confirm", None)  # the values this budget confirms (None: all)
    out = []
    for _, row in selection(trials, selection_manifest(p)).iterrows():
        cfg = {k[len("config.") :]: v for k, v in row.items() if k.startswith("config.")}
        # the grid point with this row's scientific values: every key of the point, and no key the point
        # lacks that the row holds (an 8-layer LSTM with forget bias 1 is not the plain 8-layer LSTM)
        held = {k for k in p.study.scientific if f"config.{k}" in row.index}
        point = next((q for q in p.points if all(_same(cfg.get(k), q.get(k)) for k in set(q) | held)), None)
        if point is None or (
            wanted is not None and not any(all(point.get(k) == v for k, v in w.items()) for w in wanted)
        ):
            continue
        nuisance = {k: cfg[k] for k in p.study.search if k in cfg}
        out.append({**p.fixed, **point, **nuisance})
        if hand and not all(_same(nuisance.get(k), v) for k, v in hand.items()):
            out.append({**p.fixed, **point, **hand})  # the hand-run setting, which claims compare with
    return out


def tag(trials: pd.DataFrame, curves: pd.DataFrame, phase: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tables of one phase, with their `phase` column; trial ids prefixed in the confirmation's, so
    they never clash with the search's."""
    if phase == CONFIRM:
        ids = {c: "c-" + trials[c].astype(str) for c in ("trial_id", "trial") if c in trials}
        trials = trials.assign(**ids)
        if len(curves) and "trial_id" in curves:
            curves = curves.assign(trial_id="c-" + curves["trial_id"].astype(str))
    return trials.assign(phase=phase), (curves.assign(phase=phase) if len(curves) else curves)


def experiment(p, n: int | None = None) -> str:
    """The confirmation's Tune experiment folder, beside the search's (the look of `n` seeds a side after
    the first: `confirm-N`)."""
    return f"{p.run_dir}/confirm" + (f"-{n}" if n else "")


def planned_looks(p) -> list[int]:
    """The confirmation seeds a side at each look of the sequential test (`analysis.sequential`): the first
    look's, doubled up to the cap, `--max-seeds` or else the budget's `max_seeds` (default: one look).
    Raises UsageError for a `--max-seeds` below the first look's seeds."""
    from studies.engine.checks import UsageError

    first = len(confirm_seeds(p.seeds, budget=p.budget_name))
    flag = getattr(p.args, "max_seeds", None)
    if flag is not None and flag < first:
        raise UsageError(
            f"--max-seeds {flag}: the confirmation already trains {first} fresh seeds a side; give at least {first}"
        )
    return looks(first, max(flag or p.budget.max_seeds or first, first))


def _round(p, todo: list[dict], seeds: list[int], exp: str, out):
    """One look's Tune experiment: `todo` on `seeds`, every trial to the end; resumed where it was
    interrupted. Its tables, or None where the storage guard stopped it."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from studies.engine import results, storage
    from studies.engine.record import for_plan
    from studies.engine.search import GridSearch, repair

    if Path(exp).is_dir() and not list(Path(exp).glob("experiment_state-*.json")):
        shutil.rmtree(exp)  # killed before Tune saved any state: nothing to resume, start afresh
    print(f"  confirming {len(todo)} chosen configurations on fresh seeds {seeds[0]}-{seeds[-1]}", file=out, flush=True)
    if tune.Tuner.can_restore(exp):
        if Path(exp).is_dir():
            repair(exp)  # a searcher that a full disk left out of step
        fs = storage.filesystem_for(p.run_dir)
        tuner = tune.Tuner.restore(
            exp, p.trainable(), resume_unfinished=True, resume_errored=True, storage_filesystem=fs
        )
    else:
        search = GridSearch(todo, seeds, {}, p.study.metric, p.study.mode, record=for_plan(p, CONFIRM, Path(exp).name))
        tuner = tune.Tuner(
            p.trainable(),
            tune_config=p.tune_config(search, FIFOScheduler()),
            run_config=p.run_config(Path(exp).name, len(todo), seeds),
        )
    grid = tuner.fit()
    if storage.faults():  # the storage guard stopped it: the caller says so, and --resume continues
        return None
    return tag(*results.tables(grid, p, storage.statuses()), CONFIRM)


def _open(p, trials: pd.DataFrame, curves: pd.DataFrame) -> int:
    """How many of the study's claims more seeds could decide, on the tables as they stand (read back as
    the report will read them)."""
    import io
    import time

    from analysis.report import claims_table
    from studies.engine.results import manifest

    m = json.loads(json.dumps(manifest(p, time.time(), None), default=str))
    t, c = (pd.read_parquet(io.BytesIO(df.to_parquet(index=False))) for df in (trials, curves))
    return open_claims(claims_table(t, c, m))


def run_phase(p, trials: pd.DataFrame, curves: pd.DataFrame, out) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """After the search: train the chosen configurations on fresh seeds (a new Tune experiment, or the
    interrupted one resumed), then, while a claim's comparison is undecided and the plan has another look
    (`planned_looks`), on as many seeds again; return every phase's tables, and how many confirmation
    trials there are. The search's tables alone where the study selects nothing, `--no-confirm` was
    given, or no setting ran to the end."""
    trials, curves = tag(trials, curves, SEARCH)
    todo = configs(trials, p) if getattr(p.args, "confirm", True) else []
    if not todo:
        return trials, curves, 0
    seeds, plan = confirm_seeds(p.seeds, budget=p.budget_name), planned_looks(p)
    done, rounds = 0, 0
    for n in plan:
        if done and not _open(p, trials, curves):
            break  # every claim is decided, or waits for something other than seeds
        rounds += 1
        fresh = list(range(seeds[0] + done, seeds[0] + n))
        got = _round(p, todo, fresh, experiment(p, n if done else None), out)
        if got is None:
            break
        trials, curves = (pd.concat([a, b], ignore_index=True) for a, b in zip((trials, curves), got))
        done = n
    return trials, curves, rounds * len(todo)
