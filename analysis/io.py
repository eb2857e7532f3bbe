"""Atomic writes: every output goes to a temporary file beside its target and is renamed over
it, so an interrupted write never leaves a truncated file behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd


def atomic(path: Path, write: Callable[[str], None]) -> Path:
    """Call write(tmp_path), then rename tmp_path to path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_text(path: Path, text: str) -> Path:
    return atomic(path, lambda tmp: Path(tmp).write_text(text))


def write_table(stem: Path, df: pd.DataFrame) -> list[Path]:
    """`stem`.parquet and `stem`.csv."""
    stem = Path(stem)
    return [atomic(stem.with_suffix(".parquet"), lambda tmp: df.to_parquet(tmp, index=False)),
            atomic(stem.with_suffix(".csv"), lambda tmp: df.to_csv(tmp, index=False))]


def save_figure(fig, path: Path) -> Path:
    fmt = Path(path).suffix.lstrip(".")
    return atomic(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=130, bbox_inches="tight"))
