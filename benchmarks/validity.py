"""`python -m benchmarks validity [STUDY ...] [--repeats N] [--budget quick|full]`: does each study
reproduce its claims, run after run?

Runs each study's default command N times (default 3), each repeat with new seeds
(`--first-seed`), reads every run's claims table (`analysis.claims`), and writes VALIDITY.md at the
repository root: per study, the commands, and per claim its reference, each repeat's value and
verdict, and how many repeats reproduced it. A study's section is replaced when it runs again;
the other studies' sections stay. Each repeat is the real command line, in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from benchmarks.common import ROOT, machine

RECORD = ROOT / "VALIDITY.md"
HEADER = """# Validity

Does each study reproduce the findings of the hand-run reports (`docs/references.md`) as its
claims state them, run after run? Written by `python -m benchmarks validity` (see
`benchmarks/validity.py`): each study's command is run several times, every repeat with new seeds,
and each claim's verdict is read from the run's claims table (the rule that decides is in
`analysis/verdicts.py` and in each run's report). A claim holds when it is reproduced in every repeat.
"""


def _command(study: str, budget: str, name: str, first_seed: int, storage: str, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        f"studies.{study}",
        "--budget",
        budget,
        "--name",
        name,
        "--storage",
        storage,
        "--first-seed",
        str(first_seed),
        "--overwrite",
        *extra,
    ]


def _finished(run: Path, seeds: list[int]) -> float | None:
    """The wall time of a finished run of these seeds in `run` (from its manifest), or None."""
    try:
        m = json.loads((run / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not m.get("finished") or m.get("seeds") != seeds or not (run / "trials.parquet").is_file():
        return None
    stamp = "%Y-%m-%dT%H:%M:%S"
    return time.mktime(time.strptime(m["finished"], stamp)) - time.mktime(time.strptime(m["started"], stamp))


def run_study(
    study: str, repeats: int, budget: str, storage: str, extra: list[str], reuse: bool = False
) -> tuple[pd.DataFrame, list]:
    """Run `study` `repeats` times; return its claims over the repeats, and the commands with their
    wall times. With `reuse`, a repeat whose run already finished is not run again: its claims are
    read anew from its tables (after a change to the analysis, not to the training)."""
    import analysis
    from studies.engine.confirm import chooses, planned_looks
    from studies.engine.plan import plan

    p = plan(__import__(f"studies.{study}", fromlist=["STUDY"]).STUDY, ["--budget", budget, *extra])
    seeds = len(p.seeds)
    # each repeat's seeds start after the last seed the one before could train (its search's, then its
    # confirmation's at the last planned look), so no two repeats share a seed
    stride = seeds + (planned_looks(p)[-1] if chooses(p) else 0)
    tables, runs = [], []
    for r in range(repeats):
        name = f"validity-{budget}-{r + 1}"
        cmd = _command(study, budget, name, r * stride, storage, extra)
        shown = " ".join(["python", *cmd[1:]]).replace(storage, "STORAGE")
        wall = _finished(Path(storage) / study / name, list(range(r * stride, r * stride + seeds))) if reuse else None
        if wall is not None:
            out = subprocess.CompletedProcess(cmd, 0)
            shown += " (earlier run; claims read anew)"
        else:
            t = time.time()
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            wall = time.time() - t
        if out.returncode != 0:
            tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or [""]
            runs.append((shown, wall, f"failed (exit {out.returncode}): {tail[0]}"))
            continue
        table = analysis.claims(Path(storage) / study / name)
        tables.append(table.assign(repeat=r + 1))
        counts = table["verdict"].value_counts().to_dict()
        runs.append((shown, wall, ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))))
        print(f"  {study} repeat {r + 1}: {wall:.0f} s; {runs[-1][2]}", flush=True)
    return (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()), runs


def _repeat(r: pd.Series) -> str:
    """One repeat's cell: verdict and value, then the effect with its 95% interval, the p-value, the
    seeds a side and the look that decided (where the claims table has them), and why if not reproduced."""
    parts = [f"**{r['verdict']}**: {r['value']}"]
    for key, label in (("effect", "effect"), ("p", "p"), ("seeds", "seeds"), ("look", "look")):
        v = r.get(key)
        if v is not None and str(v) not in ("", "nan"):
            parts.append(f"{label} {v:.3g}" if isinstance(v, float) else f"{label} {v}")
    if r["verdict"] != "reproduced" and r.get("why"):
        parts.append(f"({r['why']})")
    return "; ".join(parts)


def summary(claims: pd.DataFrame, repeats: int) -> pd.DataFrame:
    """One row per claim: reference, each repeat's verdict, value, effect with its interval, p-value,
    seeds and look, and the count reproduced."""
    rows = []
    for text, g in claims.groupby("claim", sort=False):
        row = {"claim": text, "reference": g["reference"].iloc[0]}
        for _, r in g.iterrows():
            row[f"repeat {r['repeat']}"] = _repeat(r)
        row["reproduced"] = f"{int((g['verdict'] == 'reproduced').sum())}/{repeats}"
        rows.append(row)
    return pd.DataFrame(rows)


def rules(texts) -> list[str]:
    """Every rule that decided a claim, once: the rules of `analysis.verdicts` found in the claims' rule
    texts (a claim of several parts joins theirs), and any other rule text as it is."""
    from analysis.verdicts import RULE_BOUND, RULE_GREATER, RULE_NOT_BELOW

    out = []
    for text in texts:
        known = [r for r in (RULE_GREATER, RULE_NOT_BELOW, RULE_BOUND) if r in str(text)]
        out += known or ([str(text)] if text else [])
    return list(dict.fromkeys(out))


def _cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def reference_tables(study: str, storage: str, budget: str, repeats: int) -> list[tuple[str, pd.DataFrame]]:
    """The study's table beside the hand-run one (`reference_table` in its analysis module), per repeat."""
    import analysis
    import studies

    module = studies.analysis_module(study)
    out = []
    for r in range(repeats):
        run = Path(storage) / study / f"validity-{budget}-{r + 1}"
        if getattr(module, "reference_table", None) and (run / "trials.parquet").is_file():
            res = analysis.load(run)
            out.append(
                (f"Repeat {r + 1}, seeds {res.manifest.get('seeds')}", module.reference_table(res.trials, res.manifest))
            )
    return out


def _md(df: pd.DataFrame) -> list[str]:
    return [
        "| " + " | ".join(map(str, df.columns)) + " |",
        "|" + "---|" * len(df.columns),
        *["| " + " | ".join(_cell(v) for v in row) + " |" for row in df.itertuples(index=False)],
    ]


def section(
    study: str, budget: str, table: pd.DataFrame, runs: list, rule: str, extra: list[tuple[str, pd.DataFrame]] = ()
) -> str:
    m = machine()
    lines = [
        f"## {study} ({budget})",
        "",
        f"{m['date']}; {m['cpu']}, {m['cores']} cores, GPU: {m['cuda'] or 'none'}; torch {m['torch']}, "
        f"ray {m['ray']}, optuna {m['optuna']}.",
        "",
        "Commands (STORAGE: a scratch results root):",
        "",
    ]
    lines += [f"- `{cmd}`: {wall:.0f} s; {what}" for cmd, wall, what in runs] + [""]
    if len(table):
        lines += [*_md(table), "", f"Rules: {rule}" if rule else "", ""]
    for title, df in extra:
        lines += [f"**{title}**: this run beside the hand-run reports", "", *_md(df), ""]
    return "\n".join(lines).rstrip() + "\n"


def write_section(path: Path, study: str, budget: str, text: str) -> Path:
    """Replace (or add) the section of `study` at `budget` in VALIDITY.md, atomically."""
    old = path.read_text() if path.exists() else HEADER
    parts = re.split(r"(?m)^(?=## )", old)
    head, sections = parts[0], parts[1:]
    title = f"## {study} ({budget})"
    sections = [s for s in sections if not s.startswith(title + "\n")]
    sections.append(text)
    order = {n: i for i, n in enumerate(("lr_scan", "optimizer_comparison", "regularization", "palindrome"))}
    sections.sort(key=lambda s: (order.get(s[3:].split(" ")[0], 99), s.split("\n")[0]))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(
        head.rstrip()
        + "\n\n"
        + "\n".join(s.rstrip() + "\n" for s in sections).replace("\n## ", "\n\n## ").replace("\n\n\n## ", "\n\n## ")
    )
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    from studies import STUDIES

    p = argparse.ArgumentParser(
        prog="python -m benchmarks validity", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("studies", nargs="*", metavar="STUDY", help=f"default: all ({', '.join(STUDIES)})")
    p.add_argument("--repeats", type=int, default=3, help="runs per study, each with new seeds (default 3)")
    p.add_argument("--budget", default="quick", choices=("smoke", "quick", "full"))
    p.add_argument("--storage", default=str(ROOT / "results" / "validity"), help="where the runs are written")
    p.add_argument("--out", default=str(RECORD), help="the record (default VALIDITY.md)")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="read the claims of repeats that already finished "
        "instead of running them again (after a change to the analysis)",
    )
    p.add_argument("--study-args", default="", help="more flags for every study command, e.g. '--seeds 2'")
    args = p.parse_args(argv)
    unknown = [s for s in args.studies if s not in STUDIES]
    if unknown or args.repeats < 1:
        p.error(
            f"unknown study {', '.join(unknown)}; choose from {', '.join(STUDIES)}"
            if unknown
            else "--repeats must be 1 or more"
        )
    for study in args.studies or STUDIES:
        print(f"\n== validity: {study} ({args.budget}, {args.repeats} repeats) ==", flush=True)
        claims, runs = run_study(study, args.repeats, args.budget, args.storage, args.study_args.split(), args.reuse)
        table = summary(claims, args.repeats) if len(claims) else pd.DataFrame()
        rule = " / ".join(rules(claims["rule"] if len(claims) else []))
        if len(table):
            print(table[["claim", "reproduced"]].to_string(index=False))
        extra = reference_tables(study, args.storage, args.budget, args.repeats)
        text = section(study, args.budget, table, runs, rule, extra)
        print(f"written to {write_section(Path(args.out), study, args.budget, text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
