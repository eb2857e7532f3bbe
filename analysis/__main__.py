"""python -m analysis RESULTS_DIR [RESULTS_DIR ...] [--out DIR] [--format png|pdf|svg]"""

from __future__ import annotations

import argparse
import sys

from analysis import ResultsError, load, render


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis", description="Re-render tables' figures and reports.")
    p.add_argument("runs", nargs="+", help="run folders, e.g. results/lr_scan/quick")
    p.add_argument("--out", help="write figures and reports here instead of into each run folder")
    p.add_argument("--format", choices=("png", "pdf", "svg"), default="png")
    a = p.parse_args(argv)
    for run in a.runs:
        try:
            load(run)
        except ResultsError as e:
            print(f"python -m analysis: error: {e}", file=sys.stderr)
            return 2
    for run in a.runs:
        out = None
        if a.out:
            r = load(run)
            out = f"{a.out}/{r.manifest['study']}/{r.manifest['name']}"
        w = render(run, out, a.format)
        print(f"{run}: {len(w['figures'])} figures, report {w['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
