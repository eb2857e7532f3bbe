"""A full disk loses no result: a fault of the storage is told from a trial's, the study stops with
one line that names the disk, every write is whole or absent (checkpoints, Tune's files, ray.log),
a checkpoint that is not whole is never loaded, and after the disk has room `--resume` (or
`python -m analysis RUN`) finishes the run. The studies run on a real small filesystem: a tmpfs,
mounted where the tests run as root (skipped with the reason elsewhere)."""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs as pafs
import pytest
import torch
from ray import tune

import analysis
from studies.engine import storage
from studies.engine.checkpoint import BadCheckpoint, load_state, read_state, restore, save_state
from tests.test_reliability import check_complete

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ["--budget", "smoke", "--seeds", "1"]
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 2 MiB at tmp_path/disk; `grow(size)` remounts it larger (`mount -o remount`)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (mount -t tmpfs)")
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True, text=True)
    if out.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip() or out.returncode}")

    def grow(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)

    try:
        yield SimpleNamespace(path=disk, grow=grow)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.fixture
def clean_faults():
    storage.reset()
    yield
    storage.reset()


def fill(folder: Path) -> Path:
    """Fill the filesystem of `folder` to the last byte; returns the file to delete to make room."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (1 << 16, 1 << 10, 1):  # smaller and smaller, to the last byte that fits
            try:
                while f.write(b"\0" * chunk):
                    pass
            except OSError as e:
                assert e.errno == errno.ENOSPC
    return filler


def study(disk: Path, *extra: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "studies.palindrome", *SMOKE, "--storage", str(disk), *extra],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=400,
        **kw,
    )


# ---- what is a fault of the storage ---------------------------------------------------------------------


def test_storage_errors_are_told_from_the_experiments_errors():
    class TaskError(Exception):  # as Ray wraps what a trial raised: the original under .cause
        def __init__(self, cause):
            super().__init__("ray::ImplicitFunc.train() failed")
            self.cause = cause

    assert storage.storage_error(ENOSPC) is ENOSPC
    assert storage.storage_error(TaskError(ENOSPC)) is ENOSPC
    chained = RuntimeError("persisting the checkpoint failed")
    chained.__cause__ = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert storage.storage_error(chained).errno == errno.EDQUOT
    text = "OSError: [Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device"
    assert storage.storage_error(text).errno == errno.ENOSPC  # an error known by its text (error.txt)
    assert storage.storage_error(OSError(errno.EROFS, "Read-only file system")).errno == errno.EROFS
    for theirs in (FileNotFoundError(errno.ENOENT, "No such file"), ValueError("bad lr"), "[Errno 2] nope", None):
        assert storage.storage_error(theirs) is None, theirs


def test_the_message_names_the_disk_its_free_space_and_the_command_that_continues(tmp_path):
    run_dir = str(tmp_path / "palindrome" / "smoke")
    command = f"python -m studies.palindrome --budget smoke --storage {tmp_path} --overwrite"
    resume = storage.resume_command(command)
    assert resume == f"python -m studies.palindrome --budget smoke --storage {tmp_path} --resume"
    assert storage.resume_command(command, resumable=False) == command.removesuffix(" --overwrite")
    text = storage.fault_message(run_dir, ENOSPC, resume)
    st = os.statvfs(tmp_path)
    assert text.startswith(f"the disk holding {run_dir} is full (") and text.endswith(f"then run {resume}")
    assert re.search(r" on /\S*, [\d.]+ (B|KiB|MiB|GiB|TiB) free of [\d.]+ (KiB|MiB|GiB|TiB)\)", text), text
    assert storage._size(st.f_blocks * st.f_frsize).split()[0] in text and "\n" not in text
    quota = storage.fault_message(run_dir, OSError(errno.EDQUOT, "Disk quota exceeded"), resume)
    assert "has no quota left" in quota


def test_a_trial_that_failed_on_the_disk_keeps_its_retries_and_stops_the_study(tmp_path, clean_faults):
    import cloudpickle

    (tmp_path / "error.pkl").write_bytes(cloudpickle.dumps(RuntimeError("copying the checkpoint failed")))
    ours = SimpleNamespace(
        trial_id="t1",
        pickled_error_file=str(tmp_path / "error.pkl"),
        error_file=str(tmp_path / "error.txt"),
        run_metadata=SimpleNamespace(num_failures=1),
    )
    guard = storage.StorageGuard()
    guard.check(ours)  # a failure of the trial's own: counted, and the study goes on
    assert ours.run_metadata.num_failures == 1 and storage.faults() == []
    (tmp_path / "error.pkl").unlink()
    (tmp_path / "error.txt").write_text("Failure # 1\nOSError: [Errno 28] No space left on device\n")
    guard.check(ours)
    assert ours.run_metadata.num_failures == 0  # the machine's fault: the trial keeps its retries
    [(e, trial)] = storage.faults()
    assert e.errno == errno.ENOSPC and trial == "t1"


def test_a_fault_of_the_drivers_writes_stops_the_study_once_as_ctrl_c_does(clean_faults):
    import signal

    stops = []

    def signal_interrupt_tune_run(sig, frame):  # what Tune installs for SIGUSR1 while it runs
        stops.append(sig)

    before = signal.signal(signal.SIGUSR1, signal_interrupt_tune_run)
    try:
        guard = storage.StorageGuard()
        guard.on_step_end(0, [])
        assert stops == []  # no fault: the study goes on
        storage.record(ENOSPC)  # Tune's sync of the experiment state met a full disk
        guard.on_step_end(1, [])
        guard.on_step_end(2, [])
        assert stops == [signal.SIGUSR1] and guard.stopping
    finally:
        signal.signal(signal.SIGUSR1, before)
    assert not storage.interrupt()  # no Tune run: nothing to stop


# ---- whole or absent: Tune's files, checkpoints, ray.log --------------------------------------------------


def test_a_write_that_the_disk_refuses_leaves_the_file_before_it_whole(small_disk, clean_faults):
    fs = storage.filesystem_for(str(small_disk.path))
    target = small_disk.path / "exp" / "result.json"
    with fs.open_output_stream(str(target)) as f:
        f.write(b"reports 1-3\n")
    src = small_disk.path.parent / "src"
    src.mkdir()
    (src / "result.json").write_bytes(b"x" * (3 << 20))  # larger than the disk
    with pytest.raises(OSError) as e:
        pafs.copy_files(str(src), str(target.parent), destination_filesystem=fs)  # as Tune syncs a trial
    assert e.value.errno == errno.ENOSPC and storage.faults()[0][0].errno == errno.ENOSPC
    assert target.read_bytes() == b"reports 1-3\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json"]  # no temporary file left
    assert os.statvfs(small_disk.path).f_bavail * os.statvfs(small_disk.path).f_frsize > 1 << 20  # its space is free
    assert storage.disk(str(target)).startswith(f"tmpfs on {small_disk.path}, ")


def test_ray_log_waits_in_memory_while_the_disk_is_full_and_loses_nothing_once_there_is_room(small_disk, clean_faults):
    from studies.engine.progress import RunLog

    log = RunLog()
    log.attach(small_disk.path / "ray.log")
    before = "b" * 4095 + "\n"  # a whole page of the tmpfs: what comes next needs a new one
    log.write(before)
    filler = fill(small_disk.path)
    log.write("while the disk is full\n")  # never raises
    log.stderr.write("a warning\n")
    assert (small_disk.path / "ray.log").read_text() == before
    assert storage.faults() and storage.faults()[0][0].errno == errno.ENOSPC
    filler.unlink()
    log.write("after\n")
    log.end()
    assert (small_disk.path / "ray.log").read_text() == before + "while the disk is full\na warning\nafter\n"


def toy_units(seed: int = 0):
    from studies.engine.config import full_config
    from studies.engine.loop import make_replicas, make_units
    from studies.engine.tasks import TOY

    c = full_config(
        {"task": "toy", "model": "mlp", "hidden": (8,), "dataset": "moons", "optimizer": "adam", "seeds": [seed, 1]},
        TOY,
    )
    cpu = torch.device("cpu")
    return make_units(c, make_replicas(c, TOY, TOY.load(c, cpu), cpu), cpu)


def test_a_checkpoint_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    import studies.engine.checkpoint as checkpoint

    units = toy_units()
    save_state(str(tmp_path), units, iteration=2, step=20, restarts=0, last={})
    before = (tmp_path / "state.pt").read_bytes()
    real_save = torch.save

    def cut_short(obj, path):  # the disk fills halfway through the state
        real_save(obj, path)
        Path(path).write_bytes(Path(path).read_bytes()[:1000])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", cut_short)
    with pytest.raises(OSError):
        save_state(str(tmp_path), units, iteration=4, step=40, restarts=0, last={})
    assert (tmp_path / "state.pt").read_bytes() == before  # the checkpoint before, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "state.pt"]  # no temporary file
    assert load_state(str(tmp_path), toy_units(), torch.device("cpu"))["iteration"] == 2


def test_a_checkpoint_that_is_not_whole_is_never_loaded_the_one_before_is(tmp_path, capsys):
    cpu = torch.device("cpu")
    trial = tmp_path / "trial_x"
    units = toy_units()
    for i in (1, 2, 3):
        (trial / f"checkpoint_00000{i}").mkdir(parents=True)
        save_state(str(trial / f"checkpoint_00000{i}"), units, iteration=2 * i, step=20 * i, restarts=0, last={})
    (trial / "checkpoint_000004").mkdir()  # the one that the full disk interrupted: no state.pt
    state = trial / "checkpoint_000003" / "state.pt"
    raw = state.read_bytes()
    state.write_bytes(raw[: len(raw) // 2])  # cut short
    with pytest.raises(BadCheckpoint, match="holds"):
        read_state(str(state.parent), cpu)
    state.write_bytes(raw[:100] + bytes([raw[100] ^ 1]) + raw[101:])  # as long, one bit flipped: the CRC-32 says so
    with pytest.raises(BadCheckpoint):
        read_state(str(state.parent), cpu)

    def ckpt(i):
        return tune.Checkpoint(str(trial / f"checkpoint_00000{i}"), filesystem=storage.filesystem_for(str(trial)))

    fresh = toy_units(seed=5)
    assert restore(ckpt(4), fresh, cpu)["iteration"] == 4  # 4 and 3 are not whole: 2 is loaded
    for a, b in zip(fresh[0].model.parameters(), units[0].model.parameters()):
        assert torch.equal(a, b)
    said = capsys.readouterr().err
    assert "checkpoint_000004 is not whole" in said and "checkpoint_000003 is not whole" in said
    assert restore(ckpt(2), toy_units(), cpu)["iteration"] == 4  # a whole one is loaded as it is
    for i in (1, 2):
        (trial / f"checkpoint_00000{i}" / "state.pt").write_bytes(b"")
    assert restore(ckpt(4), toy_units(), cpu) is None  # none whole: the trial starts over
    assert "the trial starts over" in capsys.readouterr().err


# ---- a real study on a disk that fills ----------------------------------------------------------------


@pytest.mark.slow
def test_a_disk_that_fills_during_a_study_stops_it_in_one_line_then_resume_finishes_every_trial_once(small_disk):
    disk, run_dir = small_disk.path, small_disk.path / "palindrome" / "smoke"
    first = study(disk)  # 4 trials whose checkpoints take about 4.5 MiB: the 2 MiB disk fills midway
    resume = shlex.join(["python", "-m", "studies.palindrome", *SMOKE, "--storage", str(disk), "--resume"])
    assert first.returncode == 1, first.stdout[-2000:] + first.stderr[-3000:]
    [line] = first.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith(
        f"python -m studies.palindrome: error: the disk holding {run_dir} is full (tmpfs on {disk}, "
    )
    assert "free of 2.0 MiB)" in line and line.endswith(f"then run {resume}")
    view = [v for v in first.stdout.splitlines() if v.startswith("[")][-1]
    assert view.endswith("; stopped: the disk is full") and " 0 errored" in view and "to resume" in view
    assert not (run_dir / "trials.parquet").exists()  # no partial table presented as a study
    assert not [p for p in disk.rglob("*.tmp")]  # every write whole or absent
    ray_log = (run_dir / "ray.log").read_text()
    assert "No space left on device" in ray_log  # the details are there, for whoever wants them

    small_disk.grow("64m")
    again = subprocess.run(
        [sys.executable, *shlex.split(resume)[1:]], cwd=ROOT, capture_output=True, text=True
    )  # as told
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    t = check_complete(run_dir, n=4)  # every trial, once, its curve 1..6 without a gap
    assert set(t["status"]) == {"completed"} and (t["restarts"] <= 1).all()
    assert (t["step"] == t["iterations"] * 50).all()  # resumed from checkpoints: no step lost or done twice
    assert "4 done" in again.stdout and "missing" not in again.stdout
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["missing_trials"] == 0 and (run_dir / "report.md").is_file()
    assert ray_log in (run_dir / "ray.log").read_text()  # appended to, never cut


@pytest.mark.slow
def test_a_disk_that_fills_while_the_report_is_written_keeps_the_tables_and_analysis_finishes_it(small_disk):
    small_disk.grow("64m")
    disk, run_dir = small_disk.path, small_disk.path / "palindrome" / "smoke"
    proc = subprocess.Popen(
        [sys.executable, "-m", "studies.palindrome", *SMOKE, "--storage", str(disk)],
        cwd=ROOT,
        env={**os.environ, "STUDIES_TEST_WRITE_DELAY": "1"},  # each file waits 1 s before its rename
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    t0 = time.time()
    while not (run_dir / "curves.csv").exists():  # the tables are written: the report comes next
        assert proc.poll() is None and time.time() - t0 < 300, proc.communicate()
        time.sleep(0.05)
    filler = fill(disk)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out[-2000:] + err[-3000:]
    [line] = err.strip().splitlines()
    assert f"the disk holding {run_dir} is full (tmpfs on {disk}, " in line and " free of 64.0 MiB)" in line
    assert line.endswith(f"then run python -m analysis {run_dir}") and "Traceback" not in err
    assert len(analysis.load(run_dir).trials) == 4 and not (run_dir / "report.md").exists()

    filler.unlink()
    done = subprocess.run(
        [sys.executable, "-m", "analysis", str(run_dir)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    check_complete(run_dir, n=4)
    assert "4 completed" in (run_dir / "report.md").read_text()
