"""From Ray Tune's results to the study's tables (`trials`, `curves`) and `manifest.json`."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import pandas as pd

from analysis import files
from studies.engine.confirm import chooses, confirm_seeds, planned_looks

METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")


def _value(v):
    """Config values as table cells: scalars stay, sequences become text such as '128-64'."""
    if isinstance(v, (list, tuple)):
        return "-".join(map(str, v))
    return v


def _status(result, iterations: int, diverged: bool, max_t: int, tune_status: str | None) -> str:
    """completed, stopped (by ASHA), diverged, error (the experiment's), or unfinished: a trial that a
    fault of the storage or an interruption stopped, which `--resume` continues."""
    from studies.engine.storage import storage_error

    if result.error is not None:
        return "unfinished" if storage_error(result.error) is not None else "error"
    if tune_status not in (None, "TERMINATED"):
        return "unfinished"
    if diverged:
        return "diverged"
    return "stopped" if iterations < max_t else "completed"


def _best(values: pd.Series, metric: str) -> float:
    v = values.dropna()
    return float(v.max() if metric.endswith("acc") else v.min()) if len(v) else math.nan


def _extra(metrics: dict, key: str) -> list[str]:
    """What a task reports beyond METRICS and the per-class test accuracies (e.g. `train_loss_var`):
    kept in both tables, the last value in `trials` and every report's in `curves`."""
    return [
        k.removeprefix(key)
        for k in metrics
        if k.startswith(key)
        and k.removeprefix(key) not in METRICS
        and not k.startswith(key + "test_acc_")
        and k != key + "diverged_at"
    ]


def tables(grid, p, statuses: dict[str, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per seed of every trial, and one row per seed per report. A trial trains all the
    seeds of one configuration; its seed k reports under `seed<k>/<metric>`. A seed that diverged
    ends its row and curve at the report where its loss was NaN or inf. `statuses`: each trial's Tune
    status at the end of the run (`studies.engine.storage.statuses`): one that had not ended is
    'unfinished'."""
    statuses = statuses or {}
    varied = list(dict.fromkeys([*p.study.scientific, *p.study.search, "seed"]))
    rows, curves = [], []
    for r in grid:
        if r.config is None:  # a trial that never started (the run was interrupted): rerun resumes it
            continue
        m = r.metrics or {}
        df = r.metrics_dataframe
        trial = m.get("trial_id") or Path(r.path).name.removeprefix("trial_")
        config = {k: v for k, v in r.config.items() if k != "seeds"}
        done = int(m.get("training_iteration", 0))
        for seed in r.config.get("seeds", [config.get("seed", 0)]):
            key = f"seed{seed}/"
            ended = int(m.get(f"{key}diverged_at", 0) or 0)
            iterations = ended or done
            c = df[df["training_iteration"] <= iterations] if df is not None and len(df) else None
            if c is not None:
                c = c.drop_duplicates("training_iteration", keep="last")  # a restore may report twice
            row = {"study": p.study.name, "trial_id": f"{trial}-{seed}", "trial": trial}
            row.update({f"config.{k}": _value(v) for k, v in sorted({**config, "seed": seed}.items())})
            status = _status(r, iterations, bool(ended), p.budget.iterations, statuses.get(trial))
            row.update(
                status=status,
                stopped_early=status == "stopped",
                diverged=status == "diverged",
                iterations=iterations,
                step=int(c["step"].iloc[-1]) if c is not None and len(c) else 0,
                restarts=int(m.get("restarts", 0)),
                wall_time_s=float(m.get("time_total_s", math.nan)),
                node=m.get("node_ip"),
            )
            last = c.iloc[-1] if c is not None and len(c) else {}
            extra = _extra(m, key)
            for k in METRICS:
                row[f"metric.{k}"] = float(last.get(key + k, math.nan)) if len(last) else math.nan
                row[f"best.{k}"] = _best(c[key + k], k) if c is not None and key + k in c else math.nan
            obj = p.study.metric  # the objective's best as well where it is not one of METRICS (val_ppl)
            if obj in extra and c is not None and key + obj in c:
                row[f"best.{obj}"] = _best(c[key + obj], obj)
            row.update(
                {
                    f"metric.{k.removeprefix(key)}": float(v)
                    for k, v in (last.items() if len(last) else ())
                    if k.startswith(key + "test_acc_") or k.removeprefix(key) in extra
                }
            )
            rows.append(row)
            if c is not None and len(c):
                cols = [k for k in ("step", "samples", "time_total_s", "lr_current") if k in c]
                cdf = c[["training_iteration", *cols, *[key + k for k in (*METRICS, *extra) if key + k in c]]]
                cdf = cdf.rename(
                    columns={
                        "training_iteration": "iteration",
                        "time_total_s": "time_s",
                        **{key + k: f"metric.{k}" for k in (*METRICS, *extra)},
                    }
                )
                cdf.insert(0, "trial_id", row["trial_id"])
                cdf.insert(0, "study", p.study.name)
                for k in varied:
                    cdf[f"config.{k}"] = _value(seed if k == "seed" else config.get(k))
                curves.append(cdf.reset_index(drop=True))
    trials = pd.DataFrame(rows).sort_values([f"config.{k}" for k in varied if f"config.{k}" in rows[0]] or ["trial_id"])
    curves_df = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    return trials.reset_index(drop=True), curves_df


def empty_tables(p) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tables with the columns a run of plan `p` writes, and no rows: what a study's claims are tried
    on before Ray starts, so that a broken analysis module fails in seconds."""
    varied = list(dict.fromkeys([*p.study.scientific, *p.study.search, "seed"]))
    config = [f"config.{k}" for k in sorted({*p.fixed, *varied} - {"seeds"})]
    metrics = [f"{kind}.{m}" for kind in ("metric", "best") for m in METRICS]
    trials = pd.DataFrame(
        columns=[
            "study",
            "trial_id",
            "trial",
            *config,
            "status",
            "stopped_early",
            "diverged",
            "iterations",
            "step",
            "restarts",
            "wall_time_s",
            "node",
            *metrics,
        ]
    )
    curves = pd.DataFrame(
        columns=[
            "study",
            "trial_id",
            "iteration",
            "step",
            "samples",
            "time_s",
            "lr_current",
            *[f"metric.{m}" for m in METRICS],
            *[f"config.{k}" for k in varied],
        ]
    )
    return trials, curves


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "ray", "optuna", "pandas", "numpy", "scikit-learn", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _hardware() -> dict:
    import torch

    hw = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        hw["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return hw


def manifest(p, started: float, finished: float | None, missing: int | None = None) -> dict:
    """What `manifest.json` records of a run: the study's declaration as run (its scientific and
    nuisance keys, the nuisance values tried first, the fixed config, the budget), the dataset's class
    names (what analysis names classes by), the study's module and its analysis module (what `python
    -m analysis` imports again), the command as run and the folder it ran in, versions, the git state
    of this project and of the study's repository (where it lives elsewhere), hardware and times, and
    how many planned trials did not finish (`missing_trials`; `finished` is None while any is missing)."""
    from datasets import class_names  # ours: `studies` put the project root first on sys.path
    from studies.engine.source import PROJECT, analysis_spec, git_state

    ours = git_state(PROJECT)
    theirs = git_state(p.source.root) if p.source.external else ours
    confirming = chooses(p) and getattr(p.args, "confirm", True)
    data = p.fixed.get("dataset") or p.fixed.get("task")
    try:
        classes = list(class_names(data)) if data else None
    except ValueError:
        classes = None
    return {
        "study": p.study.name,
        "name": Path(p.run_dir).name,
        "budget": p.budget_name,
        "command": p.command,
        "cwd": os.getcwd(),
        "module": {"name": p.source.module, "root": p.source.root, "file": p.source.file},
        "analysis": analysis_spec(p.study, p.source),
        "argv": vars(p.args),
        "metric": p.study.metric,
        "mode": p.study.mode,
        "scientific": p.study.scientific,
        "nuisance": list(p.study.search),
        "seeds": p.seeds,
        "search_first": {k: _value(v) for k, v in p.study.search_first.items()},
        "samples": p.budget.samples if p.study.search else None,  # nuisance settings tried per scientific value
        "select": list(p.study.select),
        "confirm_seeds": confirm_seeds(p.seeds, budget=p.budget_name) if confirming else [],
        "looks": planned_looks(p) if confirming else [],  # confirmation seeds a side at each look
        "classes": classes,
        "fixed": {k: _value(v) for k, v in p.fixed.items()},
        "iterations": p.budget.iterations,
        "asha": {"grace": p.budget.grace, "reduction": p.budget.reduction},
        "signature": p.signature,
        "versions": _versions(),
        "git_commit": (ours or {}).get("commit"),
        "git": {"studies": ours, "study": theirs},
        "hardware": _hardware(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(finished)) if finished else None,
        "missing_trials": missing,
    }


@contextmanager
def _run_folder(p):
    """The folder to write into: the run dir, or for a URI a staging folder uploaded after (what was
    written, even where a later step failed)."""
    remote = "://" in p.run_dir
    local = Path(tempfile.mkdtemp(prefix="study-")) if remote else Path(p.run_dir)
    local.mkdir(parents=True, exist_ok=True)
    try:
        yield local
    finally:
        if remote:
            upload(local, p.run_dir)
            shutil.rmtree(local)


class RenderError(Exception):
    """The tables are written, and the report's rendering failed: the study's analysis module raised."""


class WriteFault(Exception):
    """Writing the results failed on the storage (a full disk): `error` is its OSError, and
    `tables_written` whether trials and curves were written before it (then the figures and the
    report are what is left, for `python -m analysis RUN`)."""

    def __init__(self, error: OSError, tables_written: bool):
        super().__init__(str(error))
        self.error, self.tables_written = error, tables_written


def upload(local: Path, uri: str) -> None:
    """Copy the files under the folder `local` to the folder at `uri`."""
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri)
    fs.create_dir(path, recursive=True)
    pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def write_manifest(p, started: float, finished: float | None) -> None:
    with _run_folder(p) as local:
        files.write_text(local / "manifest.json", json.dumps(manifest(p, started, finished), indent=2, default=str))


def write(p, trials: pd.DataFrame, curves: pd.DataFrame, started: float, missing: int = 0) -> dict[str, str]:
    """Tables (Parquet and CSV), manifest, figures and report; returns what was written where. `missing`:
    the planned trials that did not finish (the manifest says so, and leaves `finished` empty).
    Raises WriteFault where the storage fails, RenderError where the study's analysis does."""
    import analysis
    from studies.engine.storage import storage_error

    tables_written = False
    try:
        with _run_folder(p) as local:
            files.clean_temporaries(local)
            m = manifest(p, started, None if missing else time.time(), missing)
            files.write_text(local / "manifest.json", json.dumps(m, indent=2, default=str))
            files.write_table(local / "trials", trials)
            files.write_table(local / "curves", curves)
            tables_written = True
            try:
                written = analysis.render(local)
            except Exception as e:  # anything the study's own figures, findings or claims raise
                if storage_error(e) is not None:
                    raise
                raise RenderError(f"{type(e).__name__}: {e}") from e
    except RenderError:
        raise
    except Exception as e:
        fault = storage_error(e)
        if fault is None:
            raise
        raise WriteFault(fault, tables_written) from e
    base = p.run_dir
    return {
        "tables": f"{base}/trials.parquet, {base}/curves.parquet (and .csv)",
        "figures": f"{base}/figures/ ({len(written['figures'])} PNG)",
        "report": f"{base}/report.md, report.html (summary.csv: results over seeds)",
    }
