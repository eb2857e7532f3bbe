"""Atomic writes: every output goes to a temporary file beside its target and is renamed over
it, so an interrupted write never leaves a truncated file behind. (Named `files`, not `io`, so
that it never shadows the standard library's `io`.)"""

from __future__ import annotations

import functools
import io
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Testing hook: seconds to wait between writing a temporary file and renaming it, so that a test
# can kill a study in the middle of writing its tables.
WRITE_DELAY = float(os.environ.get("STUDIES_TEST_WRITE_DELAY", "0") or 0)


@functools.cache
def umask() -> int:
    """The process's umask, read once when first needed (from /proc where there is one, so that it is
    never changed; else set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def clean_temporaries(folder: Path) -> None:
    """Remove the temporaries that an interrupted write left in `folder` (and figures/)."""
    for tmp in [*Path(folder).glob(".*.tmp"), *Path(folder).glob("figures/.*.tmp")]:
        tmp.unlink(missing_ok=True)


def atomic(path: Path, write: Callable[[str], None]) -> Path:
    """Call write(tmp_path), then rename tmp_path to path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes it private; results are as readable as any new file
        if WRITE_DELAY:
            time.sleep(WRITE_DELAY)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_text(path: Path, text: str) -> Path:
    """`text` to `path`, atomically."""
    return atomic(path, lambda tmp: Path(tmp).write_text(text))


def write_table(stem: Path, df: pd.DataFrame) -> list[Path]:
    """`stem`.parquet and `stem`.csv."""
    stem = Path(stem)
    return [
        atomic(stem.with_suffix(".parquet"), lambda tmp: df.to_parquet(tmp, index=False)),
        atomic(stem.with_suffix(".csv"), lambda tmp: df.to_csv(tmp, index=False)),
    ]


def save_figure(fig: Figure, path: Path, dpi: int = 100) -> Path:
    """The figure in the format of `path`'s suffix (png, pdf, svg), atomically."""
    fmt = Path(path).suffix.lstrip(".")
    return atomic(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight"))


def write_bytes(path: Path, data: bytes) -> Path:
    """`data` to `path`, atomically."""
    return atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (for files, and for embedding in HTML)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()
