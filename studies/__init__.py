"""Studies: one module per study, each runnable as `python -m studies.NAME`.

The project root goes first on `sys.path` before anything imports `datasets`: the top-level
name is also Hugging Face's package, and ours must win, here and in Ray's workers (which get
the same order through `runner.runtime_env`).
"""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if sys.path[:1] != [_ROOT]:
    sys.path.insert(0, _ROOT)
_ds = sys.modules.get("datasets")
if _ds is not None and not getattr(_ds, "IS_STUDIES_DATASETS", False):
    for _m in [m for m in sys.modules if m == "datasets" or m.startswith("datasets.")]:
        del sys.modules[_m]  # a namesake imported first: forget it, ours is imported next

STUDIES = ("lr_scan", "optimizer_comparison", "regularization", "palindrome")
