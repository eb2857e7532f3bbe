"""Hyperparameter studies on Ray Tune: the catalogue, the engine that runs it, and the API a study of
one's own is written in.

- The catalogue: each study is two modules, its declaration `studies/NAME.py` (a `STUDY`, runnable
  as `python -m studies.NAME`) and its analysis `studies/NAME_analysis.py` (its headline figure,
  reference, captions, figures, findings and claims). `STUDIES` lists every NAME that has both
  halves, found by the file names alone (nothing is imported to list them).
- The engine, `studies.engine`: the study declaration, the task protocol, the training loop, the
  command line, the searcher and scheduler, the tables and the Ray environment.
- The public API, importable from here (`from studies import Study, Budget, cross, run, Task, ...`):
  declarations, the task protocol and its default parts, the report helper of a study's own
  trainable, and the claim rules. Names load on first use, so `import studies` stays light.

The project root goes first on `sys.path` before anything imports `datasets`: the top-level
name is also Hugging Face's package, and ours must win, here and in Ray's workers (which get
the same order through `studies.engine.cluster.runtime_env`).
"""

import importlib
import sys
from pathlib import Path
from types import ModuleType

_ROOT = str(Path(__file__).resolve().parent.parent)
if sys.path[:1] != [_ROOT]:
    sys.path.insert(0, _ROOT)
_ds = sys.modules.get("datasets")
if _ds is not None and not getattr(_ds, "IS_STUDIES_DATASETS", False):
    for _m in [m for m in sys.modules if m == "datasets" or m.startswith("datasets.")]:
        del sys.modules[_m]  # a namesake imported first: forget it, ours is imported next


def _discover(folder: Path) -> tuple[str, ...]:
    """Every NAME with both `folder/NAME.py` and `folder/NAME_analysis.py`, sorted."""
    names = (p.name.removesuffix("_analysis.py") for p in folder.glob("*_analysis.py"))
    return tuple(sorted(n for n in names if (folder / f"{n}.py").is_file()))


STUDIES = _discover(Path(__file__).resolve().parent)


def analysis_module(name: str) -> ModuleType | None:
    """The analysis module of catalogue study `name` (`studies.NAME_analysis`); None for a name that
    is not in `STUDIES`."""
    if name not in STUDIES:
        return None
    return importlib.import_module(f"{__name__}.{name}_analysis")


_API = {  # public name -> the module that defines it
    **dict.fromkeys(("Study", "Budget", "cross", "BUDGETS"), "studies.engine.study"),
    "run": "studies.engine.runner",
    **dict.fromkeys(
        ("Task", "Data", "epochs", "classify", "evaluate", "loss_fn", "resolve_task"), "studies.engine.task"
    ),
    **dict.fromkeys(("report_seeds", "seed_metrics", "mean_over_seeds"), "studies.engine.seeds"),
    **dict.fromkeys(
        ("Claim", "Verdict", "sample", "tuned", "greater", "not_below", "about_equal", "at_least", "learned", "every"),
        "analysis.verdicts",
    ),
}
__all__ = ["STUDIES", "analysis_module", *_API]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'studies' has no attribute {name!r}")
