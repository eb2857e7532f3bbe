"""python -m studies NAME [flags]: run study NAME, the same as python -m studies.NAME."""

from __future__ import annotations

import importlib
import sys

from studies import STUDIES


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(f"usage: python -m studies NAME [flags]   (NAME: {', '.join(STUDIES)}; NAME --help for flags)")
        return 0
    if not argv or argv[0] not in STUDIES:
        what = f"unknown study {argv[0]!r}" if argv else "no study given"
        print(f"python -m studies: error: {what}: choose one of {', '.join(STUDIES)}", file=sys.stderr)
        return 2
    return importlib.import_module(f"studies.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
