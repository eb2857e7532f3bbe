"""Analysis of study runs: load a run's tables as pandas DataFrames, and render its summary
table, figures and reports.

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

from analysis.tables import ci95, run_summary, summarize

__all__ = ["Results", "ResultsError", "ci95", "find_runs", "load", "render", "render_all", "run_summary",
           "summarize"]


class Results(NamedTuple):
    trials: pd.DataFrame
    curves: pd.DataFrame
    manifest: dict
    path: Path


class ResultsError(Exception):
    """A folder that holds no (readable) study results."""


def load(path: str | Path) -> Results:
    """The tables of one study run (`<storage>/<study>/<name>`), as DataFrames."""
    path = Path(path)
    if not (path / "trials.parquet").is_file():
        raise ResultsError(f"{path} holds no trials.parquet: pass a run folder such as results/lr_scan/quick")
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path} holds no manifest.json: not a complete study run") from None
    except (OSError, ValueError) as e:
        raise ResultsError(f"{path}/manifest.json is unreadable ({type(e).__name__}): not a complete study run") \
            from None
    if not isinstance(manifest, dict) or "study" not in manifest:
        raise ResultsError(f"{path}/manifest.json names no study: not a study run")
    try:
        trials = pd.read_parquet(path / "trials.parquet")
        curves = path / "curves.parquet"
        curves = pd.read_parquet(curves) if curves.is_file() else pd.DataFrame()
    except Exception as e:  # pyarrow raises several kinds on a truncated or foreign file
        raise ResultsError(f"{path}: a table is unreadable ({type(e).__name__}); rerun the study's command") from None
    return Results(trials, curves, manifest, path)


def find_runs(path: str | Path) -> list[Path]:
    """A run folder -> [it]; a results root -> every `<study>/<name>` under it that holds a run."""
    path = Path(path)
    if (path / "trials.parquet").is_file():
        return [path]
    runs = sorted(p.parent for p in path.glob("*/*/trials.parquet"))
    if not runs:
        raise ResultsError(f"{path} holds no trials.parquet and no <study>/<name>/trials.parquet: pass a run folder "
                           "such as results/lr_scan/quick or a results root such as results")
    return runs


def _best_text(summary: pd.DataFrame, manifest: dict) -> str:
    from analysis.figures import fmt, fmt_sci

    obj = f"best.{manifest.get('metric', 'val_acc')}"
    if f"{obj}.mean" not in summary or summary[f"{obj}.mean"].isna().all():
        return "no finished trial"
    b = summary.loc[summary[f"{obj}.mean"].idxmax() if manifest.get("mode", "max") == "max"
                    else summary[f"{obj}.mean"].idxmin()]
    keys = [c for c in summary.columns if c.startswith("config.")]
    cfg = ", ".join(f"{k.removeprefix('config.')}={fmt_sci(b[k]) if k == 'config.lr' else fmt(b[k])}" for k in keys)
    return f"{cfg or 'all'}: {obj.removeprefix('best.')} {b[f'{obj}.mean']:.3f} (mean of {int(b[f'{obj}.n'])})"


def render(path: str | Path, out: str | Path | None = None, fmt: str = "png") -> dict:
    """Write a run's summary table, figures, report.md and report.html (into the run folder, or
    `out`). Returns what was written, and what an index of several runs shows of this one."""
    import matplotlib.pyplot as plt

    from analysis import io
    from analysis.figures import HEADLINE, study_figures
    from analysis.findings import findings
    from analysis.report import blocks, to_html, to_markdown

    r = load(path)
    out = Path(out) if out else r.path
    summary = run_summary(r.trials, r.manifest)
    tables = io.write_table(out / "summary", summary)
    written, figs = [], []
    for name, fig in study_figures(r.manifest["study"], r.trials, r.curves, r.manifest).items():
        png = io.figure_png(fig)
        target = out / "figures" / f"{name}.{fmt}"
        written.append(io.write_bytes(target, png) if fmt == "png" else io.save_figure(fig, target))
        figs.append((name, target.relative_to(out).as_posix(), png))
        plt.close(fig)
    found = findings(r.trials, r.curves, r.manifest)
    for stale in (out / "figures").glob(f"*.{fmt}"):  # figures that an older version of this code wrote
        if stale not in written:
            stale.unlink()
    bl = blocks(r, figs, summary, found)
    rep = io.write_text(out / "report.md", to_markdown(bl))
    page = io.write_text(out / "report.html", to_html(bl, f"{r.manifest['study']}: {r.manifest.get('name')}"))
    head = HEADLINE.get(r.manifest["study"])
    headline = next((f for f in figs if f[0] == head), figs[0] if figs else None)
    return {"figures": written, "report": rep, "html": page, "summary": tables, "study": r.manifest["study"],
            "name": r.manifest.get("name", r.path.name), "trials": len(r.trials),
            "best": _best_text(summary, r.manifest), "headline": (headline[0], headline[2]) if headline else None,
            "findings": found}


def render_index(entries: list[dict], root: str | Path) -> dict:
    """`index.html` and `summary.png` over the rendered runs, at `root`."""
    import matplotlib.pyplot as plt

    from analysis import io
    from analysis.index import index_html, summary_figure

    root = Path(root)
    fig = summary_figure(entries)
    png = io.write_bytes(root / "summary.png", io.figure_png(fig, dpi=80))
    plt.close(fig)
    return {"index": io.write_text(root / "index.html", index_html(entries, root)), "summary_png": png}


def render_all(paths: list[str | Path], out: str | Path | None = None, fmt: str = "png") -> dict:
    """Render every run under `paths` (run folders or results roots). Each results root gets an
    index.html and summary.png over its runs; with `out`, the runs go to out/<study>/<name> and
    one index over all of them to `out`. Checks everything before writing anything."""
    groups = [(Path(p), find_runs(p)) for p in paths]
    runs = [(root, run, load(run)) for root, found in groups for run in found]
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise ResultsError(f"--out {out} is a file: give a folder")
    entries, indexes = {}, []
    for _, run, r in runs:
        dest = Path(out) / r.manifest["study"] / r.manifest.get("name", run.name) if out else None
        entries[run] = render(run, dest, fmt)
    is_root = [found != [root] for root, found in groups]
    if out is not None and (len(runs) > 1 or any(is_root)):
        indexes.append(render_index([entries[run] for _, run, _ in runs], out))
    elif out is None:
        for (root, found), many in zip(groups, is_root):
            if many:
                indexes.append(render_index([entries[run] for run in found], root))
    return {"runs": entries, "indexes": indexes}
