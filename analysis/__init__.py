"""Analysis of study runs: load a run's tables as pandas DataFrames, and render its summary
table, claims table, figures and reports.

    >>> import analysis
    >>> trials, curves, manifest, path = analysis.load("results/lr_scan/quick")
    >>> trials.groupby("config.lr")["metric.val_acc"].mean()
    >>> analysis.tuned_trials(trials, manifest)  # the seeds at each scientific value's tuned setting
    >>> analysis.claims("results/lr_scan/quick")  # claim, reference, value, verdict, rule, why, effect, p, seeds, look

`load`, `find_runs`: read runs. `figures`, `render`, `render_all`: a run's figures, and its files
(summary, claims, figures, report.md, report.html; an index over several runs). `claims(run)`:
its claims table. The claim rules (`Claim`, `sample`, `greater`, `at_least`, ...) are in
`analysis.verdicts`: `from analysis.verdicts import Claim, greater, sample`. The one selection rule
(which setting is "tuned" or "best", chosen on validation only) is `analysis.selection`.

What is specific to a study is in its analysis module (`studies/NAME_analysis.py` for the
catalogue, any module for a study of one's own; the run's manifest names it, `analysis.modules`
imports it): `HEADLINE`, `REFERENCE`, `CAPTIONS`, `figures`, `findings`, `CLAIMS` and optionally
`CURVE_HUE`, each optional. The modules here are generic: `modules` (the study's analysis module),
`style` (names, units, colours, formats), `data` (numbers over seeds, what is plotted), `draw`,
`plots` and `curves` (figures), `findings`, `report`, `index`, `files` (atomic writes), `verdicts`
(claims and their verdicts).

Columns are stable: `config.<key>` for every hyperparameter (same name as in the search space),
`metric.<name>` for the last reported value, `best.<name>` for the best over the trial, and
`status` (completed, stopped, diverged, error), `stopped_early`, `diverged`, `iterations`,
`wall_time_s`, `node`. `curves` has one row per trial per report, with `iteration`, `step`,
`time_s` and the same `metric.*` columns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pandas as pd

from analysis.data import ci95, run_summary, summarize
from analysis.modules import analysis_module
from analysis.selection import SEARCH, best, phase, selection, tuned_trials
from analysis.style import config_text
from analysis.verdicts import counts

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "Results",
    "ResultsError",
    "ci95",
    "claims",
    "figures",
    "find_runs",
    "load",
    "render",
    "render_all",
    "run_summary",
    "selection",
    "summarize",
    "tuned_trials",
]


class Results(NamedTuple):
    """One run: its tables, its manifest and its folder."""

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
        raise ResultsError(
            f"{path}/manifest.json is unreadable ({type(e).__name__}): not a complete study run"
        ) from None
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
        raise ResultsError(
            f"{path} holds no trials.parquet and no <study>/<name>/trials.parquet: pass a run folder "
            "such as results/lr_scan/quick or a results root such as results"
        )
    return runs


def _best_text(trials: pd.DataFrame, manifest: dict) -> str:
    b = best(trials, manifest)
    if not len(b):
        return "no finished trial"
    b = b.iloc[0]
    cfg = config_text(b, [c for c in b.index if c.startswith("config.")])
    return f"{cfg or 'all'}: {manifest.get('metric', 'val_acc')} {b['score']:.3f} (mean of {int(b['ended'])})"


def figures(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> dict[str, Figure]:
    """Figure name -> Figure for one run: its study's own (the headline first), then those every
    study gets: the hyperparameter-axis plots and the learning curves of all trials, coloured by the
    study's `CURVE_HUE` (a key, or a function of the trials that derives one), else by its first
    scientific key."""
    from analysis.curves import curves_all_trials
    from analysis.plots import hparam_axes

    module = analysis_module(manifest)
    own = getattr(module, "figures", None)  # every part of an analysis module is optional
    figs = dict(own(trials, curves, manifest)) if own else {}
    hue = getattr(module, "CURVE_HUE", None) or next(
        (k for k in manifest.get("scientific", []) if f"config.{k}" in trials), None
    )
    if callable(hue):  # a derived key: its values are computed from the trials
        trials, hue = trials.assign(**{f"config.{hue.__name__}": hue(trials)}), hue.__name__
    search = phase(trials, SEARCH)  # what the search saw; the confirmation's seeds are in the study's figures
    for name, fig in (
        ("hparam_axes", hparam_axes(search, manifest)),
        ("curves_all_trials", curves_all_trials(search, curves, manifest, hue)),
    ):
        if fig is not None:
            figs[name] = fig
    return figs


def claims(run: str | Path | Results) -> pd.DataFrame:
    """The claims table of a run (a run folder or a `Results`): one row per claim of its study
    (`CLAIMS` in its analysis module) with columns claim, reference, value (this run's, with
    its spread over seeds), verdict (reproduced, contradicted, inconclusive), rule (the statistical
    rule that decided) and why (why inconclusive); no rows where the study declares no claims.
    What `render` writes to claims.csv / claims.parquet. The rules are in `analysis.verdicts`."""
    from analysis.report import claims_table

    r = run if isinstance(run, Results) else load(run)
    return claims_table(r.trials, r.curves, r.manifest)


def render(path: str | Path, out: str | Path | None = None, fmt: str = "png") -> dict:
    """Write a run's summary table, claims table, figures, report.md and report.html (into the run
    folder, or `out`); for a study with a nuisance search, its parameter importance too
    (`analysis.importance`: importance.csv / .parquet, figures/importance, a section of the report).
    Returns what was written, and what an index of several runs shows of this one (its best
    configuration, headline figure, findings and claims' verdict counts)."""
    import matplotlib.pyplot as plt

    from analysis import files
    from analysis.findings import findings
    from analysis.importance import blocks as importance_blocks
    from analysis.importance import figure as importance_figure
    from analysis.importance import importance
    from analysis.report import blocks, claims_table, to_html, to_markdown

    r = load(path)
    out = Path(out) if out else r.path
    summary = run_summary(r.trials, r.manifest)
    tables = files.write_table(out / "summary", summary)
    table = claims_table(r.trials, r.curves, r.manifest)
    claim_files = files.write_table(out / "claims", table)
    written, figs = [], []
    for name, fig in figures(r.trials, r.curves, r.manifest).items():
        png = files.figure_png(fig)
        target = out / "figures" / f"{name}.{fmt}"
        written.append(files.write_bytes(target, png) if fmt == "png" else files.save_figure(fig, target))
        figs.append((name, target.relative_to(out).as_posix(), png))
        plt.close(fig)
    imp = importance(r.trials, r.manifest)  # studies with a nuisance search: Optuna's importance, with its spread
    extra = []
    if len(imp):
        fig = importance_figure(imp)
        png = files.figure_png(fig)
        target = out / "figures" / f"importance.{fmt}"
        written.append(files.write_bytes(target, png) if fmt == "png" else files.save_figure(fig, target))
        plt.close(fig)
        files.write_table(out / "importance", imp)
        extra = importance_blocks(imp, target.relative_to(out).as_posix(), png)
    found = findings(r.trials, r.curves, r.manifest)
    for stale in (out / "figures").glob(f"*.{fmt}"):  # figures that an older version of this code wrote
        if stale not in written:
            stale.unlink()
    bl = blocks(r, figs, summary, found, table)
    at = next((i for i, b in enumerate(bl) if b[:2] in (("h2", "Figures"), ("h2", "Manifest"))), len(bl))
    bl = bl[:at] + extra + bl[at:]
    rep = files.write_text(out / "report.md", to_markdown(bl))
    page = files.write_text(out / "report.html", to_html(bl, f"{r.manifest['study']}: {r.manifest.get('name')}"))
    head = getattr(analysis_module(r.manifest), "HEADLINE", None)
    headline = next((f for f in figs if f[0] == head), figs[0] if figs else None)
    return {
        "figures": written,
        "report": rep,
        "html": page,
        "summary": tables,
        "claims_files": claim_files,
        "study": r.manifest["study"],
        "name": r.manifest.get("name", r.path.name),
        "trials": len(r.trials),
        "best": _best_text(r.trials, r.manifest),
        "headline": (headline[0], headline[2]) if headline else None,
        "findings": found,
        "claims": counts(table),
    }


def render_index(entries: list[dict], root: str | Path) -> dict:
    """`index.html` and `summary.png` over the rendered runs, at `root`."""
    import matplotlib.pyplot as plt

    from analysis import files
    from analysis.index import index_html, summary_figure

    root = Path(root)
    fig = summary_figure(entries)
    png = files.write_bytes(root / "summary.png", files.figure_png(fig, dpi=80))
    plt.close(fig)
    return {"index": files.write_text(root / "index.html", index_html(entries, root)), "summary_png": png}


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
