"""Where a study's code lives, and what a run records of it: its module (a file path or a dotted
name, resolved the way pytest resolves a test file: up through the folders that hold an
`__init__.py`, and the folder above them goes on sys.path), the folder it imports from (which Ray's
workers get too), its analysis module, the git state of its repository, and the command that reran
it. A catalogue study is `studies.NAME`; a user's lives anywhere.
"""

from __future__ import annotations

import importlib
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from studies.engine.checks import UsageError
from studies.engine.study import Study
from studies.engine.task import import_ref

PROJECT = Path(__file__).resolve().parents[2]  # the folder that holds studies/, models/, datasets/, analysis/


@dataclass(frozen=True)
class Source:
    """A study's module: its importable name, the folder it imports from, and its file."""

    module: str
    root: str
    file: str | None = None

    @property
    def external(self) -> bool:
        """Whether the study lives outside this project (its folder must reach Ray's workers)."""
        return Path(self.root).resolve() != PROJECT

    def reference(self) -> str:
        """How `python -m studies` names the module again: the catalogue's by name, a user's by its
        file (relative to the working folder where it lies below it)."""
        if not self.external or not self.file:
            return self.module
        f = Path(self.file).resolve()
        try:
            return str(f.relative_to(Path.cwd()))
        except ValueError:
            return str(f)


def import_name(path: Path) -> tuple[str, Path]:
    """The dotted name of the module file `path` and the folder it imports from: up through every
    folder that holds an `__init__.py`."""
    path = path.resolve()
    parts, folder = [path.stem], path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts), folder


def _import(name: str, root: Path | None) -> ModuleType:
    if root is not None and str(root) not in sys.path:
        sys.path.insert(1, str(root))  # after the project root (studies/__init__ keeps it first)
    return importlib.import_module(name)


def load_study(ref: str) -> tuple[Study, Source]:
    """The STUDY of the module at path `ref` (ending in .py) or of the module named `ref` (dotted);
    UsageError where there is none, with what to do."""
    looks_like_path = ref.endswith(".py") or os.sep in ref
    if looks_like_path:
        path = Path(ref).expanduser()
        if not path.is_file():
            raise UsageError(f"{ref}: no such file; give a study module's path (my_study.py) or its dotted name")
        name, root = import_name(path)
    else:
        name, root = ref, Path.cwd()  # as `python -m` does, the working folder is importable
    try:
        module = _import(name, root)
    except ModuleNotFoundError as e:
        if e.name and name.startswith(e.name):
            raise UsageError(
                f"{ref}: no module {e.name!r} here; give a study module's path or its dotted name "
                "(from the folder it imports from)"
            ) from None
        raise UsageError(f"{ref}: importing it failed: {type(e).__name__}: {e}") from None
    except Exception as e:  # the user's module may raise anything at import
        raise UsageError(f"{ref}: importing it failed: {type(e).__name__}: {e}") from None
    study = getattr(module, "STUDY", None)
    if not isinstance(study, Study):
        raise UsageError(f"{ref}: defines no STUDY (a studies.Study); declare one at the module's top level")
    file = getattr(module, "__file__", None)
    return study, Source(module.__name__, str(_root_of(module.__name__, file, root)), file)


def _root_of(name: str, file: str | None, fallback: Path) -> Path:
    if not file:
        return fallback
    folder = Path(file).resolve().parent
    for _ in name.split(".")[1:]:
        folder = folder.parent
    return folder


def source_of(study: Study) -> Source:
    """The module that declares `study` (the one whose STUDY it is), wherever it was imported from; a
    module run as a script (`python my_study.py`) is named as it would be imported."""
    for name, module in list(sys.modules.items()):
        if getattr(module, "STUDY", None) is study and name != "__mp_main__":
            file = getattr(module, "__file__", None)
            if name == "__main__" and file:
                name, root = import_name(Path(file))
                return Source(name, str(root), file)
            return Source(name, str(_root_of(name, file, Path.cwd())), file)
    return Source(f"studies.{study.name}", str(PROJECT), None)  # declared in code, not in a module


def analysis_spec(study: Study, source: Source) -> dict | None:
    """What the manifest records of the study's analysis module: {module, root}, or None where it has
    none. `Study.analysis` names it (`__main__`: the study's own module); by default a study named as
    one of the catalogue's has `studies.NAME_analysis`."""
    from studies import STUDIES

    name = study.analysis
    if name in ("__main__", source.module):
        return {"module": source.module, "root": source.root}
    if name is None:  # a catalogue study, or one derived from it (dataclasses.replace), has the catalogue's
        return {"module": f"studies.{study.name}_analysis", "root": str(PROJECT)} if study.name in STUDIES else None
    return {"module": name, "root": source.root}


def resolve_trainable(ref: Any) -> Any:
    """A study's own trainable, given as a function or as an importable `module:NAME`."""
    if callable(ref):
        return ref
    try:
        fn = import_ref(str(ref), "trainable", "give a function train(config) or module:NAME")
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not callable(fn):
        raise UsageError(f"trainable={ref!r} is a {type(fn).__name__}, not a function train(config)")
    return fn


def git_state(folder: str | Path) -> dict | None:
    """The git repository that holds `folder`: its top folder, commit and whether its work tree has
    changes (tracked or untracked); None outside a repository or without git."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if not top:
        return None
    status = git("status", "--porcelain")
    return {
        "root": top.strip(),
        "commit": (git("rev-parse", "HEAD") or "").strip() or None,
        "dirty": bool(status.strip()) if status is not None else None,
    }


def command(source: Source, argv: list[str]) -> str:
    """The command that runs this study again with these flags."""
    if source.external:
        return shlex.join(["python", "-m", "studies", source.reference(), *argv])
    return shlex.join(["python", "-m", source.module, *argv])
