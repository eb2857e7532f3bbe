"""report.md of a run: the best configuration, the grouped results, the figures, provenance."""

from __future__ import annotations

import json

import pandas as pd

from analysis.tables import summarize


def _md(df: pd.DataFrame, digits: int = 4) -> str:
    """A DataFrame as a Markdown table (pandas' to_markdown needs tabulate; this does not)."""
    def cell(v):
        return f"{v:.{digits}g}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "".join("| " + " | ".join(cell(v) for v in row) + " |\n" for row in df.itertuples(index=False))


def report(r, figures) -> str:
    t, m = r.trials, r.manifest
    mode = m["mode"]
    keys = [f"config.{k}" for k in [*m["scientific"], *m["nuisance"]] if f"config.{k}" in t]
    ok = t[t["status"] != "error"]
    top = ok.sort_values(f"best.{m['metric']}", ascending=(mode == "min")).head(5)
    best = top.iloc[0] if len(top) else None
    lines = [f"# {m['study']}: {m['name']}", ""]
    if m.get("command"):
        lines += ["Reproduce with:", "", f"    {m['command']}", ""]
    counts = t["status"].value_counts().to_dict()
    lines += [f"{len(t)} trials ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}); "
              f"objective: {m['metric']} ({mode}), ASHA over {m['iterations']} iterations; "
              f"seeds {m['seeds']}.", ""]
    if best is not None:
        obj = f"best.{m['metric']}"
        cfg = ", ".join(f"{k.removeprefix('config.')}={best[k]}" for k in keys + ["config.seed"])
        lines += ["## Best configuration", "",
                  f"**{cfg}**: best {m['metric']} {best[obj]:.4f}, "
                  f"final test_acc {best['metric.test_acc']:.4f}.", "",
                  _md(top[["trial_id", *keys, "config.seed", obj, "metric.test_acc", "status"]]), ""]
    sci = [f"config.{k}" for k in m["scientific"] if f"config.{k}" in t]
    if sci:
        s = summarize(ok[~ok["diverged"]], sci, [f"best.{m['metric']}", "metric.test_acc", "metric.train_acc"])
        lines += ["## Over seeds, per scientific value (mean, std, 95% CI, n)", "", _md(s), ""]
    lines += ["## Figures", ""] + [f"![{f.stem}]({f.as_posix()})" for f in figures] + [""]
    lines += ["## Manifest", "", "```json", json.dumps({k: m[k] for k in ("versions", "git_commit", "hardware",
                                                                           "fixed", "started", "finished") if k in m},
                                                     indent=2, default=str), "```", ""]
    return "\n".join(lines)
