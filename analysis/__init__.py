"""Analysis of study runs: load a run's tables as pandas DataFrames, and render its figures and
report.

    >>> import analysis
    >>> trials, curves, manifest, path = analysis.load("results/lr_scan/quick")
    >>> trials.groupby("config.lr")["metric.val_acc"].mean()

Columns are stable: `config.<key>` for every hyperparameter (same name as in the search space),
`metric.<name>` for the last reported value, `best.<name>` for the best over the trial, and
`status` (completed, stopped, diverged, error), `stopped_early`, `diverged`, `iterations`,
`wall_time_s`, `node`. `curves` has one row per trial per report, with `iteration`, `step`,
`time_s` and the same `metric.*` columns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from analysis.tables import ci95, summarize

__all__ = ["Results", "ci95", "load", "render", "summarize"]


class Results(NamedTuple):
    trials: pd.DataFrame
    curves: pd.DataFrame
    manifest: dict
    path: Path


class ResultsError(Exception):
    """A folder that holds no study results."""


def load(path: str | Path) -> Results:
    """The tables of one study run (`<storage>/<study>/<name>`), as DataFrames."""
    path = Path(path)
    if not (path / "trials.parquet").is_file():
        raise ResultsError(f"{path} holds no trials.parquet: pass a run folder such as results/lr_scan/quick")
    curves = path / "curves.parquet"
    return Results(pd.read_parquet(path / "trials.parquet"),
                   pd.read_parquet(curves) if curves.is_file() else pd.DataFrame(),
                   json.loads((path / "manifest.json").read_text()), path)


def render(path: str | Path, out: str | Path | None = None, fmt: str = "png") -> dict:
    """Write the figures and report.md of a run; returns {'figures': [...], 'report': path}."""
    import matplotlib.pyplot as plt

    from analysis import io
    from analysis.figures import study_figures
    from analysis.report import report

    r = load(path)
    out = Path(out) if out else r.path
    written = []
    for name, fig in study_figures(r.manifest["study"], r.trials, r.curves, r.manifest).items():
        written.append(io.save_figure(fig, out / "figures" / f"{name}.{fmt}"))
        plt.close(fig)
    rep = io.write_text(out / "report.md", report(r, [p.relative_to(out) for p in written]))
    return {"figures": written, "report": rep}
