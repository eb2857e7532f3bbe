"""A trial's checkpoint: what `save_state` writes (every replica's model and generator, every unit's
optimizer and lr schedule, the counters, the global RNG states) and how it is read back.

A checkpoint is written whole or not at all: state.pt goes to a temporary file that is renamed,
and state.json beside it holds its size and CRC-32. `read_state` checks both, so a checkpoint cut
short by a full disk (or corrupted) is never loaded; `restore` then falls back to the trial's
checkpoint before it, and starts the trial over where none is whole.
"""

from __future__ import annotations

import json
import os
import random
import sys
import zlib
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from studies.engine.loop import Unit

STATE, DIGEST = "state.pt", "state.json"  # a checkpoint's files: the state, then its size and CRC-32


def _crc32(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return crc


def save_state(path: str, units: list[Unit], **counters) -> None:
    """Every replica's model and generator, every unit's optimizer and lr schedule, the counters, and
    the global RNG states, into `path`/state.pt, written to a temporary file and renamed (a write cut
    short leaves no state.pt), and beside it state.json: the size and CRC-32 that a load checks."""
    for u in units:
        u.sync()
    replicas = [r for u in units for r in u.replicas]
    state = {
        "replicas": [
            {"seed": r.seed, "model": r.model.state_dict(), "gen": r.gen.get_state(), "diverged_at": r.diverged_at}
            for r in replicas
        ],
        "units": [{"optimizer": u.opt.state_dict(), "sched": u.sched.state_dict() if u.sched else None} for u in units],
        "torch_rng": torch.get_rng_state(),
        "py_rng": random.getstate(),
        **counters,
    }
    target, tmp = os.path.join(path, STATE), os.path.join(path, f".{STATE}.tmp")
    try:
        torch.save(state, tmp)
        digest = {"bytes": os.path.getsize(tmp), "crc32": _crc32(tmp)}
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    with open(os.path.join(path, f".{DIGEST}.tmp"), "w") as f:
        json.dump(digest, f)
    os.replace(os.path.join(path, f".{DIGEST}.tmp"), os.path.join(path, DIGEST))


class BadCheckpoint(Exception):
    """A checkpoint that is missing, cut short or corrupted: never loaded."""


def read_state(path: str, dev: torch.device) -> dict:
    """What `save_state` wrote into `path`, checked against its size and CRC-32 (where state.json is
    there); raises BadCheckpoint for a checkpoint that is missing, cut short or corrupted."""
    target = os.path.join(path, STATE)
    try:
        with open(os.path.join(path, DIGEST)) as f:
            digest = json.load(f)
    except FileNotFoundError:
        digest = None  # written before the digest existed
    except (OSError, ValueError) as e:
        raise BadCheckpoint(f"{DIGEST} is unreadable ({e})") from None
    try:
        size = os.path.getsize(target)
        if digest is not None and (size != digest["bytes"] or _crc32(target) != digest["crc32"]):
            raise BadCheckpoint(f"{STATE} holds {size} bytes, not the {digest['bytes']} written, or other ones")
        return torch.load(target, map_location=dev, weights_only=False)
    except BadCheckpoint:
        raise
    except Exception as e:  # missing, truncated, not a torch file (OSError, RuntimeError, EOFError, ...)
        raise BadCheckpoint(f"{STATE}: {type(e).__name__}: {e}") from None


def apply_state(state: dict, units: list[Unit]) -> dict:
    """Restore a state that `read_state` returned into `units`; returns the counters."""
    replicas = [r for u in units for r in u.replicas]
    for r, s in zip(replicas, state.pop("replicas"), strict=True):
        r.model.load_state_dict(s["model"])
        r.gen.set_state(s["gen"].to(r.gen.get_state().device))
        r.diverged_at = s["diverged_at"]
    for u, s in zip(units, state.pop("units"), strict=True):
        if u.packed:
            u.model.load_from([r.model for r in u.replicas])
        u.opt.load_state_dict(s["optimizer"])
        if u.sched:
            u.sched.load_state_dict(s["sched"])
    torch.set_rng_state(state.pop("torch_rng"))
    random.setstate(state.pop("py_rng"))
    return state


def load_state(path: str, units: list[Unit], dev: torch.device) -> dict:
    """Restore what `save_state` wrote into `units`; returns the counters. BadCheckpoint if it is not whole."""
    return apply_state(read_state(path, dev), units)


def earlier_checkpoints(ckpt) -> list:
    """The trial's checkpoints that came before `ckpt` (checkpoint_NNNNNN beside it), newest first."""
    import posixpath

    import pyarrow.fs as pafs
    from ray import tune

    fs = getattr(ckpt, "filesystem", None) or pafs.LocalFileSystem()
    folder, name = posixpath.split(ckpt.path.rstrip("/"))
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    names = sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory and i.base_name < name)
    return [
        tune.Checkpoint(posixpath.join(folder, n), filesystem=fs)
        for n in reversed(names)
        if n.startswith("checkpoint_")
    ]


def _candidates(ckpt):
    yield ckpt
    yield from earlier_checkpoints(ckpt)  # listed only when `ckpt` is not whole


def restore(ckpt, units: list[Unit], dev: torch.device) -> dict | None:
    """Load the newest whole checkpoint of a trial into `units`: `ckpt` (the one Tune gives), else the
    ones before it; returns the counters, or None where none is whole (the trial starts over)."""
    from studies.engine.storage import local_dir

    for one in _candidates(ckpt):
        try:
            with local_dir(one) as d:
                state = read_state(d, dev)
        except (BadCheckpoint, OSError) as e:
            print(f"checkpoint {one.path} is not whole ({e}); trying the one before it", file=sys.stderr)
            continue
        return apply_state(state, units)
    print(f"no whole checkpoint up to {ckpt.path}: the trial starts over", file=sys.stderr)
    return None
