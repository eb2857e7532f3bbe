"""`python -m benchmarks [NAME ...] [--quick]`: run benchmarks, print their tables, append them to
BENCHMARKS.md. `python -m benchmarks validity [STUDY ...] [--repeats N]`: the studies' claims over
repeats, into VALIDITY.md (see benchmarks/validity.py)."""

from __future__ import annotations

import argparse
import importlib
import sys
import time

import benchmarks
from benchmarks import NAMES
from benchmarks.common import RECORD, record, show


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["validity"]:  # its own flags, and its own record: VALIDITY.md
        from benchmarks import validity

        return validity.main(argv[1:])
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=benchmarks.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(NAMES)} (default: all)")
    p.add_argument("--quick", action="store_true", help="fewer steps and rounds; smoke budgets for the study runs")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for the throughput and packed benchmarks, the same on both sides "
        "(default 1: what a trial gets at --cpus-per-trial 1)",
    )
    p.add_argument("--compile", action="store_true", help="gpu: add a torch.compile variant (minutes to compile)")
    p.add_argument("--out", default=str(RECORD), help="where to append the figures (default BENCHMARKS.md)")
    p.add_argument("--no-record", action="store_true", help="print only")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in NAMES]
    if unknown:
        p.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    for name in args.names or NAMES:
        mod = importlib.import_module(f"benchmarks.{name}")
        print(f"\n== {name} ==", flush=True)
        t = time.perf_counter()
        kwargs = {"quick": args.quick}
        if name in ("throughput", "packed", "compiled"):
            kwargs["threads"] = args.threads
        if name == "gpu":
            kwargs["compile"] = args.compile
        out = mod.run(**kwargs)
        if out is None:  # skipped
            continue
        tables, notes = out
        for title, df in tables:
            show(title, df)
        for n in notes:
            print(f"  - {n}")
        print(f"({name}: {time.perf_counter() - t:.0f} s)")
        if not args.no_record:
            print(f"appended to {record(name + (' (quick)' if args.quick else ''), tables, notes, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
