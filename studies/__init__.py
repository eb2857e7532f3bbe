"""Studies: each is two modules, its declaration `studies/NAME.py` (a `STUDY`, runnable as
`python -m studies.NAME`) and its analysis `studies/NAME_analysis.py` (its headline figure, reference,
captions, figures, findings and claims). `STUDIES` lists every NAME that has both halves, found by
the file names alone (nothing is imported to list them); `analysis_module(NAME)` imports the second.

The project root goes first on `sys.path` before anything imports `datasets`: the top-level
name is also Hugging Face's package, and ours must win, here and in Ray's workers (which get
the same order through `runner.runtime_env`).
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
    """The analysis module of study `name` (`studies.NAME_analysis`); None for a name that is not a
    study in `STUDIES` (a run of such a study gets the figures and findings every run gets)."""
    if name not in STUDIES:
        return None
    return importlib.import_module(f"{__name__}.{name}_analysis")
