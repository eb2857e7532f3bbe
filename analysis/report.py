"""A run's report, as `report.md` and a self-contained `report.html` (figures embedded as base64
PNG): the command that reproduces the run, the findings, the best configurations, the results over
seeds per scientific value, the figures and the manifest. Both are built from one list of blocks."""

from __future__ import annotations

import base64
import html
import json

import numpy as np
import pandas as pd

from analysis.figures import fmt, fmt_sci
from analysis.findings import REFERENCE, findings, stat
from analysis.tables import run_summary

CAPTIONS = {
    "accuracy_vs_lr": "Best and final validation accuracy and final test accuracy against lr.",
    "gap_vs_lr": "Generalisation gap (final train − test accuracy) against lr.",
    "mean_curves_by_lr": "Train and test loss and accuracy per lr: mean over seeds (thick), single seeds (thin).",
    "best_per_optimizer": "Isolation plot: each optimizer at its own best lr (chosen by mean validation accuracy).",
    "optimizer_views": "Both views: every optimizer at the hand-run fixed lr, and each at its own best lr.",
    "fixed_lr_curves": "The hand-run view: learning curves of every optimizer at the same fixed lr.",
    "lr_per_optimizer": "Best validation accuracy against lr, one line per optimizer.",
    "per_class_accuracy": "Per-class test accuracy of each optimizer's best configuration.",
    "gap_vs_strength": "Train and test accuracy (top) and their gap (bottom) against each regulariser's strength.",
    "accuracy_vs_length": "Final test accuracy against sequence length, one line per cell; chance is 0.1.",
    "curves_per_cell": "Validation accuracy and train loss per cell, coloured by sequence length.",
    "hparam_axes": "Basic hyperparameter-axis plots: the objective of every trial against each hyperparameter.",
    "curves_all_trials": "Learning curves of all trials; faded: stopped by ASHA; dashed: ASHA's rungs.",
}


def command(manifest: dict) -> str:
    """The command that reproduces the run (the manifest's, else rebuilt from budget and name)."""
    if manifest.get("command"):
        return manifest["command"]
    cmd = f"python -m studies.{manifest.get('study')}"
    if manifest.get("budget") and manifest["budget"] != "quick":
        cmd += f" --budget {manifest['budget']}"
    if manifest.get("name") and manifest.get("name") != manifest.get("budget", "quick"):
        cmd += f" --name {manifest['name']}"
    return cmd


def _cell(v, digits: int = 4) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else f"{v:.{digits}g}"
    return str(v)


