"""A run's analysis module (its `HEADLINE`, `REFERENCE`, `CAPTIONS`, `figures`, `findings`, `CLAIMS`
and optionally `CURVE_HUE`), found from what the run's manifest records: the module's importable
name and the folder it imports from (`manifest["analysis"]`, written by the engine). Imported by
name at run time, so this package never imports `studies`: a catalogue study's module is
`studies.NAME_analysis`, a user's lives in the user's own folder."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType


class AnalysisImportError(Exception):
    """The analysis module that a manifest names cannot be imported: one line that says which and why."""


def import_analysis(name: str, root: str | None = None) -> ModuleType:
    """The module `name`, importable from `root` (put at the end of sys.path where it is not there)."""
    if root and root not in sys.path:
        sys.path.append(root)
    try:
        return importlib.import_module(name)
    except Exception as e:  # the user's module may raise anything at import
        where = f" (from {root})" if root else ""
        raise AnalysisImportError(f"cannot import the analysis module {name}{where}: {type(e).__name__}: {e}") from e


def analysis_module(manifest: dict) -> ModuleType | None:
    """The analysis module of the run that `manifest` describes, or None where it names none (a run of
    such a study gets the figures and findings every run gets). A manifest written before modules were
    recorded names its catalogue study only: `studies.<study>_analysis`, where that exists."""
    if "analysis" in manifest:
        spec = manifest["analysis"]
        return import_analysis(spec["module"], spec.get("root")) if spec else None
    name = f"studies.{manifest.get('study', '')}_analysis"
    try:
        found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        found = False
    return import_analysis(name) if found else None
