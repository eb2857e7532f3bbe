"""A run's report, as `report.md` and a self-contained `report.html` (figures embedded as base64
PNG): first the claims table (what the study expects to find, and whether this run reproduced it),
then the command that reproduces the run, the findings, the best configurations, the results over
seeds per scientific value, the figures and the manifest. Both are built from one list of blocks.
The study's captions, reference and claims come from its analysis module (`analysis.modules`)."""

from __future__ import annotations

import html
import json
import shlex
from typing import TYPE_CHECKING

import pandas as pd

from analysis.data import MIN_CI, interval, spread, stat
from analysis.modules import analysis_module
from analysis.selection import CONFIRM, SEARCH, matches, phase, selection
from analysis.selection import best as best_setting
from analysis.sequential import evaluate as evaluate_looks
from analysis.sequential import rule as looks_rule
from analysis.style import CSS, SCI_KEYS, cell, config_text, fmt_sci, img, key
from analysis.verdicts import INCONCLUSIVE, ended

if TYPE_CHECKING:
    from analysis import Results  # type only: the package imports this module, not the reverse

# Captions of the figures every run gets; a study's own are in its module's CAPTIONS.
CAPTIONS = {
    "hparam_axes": "Basic hyperparameter-axis plots: the objective of every trial against each hyperparameter.",
    "curves_all_trials": "Learning curves of all trials; faded: stopped by ASHA; dashed: ASHA's rungs.",
}
Block = tuple  # (kind, ...): h1, h2, p, ul, table, code, fig


