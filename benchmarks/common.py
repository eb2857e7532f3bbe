"""What every benchmark shares: a description of the machine, timing, and the record in
BENCHMARKS.md (appended atomically: the whole file is rewritten to a temporary file beside it
and renamed over it, under a lock on its folder, so a crash or a second run never leaves it half written)."""

from __future__ import annotations

import fcntl
import os
import platform
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "BENCHMARKS.md"
HEADER = """# Benchmarks

Figures appended by `python -m benchmarks` (see `benchmarks/__init__.py`); newest last. Each
entry names the machine it ran on: compare figures only within one entry, or between entries
of the same machine.
"""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """The machine and software a figure was measured on; the package versions as a study's
    manifest records them (studies.engine.results)."""
    import torch

    from studies.engine.results import _versions

    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in text)
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cpu_flags": flags,
        "torch_threads": torch.get_num_threads(),
        "load_1min": round(load, 2),
        **_versions(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return out


def fmt(v) -> str:
    """A figure as text: thousands with separators, smaller numbers to 3 significant digits."""
    if isinstance(v, float):
        if v != v:
            return "-"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return str(v)


def _formatted(df: pd.DataFrame) -> pd.DataFrame:
    return df.apply(lambda col: col.map(fmt))


def show(title: str, df: pd.DataFrame) -> None:
    print(f"\n{title}")
    print(_formatted(df).to_string(index=False))
    sys.stdout.flush()


def _markdown(df: pd.DataFrame) -> str:
    try:
        return _formatted(df).to_markdown(index=False, stralign="right")
    except ImportError:  # no tabulate: pandas' text table in a code block
        return f"```text\n{_formatted(df).to_string(index=False)}\n```"


def record(name: str, tables: list[tuple[str, pd.DataFrame]], notes: list[str] = (), path: Path = RECORD) -> Path:
    """Append one benchmark's tables and notes, with the machine, to `path` (atomic rename)."""
    m = machine()
    by_hand = Path(sys.argv[0]).parent.name == "benchmarks"  # python -m benchmarks, not a test
    command = " ".join(["python -m benchmarks", *sys.argv[1:]]) if by_hand else None
    lines = [
        f"## {name}: {m['date']}",
        "",
        *([f"`{command}`", ""] if command else []),
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['cpu_flags']}), load {m['load_1min']}; "
        f"GPU: {m['cuda'] or 'none'}; python {m['python']}, torch {m['torch']}, torchvision "
        f"{m['torchvision']}, ray {m['ray']}, optuna {m['optuna']}; {m['platform']}.",
        "",
    ]
    for title, df in tables:
        lines += [f"**{title}**", "", _markdown(df), ""]
    lines += [f"- {n}" for n in notes]
    entry = "\n".join(lines).rstrip() + "\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)  # two benchmarks at once: one after the other
        old = path.read_text() if path.exists() else HEADER
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(old.rstrip() + "\n\n" + entry)
        os.replace(tmp, path)
    finally:
        os.close(folder)  # and with it the lock
    return path
