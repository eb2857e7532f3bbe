"""Faults of the machine's storage (a full disk, an exhausted quota, a disk gone read-only or failing)
told apart from faults of a trial, and writes that such a fault cannot leave half done.

- `storage_error(e)`: the OSError of the storage behind an exception (a trial's RayTaskError, a
  TuneError, an error's text), or None. `record` keeps the faults seen in this process (`faults`).
- `filesystem_for(run_dir)`: the pyarrow filesystem Tune writes a local run through. Every file it
  opens for writing (checkpoints, the experiment state, each trial's result.json and progress.csv)
  goes to a temporary file beside its target and is renamed over it when complete: a write that
  fails leaves the previous file whole, and its temporary file is removed at once (the space it
  took is free again). URIs (s3://, gs://) keep Tune's own filesystem: an object is whole or absent.
- `StorageGuard`, a Tune callback: a trial that failed on the storage is kept for retry (its failure
  is not counted against its retries) and the study stops at once, as Ctrl-C stops it: Tune saves
  its state and every unfinished trial continues from its last checkpoint with --resume.
- `fault_message`: the one line the command ends with: the disk, its free space, the command to go on.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import pyarrow
import pyarrow.fs as pafs
from ray import tune

# errno values that say the storage failed, not the experiment
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}
REASONS = {
    errno.ENOSPC: "is full",
    errno.EDQUOT: "has no quota left",
    errno.EFBIG: "takes no file that large",
    errno.EROFS: "became read-only",
}
_ERRNO_TEXT = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)
# SQLite's words for the same faults (the Optuna database, `studies.engine.record`), which carry no errno
_SQLITE_TEXT = {"database or disk is full": errno.ENOSPC, "disk i/o error": errno.EIO}

_faults: list[tuple[OSError, str | None]] = []  # (the error, the trial it stopped, if any)
_statuses: dict[str, str] = {}  # each trial's Tune status at the end of Tune's last step
_lock = threading.Lock()


def storage_error(e) -> OSError | None:
    """The storage's OSError behind `e` (an exception, or an error's text), or None. Follows the
    causes of chained exceptions and of Ray's task errors; in text, an '[Errno N]' of the storage, or
    SQLite's 'database or disk is full' (a write of the Optuna database)."""
    seen, todo = set(), [e]
    while todo:
        x = todo.pop(0)
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, OSError) and x.errno in STORAGE_ERRNOS:
            return x
        if isinstance(x, BaseException):
            todo += [getattr(x, "cause", None), x.__cause__, x.__context__, *x.args]
            x = str(x)
        if isinstance(x, str):
            found = [*map(int, _ERRNO_TEXT.findall(x)), *(n for t, n in _SQLITE_TEXT.items() if t in x.lower())]
            for n in found:
                if n in STORAGE_ERRNOS:
                    return OSError(n, os.strerror(n))
    return None


def record(e: OSError, trial: str | None = None) -> None:
    with _lock:
        _faults.append((e, trial))


def faults() -> list[tuple[OSError, str | None]]:
    with _lock:
        return list(_faults)


def reset() -> None:
    with _lock:
        _faults.clear()
        _statuses.clear()


def statuses() -> dict[str, str]:
    """Each trial's status as Tune's last step left it: before Tune's clean-up, which marks the trials
    that an interruption stopped as TERMINATED (the experiment state it saved keeps them RUNNING)."""
    with _lock:
        return dict(_statuses)


# ---- what the user is told ----------------------------------------------------------------------------


def _size(n: float) -> str:
    """1.2 MiB, 812 B."""
    unit = "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            break
        n /= 1024
    return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"


def _mount(path: str, mounts: str = "/proc/mounts") -> tuple[str, str]:
    """The device and the mount point of the filesystem that `path` lies on."""
    best = ("", "/")
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return best
    for line in lines:
        fields = line.split()
        if len(fields) < 2:
            continue
        point = fields[1].replace("\\040", " ")
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best[1]):
            best = (fields[0], point)
    return best


def disk(path: str) -> str:
    """The disk holding `path`: 'tmpfs on /mnt/scratch, 1.2 MiB free of 4.0 MiB'."""
    p = os.path.realpath(os.path.expanduser(path))
    while not os.path.exists(p) and p != os.path.dirname(p):
        p = os.path.dirname(p)
    device, point = _mount(p)
    try:
        st = os.statvfs(p)
    except OSError:
        return f"{device} on {point}"
    return f"{device} on {point}, {_size(st.f_bavail * st.f_frsize)} free of {_size(st.f_blocks * st.f_frsize)}"


def reason(e: OSError) -> str:
    """'is full', 'has no quota left', ... or 'fails (Input/output error)'."""
    return REASONS.get(e.errno, f"fails ({e.strerror or os.strerror(e.errno or 0)})")


def resume_command(command: str, resumable: bool = True) -> str:
    """The command that was run, to continue its run: without --overwrite, and with --resume where
    there is a run to resume (else the same command starts it)."""
    argv = [a for a in shlex.split(command) if a not in ("--overwrite", "--resume")]
    return shlex.join([*argv, "--resume"] if resumable else argv)