def claims_table(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    """The run's claims table (`analysis.verdicts.evaluate` of its study's CLAIMS): claim, reference,
    value, verdict, rule, why, effect, p, seeds, look (`analysis.sequential`); no rows for a study that
    declares no claims. Each reference cites the module's `REFERENCES` (where the hand-run reference is
    told in full)."""
    module = analysis_module(manifest)
    table = evaluate_looks(getattr(module, "CLAIMS", None) or [], trials, curves, manifest)
    cite = getattr(module, "REFERENCES", None)  # the account of the references (docs/references.md#NAME)
    if cite and len(table):
        table["reference"] = [r if cite in r else f"{r} [{cite}]" for r in table["reference"]]
    return table


def command(manifest: dict) -> str:
    """The command that reproduces the run: the one that was run, flags included, from the folder it
    was run in (both in the manifest); for an older manifest, rebuilt from budget and name."""
    if manifest.get("command"):
        cwd = manifest.get("cwd")
        return f"cd {shlex.quote(cwd)} && {manifest['command']}" if cwd else manifest["command"]
    cmd = f"python -m studies.{manifest.get('study')}"
    if manifest.get("budget") and manifest["budget"] != "quick":
        cmd += f" --budget {manifest['budget']}"
    if manifest.get("name") and manifest.get("name") != manifest.get("budget", "quick"):
        cmd += f" --name {manifest['name']}"
    return cmd


def compact(summary: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """The summary as text cells: 'mean ± ci' (n >= 3) or 'mean [min, max]' (n < 3), and n."""
    out = summary[keys].copy()
    out.columns = [k.removeprefix("config.") for k in keys]
    for k in keys:
        if key(k) in SCI_KEYS:
            out[key(k)] = summary[k].map(fmt_sci)
    for m in metrics:
        if f"{m}.mean" not in summary:
            continue

        def one(r, m=m):
            if not r[f"{m}.n"]:
                return "–"
            lo, hi = interval(r, m)
            if r[f"{m}.n"] >= MIN_CI:
                return f"{r[f'{m}.mean']:.3f} ± {(hi - lo) / 2:.3f}"
            return f"{r[f'{m}.mean']:.3f} [{lo:.3f}, {hi:.3f}]"

        out[m] = summary.apply(one, axis=1)
    for c in ("trials", "stopped_early", "diverged"):
        if c in summary:
            out[c] = summary[c]
    return out


def claims_blocks(table: pd.DataFrame, study: str, plan: list[int] | None = None) -> list[Block]:
    """The Claims section: one row per claim (its reference, this run's value with its spread, the effect
    with its 95% interval, the p-value, the seeds a side, the look that decided it where there are several,
    the verdict and why where inconclusive), then one line per distinct rule that decided, and the
    sequential rule over the looks (`plan`, `analysis.sequential`)."""
    out: list[Block] = [("h2", "Claims")]
    if not len(table):
        return out + [("p", "This study declares no claims (CLAIMS in its analysis module).")]
    verdict = [f"{v}: {why}" if why and v == INCONCLUSIVE else v for v, why in zip(table["verdict"], table["why"])]
    out.append(
        (
            "table",
            pd.DataFrame(
                {
                    "claim": table["claim"],
                    "reference": table["reference"],
                    "this run": table["value"],
                    "effect [95% CI]": table["effect"] if "effect" in table else "",
                    "p": [f"{p:.3g}" if pd.notna(p) else "" for p in table.get("p", [float("nan")] * len(table))],
                    "seeds": table["seeds"] if "seeds" in table else "",
                    **({"look": table["look"]} if plan and len(plan) > 1 else {}),
                    "verdict": verdict,
                }
            ),
            "text",
        )
    )
    out += [("p", f"Rule: {rule}") for rule in dict.fromkeys(r for r in table["rule"] if r)]
    if plan:
        out.append(("p", f"Seeds: {looks_rule(plan)}."))
    return out


def test_metric(objective: str) -> str:
    """The test counterpart of a validation objective: val_ppl -> test_ppl; else test accuracy."""
    return "test_" + objective.removeprefix("val_") if objective.startswith("val_") else "test_acc"


def _best_blocks(r: Results, keys: list[str], summary: pd.DataFrame | None) -> list[Block]:
    """The best configuration: on average over seeds, and the best single trials."""
    t, m = r.trials, r.manifest
    obj, mode = f"best.{m.get('metric', 'val_acc')}", m.get("mode", "max")
    tm = test_metric(m.get("metric", "val_acc"))
    ok = t[t["status"] != "error"] if "status" in t else t
    if obj not in ok or not len(ok):
        return []
    top = ok.sort_values(obj, ascending=(mode == "min")).head(5)
    best = top.iloc[0]
    cfg = config_text(best, [k for k in keys + ["config.seed"] if k in best])
    test = f", final {tm} {best[f'metric.{tm}']:.4f}" if f"metric.{tm}" in best else ""
    cols = [c for c in ["trial_id", *keys, "config.seed", obj, f"metric.{tm}", "status", "iterations"] if c in top]
    out: list[Block] = [("h2", "Best configuration")]
    chosen = best_setting(t, m)
    if summary is not None and len(chosen):
        on = [c for c in chosen.columns if c.startswith("config.")]
        sb = summary[matches(summary, chosen)] if on else summary
        fresh = sb[sb["phase"] == CONFIRM] if "phase" in sb else sb.iloc[:0]  # its confirmation, where it has one
        sb = (fresh if len(fresh) else sb).iloc[0]
        val = f"metric.{m.get('metric', 'val_acc')}"
        out.append(
            (
                "p",
                f"On average over seeds (the selection rule, on validation): {config_text(sb, on) or 'all'}: final "
                f"{m.get('metric')} {stat(sb, val) if f'{val}.mean' in sb else f'{chosen.score.iloc[0]:.4f}'}"
                + (f", final {tm} {stat(sb, f'metric.{tm}')}" if f"metric.{tm}.mean" in sb else "")
                + ".",
            )
        )
    shown = top[cols].assign(**{c: top[c].map(fmt_sci) for c in cols if c.startswith("config.") and key(c) in SCI_KEYS})
    return out + [
        ("p", f"Best single trial: {cfg}: best {m.get('metric')} {best[obj]:.4f}{test}. The top 5:"),
        ("table", shown.rename(columns=lambda c: c.removeprefix("config."))),
    ]


def confirmation_blocks(r: Results) -> list[Block]:
    """Search and confirmation side by side: each chosen configuration's validation objective and test
    metric over its search seeds (what chose it) and over its confirmation seeds (fresh: what is reported)."""
    t, m = r.trials, r.manifest
    if "phase" not in t or not (t["phase"] == CONFIRM).any():
        if m.get("samples") == 1 and m.get("nuisance") and not m.get("select"):
            tried = ", ".join(f"{k} {fmt_sci(v)}" for k, v in (m.get("search_first") or {}).items())
            return [
                ("h2", "Search and confirmation"),
                (
                    "p",
                    f"This budget tries one nuisance setting per scientific value{f' ({tried})' if tried else ''}: "
                    "nothing is chosen, so nothing is confirmed, and the claims read the search seeds, which no "
                    "selection favoured.",
                ),
            ]
        return []
    obj, tm = f"metric.{m.get('metric', 'val_acc')}", f"metric.{test_metric(m.get('metric', 'val_acc'))}"
    chosen = selection(t, m)
    keys = [c for c in chosen.columns if c.startswith("config.")]
    rows = []
    for _, c in chosen.iterrows():
        at = t[matches(t, c.to_frame().T)]
        row = {k.removeprefix("config."): fmt_sci(c[k]) if key(k) in SCI_KEYS else c[k] for k in keys}
        for name, ph in (("search", phase(at, SEARCH)), ("confirm", phase(at, CONFIRM))):
            done = ended(ph)
            for col in (obj, tm):
                row[f"{col.removeprefix('metric.')} ({name})"] = spread(done[col]).text(3) if col in done else ""
            row[f"seeds ({name})"] = ", ".join(str(int(v)) for v in sorted(ph["config.seed"].unique()))
        rows.append(row)
    return [
        ("h2", "Search and confirmation"),
        (
            "p",
            "Each scientific value's configuration, chosen on the search seeds' validation objective "
            "(`analysis.selection`), trained again on fresh seeds: the claims and the headline figures read the "
            "confirmation seeds, whose values the choice never saw."
            + (
                " A budget that confirms only the values its claims read (`Budget.confirm`) leaves the others "
                "on their search seeds (–)."
                if any(not r.get("seeds (confirm)") for r in rows)
                else ""
            ),
        ),
        ("table", pd.DataFrame(rows), "text"),
    ]


def blocks(
    r: Results,
    figures: list[tuple[str, str, bytes | None]],
    summary: pd.DataFrame | None,
    found: list[str],
    claims: pd.DataFrame | None = None,
) -> list[Block]:
    """The report as blocks: (h1|h2|p|ul|table|code|fig, ...). `figures` holds (name, relative
    path, PNG bytes or None); `found`, the findings; `claims`, the claims table (computed when None)."""
    t, m = r.trials, r.manifest
    module = analysis_module(m)
    keys = [f"config.{k}" for k in [*m.get("scientific", []), *m.get("nuisance", [])] if f"config.{k}" in t]
    out: list[Block] = [("h1", f"{m.get('study')}: {m.get('name')}")]
    if m.get("missing_trials"):  # never a partial table presented as a finished study
        out.append(
            (
                "p",
                f"Incomplete: {m['missing_trials']} planned trials did not finish; these tables, claims and figures "
                "rest on the rest. Run the study's command again with --resume to finish them.",
            )
        )
    table = claims_table(t, r.curves, m) if claims is None else claims
    out += claims_blocks(table, m.get("study", ""), m.get("looks") if m.get("confirm_seeds") else None)
    counts = t["status"].value_counts().to_dict() if "status" in t else {}
    out += [
        ("h2", "Run"),
        (
            "p",
            f"{len(t)} trials ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}); objective: "
            f"{m.get('metric')} ({m.get('mode', 'max')}), ASHA over {m.get('iterations')} iterations (grace "
            f"{(m.get('asha') or {}).get('grace')}, reduction {(m.get('asha') or {}).get('reduction')}); "
            f"seeds {m.get('seeds')}.",
        ),
    ]
    out += [("h2", "Reproduce"), ("code", f"{command(m)}\npython -m analysis {shlex.quote(str(r.path))}")]
    if found:
        out += [("h2", "Findings"), ("ul", found)]
    if getattr(module, "REFERENCE", None):
        data = (m.get("fixed") or {}).get("dataset")
        this = f"{data}, budget {m.get('budget')}" if data else f"budget {m.get('budget')}"
        out.append(
            (
                "p",
                f"For comparison, the hand-run reports (single runs, full setup): {module.REFERENCE} This run: {this}.",
            )
        )
    out += _best_blocks(r, keys, summary)
    out += confirmation_blocks(r)
    if summary is not None and len(summary) and keys:
        mets = [
            f"best.{m.get('metric', 'val_acc')}",
            f"metric.{test_metric(m.get('metric', 'val_acc'))}",
            "metric.test_acc",
            "metric.train_acc",
            "metric.gap",
        ]
        mets = list(dict.fromkeys(mets))
        out += [
            ("h2", "Over seeds, per configuration"),
            (
                "p",
                "Mean ± 95% CI (n >= 3 seeds) or mean [min, max] (fewer seeds); diverged trials are counted "
                "but left out of the means. Full table: summary.csv / summary.parquet.",
            ),
            ("table", compact(summary, [k for k in keys if k in summary], mets)),
        ]
    if figures:
        captions = {**CAPTIONS, **getattr(module, "CAPTIONS", {})}
        out.append(("h2", "Figures"))
        out += [("fig", name, path, png, captions.get(name, name)) for name, path, png in figures]
    out += [("h2", "Manifest"), ("code", json.dumps(m, indent=2, default=str))]
    return out


def _md_table(df: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (pandas' to_markdown needs tabulate; this does not)."""
    head = "| " + " | ".join(map(str, df.columns)) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "".join(
        "| " + " | ".join(cell(v).replace("|", "\\|").replace("\n", " ") for v in row) + " |\n"
        for row in df.itertuples(index=False)
    )


def to_markdown(bl: list[Block]) -> str:
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
            out += [f"![{b[1]}]({b[2]})", "", f"*{b[4]}*", ""]
    return "\n".join(out)


def _html_table(df: pd.DataFrame, cls: str | None = None) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell(v))}</td>" for v in row) + "</tr>"
        for row in df.itertuples(index=False)
    )
    return f"<table{f' class={cls!r}' if cls else ''}><tr>{head}</tr>{rows}</table>"


def to_html(bl: list[Block], title: str) -> str:
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>"
    ]
    for b in bl:
        kind = b[0]
        if kind in ("h1", "h2", "p"):
            out.append(f"<{kind}>{html.escape(b[1])}</{kind}>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in b[1]) + "</ul>")
        elif kind == "table":
            out.append(_html_table(b[1], b[2] if len(b) > 2 else None))
        elif kind == "code":
            out.append(f"<pre>{html.escape(b[1])}</pre>")
        elif kind == "fig" and b[3] is not None:
            out.append(f"<figure>{img(b[3], b[1])}<figcaption>{html.escape(b[4])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)
