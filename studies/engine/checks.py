"""What is checked before Ray starts, so that bad input costs seconds and writes nothing: the run
folder (local: created and removed again to try; a URI: reachable and writable), the cluster
address, and the data (downloaded where allowed; the quick budgets' Fashion-MNIST falls back to
digits), and the study's analysis module (imported, its claims tried on empty tables). Each problem
is a `UsageError`: one line, exit code 2."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from studies.engine.cluster import address_problem, uri_problem

if TYPE_CHECKING:
    from studies.engine.plan import Plan
    from studies.engine.study import Study


class UsageError(Exception):
    """Bad input: reported as one line, exit code 2, before anything is written."""


def _try_create(path: Path) -> None:
    """Create the folder `path` and a file in it, as the run will, then remove all that was created:
    an OSError here (a read-only or virtual filesystem such as /proc, a name too long) is one the run
    would hit after Ray started."""
    created = []
    try:
        for folder in reversed([a for a in [path, *path.parents] if not a.exists()]):
            folder.mkdir()
            created.append(folder)
        marker = path / f".studies-write-test-{os.getpid()}"
        marker.write_bytes(b"")
        marker.unlink()
    finally:
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                pass


def _check_folder(p: Plan, path: Path) -> None:
    """The local run folder `path` is there or can be created, and can be written; an OSError where
    the system says no."""
    existing = next(a for a in [path, *path.parents] if a.exists())
    if not existing.is_dir():
        raise UsageError(f"--storage {p.args.storage}: {existing} is a file, not a folder; choose a writable folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--storage {p.args.storage}: {existing} is not writable; choose a writable folder")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise UsageError(
            f"--storage {p.args.storage}: {path} is not readable and writable; fix its permissions "
            "or choose another --name"
        )
    _try_create(path)


def check_storage(p: Plan) -> None:
    """The run directory must be writable, and must not hold a different study (unless told). Nothing
    is left behind: a folder is created to try, and removed."""
    if "://" in p.run_dir:
        problem = uri_problem(p.args.storage)
        if problem:
            raise UsageError(problem)
        return
    path = Path(p.run_dir)
    try:
        _check_folder(p, path)
    except OSError as e:  # a name too long, a virtual filesystem such as /proc, a read-only one
        where = f" {e.filename}" if e.filename else ""
        raise UsageError(
            f"--storage {p.args.storage}: cannot write{where} ({e.strerror or e}); choose a writable folder"
        ) from None
    manifest = path / "manifest.json"
    if p.args.resume and not (path / "tune").is_dir():
        raise UsageError(f"--resume: {path} holds no run to resume; leave out --resume to start one")
    if path.exists() and not p.args.overwrite:
        try:
            old = json.loads(manifest.read_text())["signature"]
        except (OSError, ValueError, KeyError):
            old = None
        if old is not None and old != json.loads(json.dumps(p.signature)):
            what = "another study" if old.get("study") != p.study.name else "a different search space"
            raise UsageError(
                f"{path} holds a run of {what}: pass --name NEW for a new run, or --overwrite to replace it"
            )


def check_address(p: Plan) -> None:
    """Something that speaks Ray's protocol answers at --address (or Ray finds a cluster for `auto`)."""
    if p.args.address is not None:
        problem = address_problem(p.args.address)
        if problem:
            raise UsageError(problem)


FALLBACK = ("fashion_mnist", "digits")  # a budget's dataset, and the one that always works offline


def prepare_data(p: Plan) -> str | None:
    """Make the plan's dataset loadable (downloading it where the network allows) before Ray starts.
    A dataset the user named must be there (else UsageError); the budget's Fashion-MNIST falls back
    to digits, which ship with scikit-learn: the plan is changed, and the notice to print returned."""
    from studies.engine.tasks import BUILTIN

    if "dataset" not in p.fixed or p.task is None or p.task is not BUILTIN.get(p.task.name):
        return None  # a task of one's own loads its own data
    import datasets

    try:
        datasets.prepare(p.fixed["dataset"], p.fixed["data_dir"])
    except datasets.DatasetError as e:
        if p.args.dataset is not None or p.fixed["dataset"] != FALLBACK[0]:
            raise UsageError(str(e)) from None
        p.fixed["dataset"] = FALLBACK[1]
        return f"{e}. This run uses {FALLBACK[1]} instead; claims that need {FALLBACK[0]} are reported as inconclusive"
    return None


def check_analysis(p: Plan) -> None:
    """Import the study's analysis module and try its claims on empty tables (the columns of a run,
    no rows), so that a broken module fails before any trial trains, not after all of them."""
    import time

    from analysis.modules import AnalysisImportError
    from analysis.report import claims_table
    from studies.engine.results import empty_tables, manifest

    m = manifest(p, time.time(), None)
    if not m["analysis"]:
        return
    try:
        claims_table(*empty_tables(p), m)
    except AnalysisImportError as e:
        raise UsageError(f"{e}; fix it, then run the same command again") from None
    except Exception as e:  # a bug in the study's claims: NameError, TypeError, AttributeError, ...
        raise UsageError(
            f"the claims of {m['analysis']['module']} fail on a run's (empty) tables: "
            f"{type(e).__name__}: {e}; fix them, then run the same command again"
        ) from None


def parse_value(s: str) -> int | float | str:
    """A --grid value: a whole number, a number, or text."""
    for kind in (int, float):
        try:
            return kind(s)
        except ValueError:
            pass
    return s


def replace_axis(study: Study, points: list[dict], spec: str) -> list[dict]:
    """--grid KEY=V1,V2: the grid with KEY's values replaced (every other combination kept)."""
    key, sep, values = spec.partition("=")
    if not sep or key not in study.scientific:
        raise UsageError(f"--grid {spec!r}: expected KEY=V1,V2 with KEY one of {', '.join(study.scientific)}")
    vals = [parse_value(v.strip()) for v in values.split(",") if v.strip()]
    if not vals:
        raise UsageError(f"--grid {spec!r}: empty search space; give at least one value")
    for v in vals:
        if isinstance(v, float) and not math.isfinite(v):
            raise UsageError(f"--grid {spec!r}: {v} is not a finite number; give finite values")
    seen: list = []
    for v in vals:
        if v in seen:  # 1e-3 and 0.001 are the same value
            raise UsageError(f"--grid {spec!r}: {key}={v!r} is given twice; give each value once")
        seen.append(v)
    others = list({json.dumps({k: v for k, v in p.items() if k != key}, sort_keys=True): None for p in points})
    return [{**json.loads(o), key: v} for o in others for v in vals]
