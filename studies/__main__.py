"""python -m studies STUDY [flags]: run a study, where STUDY is

- a catalogue name (`lr_scan`: the same as `python -m studies.lr_scan`),
- the path of a module of one's own that defines a `STUDY` (`path/to/my_study.py`), or
- its dotted name (`my_pkg.my_study`, importable from the working folder).
"""

from __future__ import annotations

import importlib
import shlex
import sys

from studies import STUDIES


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(
            f"usage: python -m studies STUDY [flags]   (STUDY: {', '.join(STUDIES)}, a path/to/my_study.py or "
            "a dotted module name; STUDY --help for flags)"
        )
        return 0
    if not argv:
        print(
            f"python -m studies: error: no study given: choose one of {', '.join(STUDIES)}, or give a "
            "path/to/my_study.py",
            file=sys.stderr,
        )
        return 2
    if argv[0] in STUDIES:
        return importlib.import_module(f"studies.{argv[0]}").main(argv[1:])
    from studies.engine.checks import UsageError
    from studies.engine.runner import run
    from studies.engine.source import load_study

    try:
        study, source = load_study(argv[0])
    except UsageError as e:
        hint = "" if ("/" in argv[0] or "." in argv[0]) else f" (catalogue: {', '.join(STUDIES)})"
        print(f"python -m studies: error: {e}{hint}", file=sys.stderr)
        return 2
    return run(study, argv[1:], source=source, command=shlex.join(["python", "-m", "studies", *argv]))


if __name__ == "__main__":
    raise SystemExit(main())