def fault_message(run_dir: str, e: OSError, then: str) -> str:
    """One line: which disk failed and how, its free space, what is kept, and `then` (the command to run
    once there is room)."""
    where = run_dir
    real = os.path.realpath
    if e.filename and "://" not in run_dir and _mount(real(str(e.filename)))[1] != _mount(real(run_dir))[1]:
        where = str(e.filename)  # the failing file is on another disk (a temporary folder)
    shown = disk(where) if "://" not in where else where
    return (
        f"the disk holding {where} {reason(e)} ({shown}); no trial counts this as its failure and every "
        f"result written so far is kept: make room, then run {then}"
    )


# ---- writes that a full disk cannot leave half done ----------------------------------------------------


class _AtomicFile:
    """A file being written to a temporary name beside `path`; renamed over it by close(), removed
    at once when a write fails, and when it is dropped without close() (a copy that failed)."""

    def __init__(self, path: str):
        from analysis.files import umask

        self.path = path
        folder = os.path.dirname(path) or "."
        os.makedirs(folder, exist_ok=True)
        self.fd, self.tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        os.fchmod(self.fd, 0o666 & ~umask())
        self.closed = False

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as e:
            self.discard()
            if e.errno in STORAGE_ERRNOS:
                record(e)
            raise
        return len(data)

    def flush(self) -> None:
        pass

    def discard(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)
            os.unlink(self.tmp)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            os.close(self.fd)
            os.replace(self.tmp, self.path)
        finally:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)

    def __del__(self):
        try:
            self.discard()
        except OSError:
            pass


class AtomicLocal(pafs.FileSystemHandler):
    """The local filesystem, with files written atomically (see `_AtomicFile`)."""

    def __init__(self):
        self.fs = pafs.LocalFileSystem()

    def __eq__(self, other):
        return type(other) is type(self)

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash(type(self))

    def get_type_name(self):
        return "atomic-local"

    def normalize_path(self, path):
        return self.fs.normalize_path(path)

    def get_file_info(self, paths):
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.fs.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        self.fs.delete_dir_contents("/", accept_root_dir=True)

    def delete_file(self, path):
        self.fs.delete_file(path)

    def move(self, src, dest):
        self.fs.move(src, dest)

    def copy_file(self, src, dest):
        self.fs.copy_file(src, dest)

    def open_input_stream(self, path):
        return self.fs.open_input_stream(path)

    def open_input_file(self, path):
        return self.fs.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return pyarrow.PythonFile(_AtomicFile(path), mode="w")

    def open_append_stream(self, path, metadata):
        return self.fs.open_append_stream(path)


def filesystem_for(run_dir: str) -> pafs.FileSystem | None:
    """What Tune writes the run at `run_dir` through: the atomic local filesystem for a path, Tune's
    own (None) for a URI."""
    return None if "://" in run_dir else pafs.PyFileSystem(AtomicLocal())


def is_local(fs) -> bool:
    return isinstance(fs, pafs.LocalFileSystem) or (
        isinstance(fs, pafs.PyFileSystem) and isinstance(fs.handler, AtomicLocal)
    )


@contextmanager
def local_dir(checkpoint: tune.Checkpoint):
    """A checkpoint as a local folder: its own path where it is on this machine, else a download."""
    if is_local(getattr(checkpoint, "filesystem", None)):
        yield checkpoint.path
    else:
        with checkpoint.as_directory() as d:
            yield d


# ---- stopping the study at the first fault -----------------------------------------------------------


def _trial_error(trial):
    """The exception a trial failed with (as Tune pickled it on the driver), or its error text."""
    import cloudpickle

    try:
        with open(trial.pickled_error_file, "rb") as f:
            return cloudpickle.load(f)
    except Exception:
        pass
    try:
        return Path(trial.error_file).read_text(errors="replace")[-20_000:]
    except Exception:
        return None


def interrupt() -> bool:
    """End the Tune run as Ctrl-C does (Tune's own SIGUSR1 handler): Tune saves the experiment state,
    and every unfinished trial is kept. False where Tune runs off the main thread (no handler)."""
    handler = signal.getsignal(signal.SIGUSR1) if hasattr(signal, "SIGUSR1") else None
    if not callable(handler) or getattr(handler, "__name__", "") != "signal_interrupt_tune_run":
        return False
    try:
        handler(signal.SIGUSR1, None)
    except ValueError:  # signal.signal off the main thread
        return False
    return True


class StorageGuard(tune.Callback):
    """Stops the study at the first storage fault (see the module's docstring), and keeps each trial's
    status at the end of every step (`statuses`). Stateless: both are kept in this module, where the
    runner reads them, also when Tune uses the copy of this callback that it pickled into the
    experiment (a resumed run)."""

    def __init__(self):
        self.stopping = False

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.__init__()

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.check(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.check(trial)

    def on_step_end(self, iteration, trials, **info):
        with _lock:
            _statuses.update({t.trial_id: t.status for t in trials})
        if faults():
            self.stop()

    def check(self, trial) -> None:
        e = storage_error(_trial_error(trial))
        if e is None:
            return
        record(e, trial.trial_id)
        meta = trial.run_metadata  # a fault of the machine uses up none of the trial's retries
        meta.num_failures = max(0, meta.num_failures - 1)
        self.stop()

    def stop(self) -> None:
        if not self.stopping:
            self.stopping = interrupt()
