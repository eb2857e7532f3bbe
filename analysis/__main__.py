"""python -m analysis RESULTS_DIR [RESULTS_DIR ...] [--out DIR] [--format png|pdf|svg]

Re-renders the summary table, claims table, figures, report.md and report.html of each run; a RESULTS_DIR
that is a results root (holding <study>/<name>/trials.parquet) stands for every run under it, and
gets an index.html and summary.png over them (or --out does). Bad input: one line, exit code 2,
nothing written.

python -m analysis dashboard RUN [--port N]: the live view, optuna-dashboard on the run's Optuna
database (`analysis.dashboard`)."""

from __future__ import annotations

import argparse
import sys

from analysis import ResultsError, render_all
from analysis.modules import AnalysisImportError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        raise ResultsError(message)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["dashboard"]:
        from analysis import dashboard

        return dashboard.main(argv[1:])
    p = _Parser(
        prog="python -m analysis",
        description="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "runs", nargs="+", metavar="RESULTS_DIR", help="run folders (results/lr_scan/quick) or results roots (results)"
    )
    p.add_argument("--out", help="write everything here (as <study>/<name>/...) instead of into each run folder")
    p.add_argument("--format", choices=("png", "pdf", "svg"), default="png", help="figure files (default png)")
    try:
        a = p.parse_args(argv)
        done = render_all(a.runs, a.out, a.format)
    except (ResultsError, AnalysisImportError) as e:
        print(f"python -m analysis: error: {e}", file=sys.stderr)
        return 2
    for run, w in done["runs"].items():
        print(f"{run}: {len(w['figures'])} figures, {w['report']}, {w['html']}")
    for ix in done["indexes"]:
        print(f"index: {ix['index']}, {ix['summary_png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