def compact(summary: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """The summary as text cells: 'mean ± ci' (n >= 3) or 'mean [min, max]' (n < 3), and n."""
    out = summary[keys].copy()
    out.columns = [k.removeprefix("config.") for k in keys]
    for k in keys:
        if k == "config.lr":
            out[k.removeprefix("config.")] = summary[k].map(fmt_sci)
    for m in metrics:
        if f"{m}.mean" not in summary:
            continue

        def one(r, m=m):
            if not r[f"{m}.n"]:
                return "–"
            if r[f"{m}.n"] >= 3:
                return f"{r[f'{m}.mean']:.3f} ± {r[f'{m}.ci95']:.3f}"
            return f"{r[f'{m}.mean']:.3f} [{r[f'{m}.min']:.3f}, {r[f'{m}.max']:.3f}]"

        out[m] = summary.apply(one, axis=1)
    for c in ("trials", "stopped_early", "diverged"):
        if c in summary:
            out[c] = summary[c]
    return out


def blocks(r, figures: list[tuple[str, str, bytes | None]], summary: pd.DataFrame | None = None,
           found: list[str] | None = None) -> list[tuple]:
    """The report as blocks: (h1|h2|p|ul|table|code|fig, ...). `figures` holds (name, relative
    path, PNG bytes or None); `found`, the findings (computed here when None)."""
    t, m = r.trials, r.manifest
    obj, mode = f"best.{m.get('metric', 'val_acc')}", m.get("mode", "max")
    keys = [f"config.{k}" for k in [*m.get("scientific", []), *m.get("nuisance", [])] if f"config.{k}" in t]
    out = [("h1", f"{m.get('study')}: {m.get('name')}")]
    counts = t["status"].value_counts().to_dict() if "status" in t else {}
    out.append(("p", f"{len(t)} trials ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}); objective: "
                f"{m.get('metric')} ({mode}), ASHA over {m.get('iterations')} iterations (grace "
                f"{(m.get('asha') or {}).get('grace')}, reduction {(m.get('asha') or {}).get('reduction')}); "
                f"seeds {m.get('seeds')}."))
    out += [("h2", "Reproduce"), ("code", f"{command(m)}\npython -m analysis {r.path}")]
    fnd = findings(t, r.curves, m) if found is None else found
    if fnd:
        out += [("h2", "Findings"), ("ul", fnd)]
    if m.get("study") in REFERENCE:
        data = (m.get("fixed") or {}).get("dataset")
        this = f"{data}, budget {m.get('budget')}" if data else f"budget {m.get('budget')}"
        out.append(("p", f"For comparison, the hand-run reports (single runs, full setup): {REFERENCE[m['study']]} "
                         f"This run: {this}."))
    ok = t[t["status"] != "error"] if "status" in t else t
    if obj in ok and len(ok):
        top = ok.sort_values(obj, ascending=(mode == "min")).head(5)
        best = top.iloc[0]
        cfg = ", ".join(f"{k.removeprefix('config.')}={fmt_sci(best[k]) if k == 'config.lr' else fmt(best[k])}"
                        for k in keys + ["config.seed"] if k in best)
        test = f", final test_acc {best['metric.test_acc']:.4f}" if "metric.test_acc" in best else ""
        cols = [c for c in ["trial_id", *keys, "config.seed", obj, "metric.test_acc", "status", "iterations"]
                if c in top]
        out += [("h2", "Best configuration")]
        if summary is not None and f"{obj}.mean" in summary and summary[f"{obj}.mean"].notna().any():
            sb = summary.loc[summary[f"{obj}.mean"].idxmax() if mode == "max" else summary[f"{obj}.mean"].idxmin()]
            scfg = ", ".join(f"{k.removeprefix('config.')}={fmt_sci(sb[k]) if k == 'config.lr' else fmt(sb[k])}"
                             for k in keys if k in sb)
            out.append(("p", f"On average over seeds: {scfg}: best {m.get('metric')} {stat(sb, obj)}"
                        + (f", final test_acc {stat(sb, 'metric.test_acc')}" if "metric.test_acc.mean" in sb else "")
                        + "."))
        out += [("p", f"Best single trial: {cfg}: best {m.get('metric')} {best[obj]:.4f}{test}. The top 5:"),
                ("table", top[cols].assign(**({"config.lr": top["config.lr"].map(fmt_sci)} if "config.lr" in cols
                                               else {})).rename(columns=lambda c: c.removeprefix("config.")))]
    if summary is not None and len(summary) and keys:
        mets = [obj, "metric.test_acc", "metric.train_acc", "metric.gap"]
        out += [("h2", "Over seeds, per configuration"),
                ("p", "Mean ± 95% CI (n >= 3 seeds) or mean [min, max] (fewer seeds); diverged trials are counted "
                      "but left out of the means. Full table: summary.csv / summary.parquet."),
                ("table", compact(summary, [k for k in keys if k in summary], mets))]
    if figures:
        out.append(("h2", "Figures"))
        out += [("fig", name, path, png) for name, path, png in figures]
    out += [("h2", "Manifest"), ("code", json.dumps(m, indent=2, default=str))]
    return out


def _md_table(df: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (pandas' to_markdown needs tabulate; this does not)."""
    head = "| " + " | ".join(map(str, df.columns)) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "".join("| " + " | ".join(_cell(v) for v in row) + " |\n" for row in df.itertuples(index=False))


def to_markdown(bl: list[tuple]) -> str:
    out = []
    for b in bl:
        kind = b[0]
        if kind == "h1":
            out += [f"# {b[1]}", ""]
        elif kind == "h2":
            out += [f"## {b[1]}", ""]
        elif kind == "p":
            out += [b[1], ""]
        elif kind == "ul":
            out += [f"- {x}" for x in b[1]] + [""]
        elif kind == "table":
            out += [_md_table(b[1])]
        elif kind == "code":
            out += ["```", b[1], "```", ""]
        elif kind == "fig":
            out += [f"![{b[1]}]({b[2]})", "", f"*{CAPTIONS.get(b[1], b[1])}*", ""]
    return "\n".join(out)


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:12px}
img{max-width:100%;border:1px solid #eee}figure{margin:1.5em 0}figcaption{color:#555;font-size:14px}
.card{display:inline-block;vertical-align:top;width:48%;margin:0 1% 1.5em 0}"""


def _html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f"<table><tr>{head}</tr>{rows}</table>"


def img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def to_html(bl: list[tuple], title: str) -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{STYLE}</style></head><body>"]
    for b in bl:
        kind = b[0]
        if kind in ("h1", "h2", "p"):
            out.append(f"<{kind}>{html.escape(b[1])}</{kind}>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in b[1]) + "</ul>")
        elif kind == "table":
            out.append(_html_table(b[1]))
        elif kind == "code":
            out.append(f"<pre>{html.escape(b[1])}</pre>")
        elif kind == "fig" and b[3] is not None:
            out.append(f"<figure>{img(b[3], b[1])}<figcaption>{html.escape(CAPTIONS.get(b[1], b[1]))}"
                       "</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)


def report(r, figures, summary: pd.DataFrame | None = None) -> str:
    """report.md. `figures`: relative paths, or (name, path, png) tuples."""
    figs = [f if isinstance(f, tuple) else (f.stem, f.as_posix(), None) for f in figures]
    if summary is None:
        summary = run_summary(r.trials, r.manifest)
    return to_markdown(blocks(r, figs, summary))
