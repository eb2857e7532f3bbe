"""What a person sees while a study runs, and where Ray's own output goes.

- `Progress`, a Tune callback (passed through `Plan.run_config()`): one compact view of the study,
  about a screen: trials done / running / stopped by ASHA / diverged / errored / to resume (stopped by
  a fault of the storage) / waiting out of the total, elapsed time and ETA; the best objective so far
  with its scientific (and nuisance) values; for each running trial its values, iteration and latest
  objective (the mean over the seeds that the trial trains). On a terminal it is redrawn in place
  (ANSI) about once a second; where stdout is not a terminal it is printed as plain lines at most
  every 30 s, and once at the end.
- `RunLog`: Ray's and Tune's full output (Tune's trial tables and its status every 30 s, the
  workers' output that `log_to_driver` forwards, Ray's log records and warnings, e.g. the token
  authentication notice of a local Ray) goes to `<run>/ray.log` instead of the terminal; with
  `--verbose` to both. Until the run folder may be written (the checks after Ray starts have passed)
  it is kept in memory, so that a run refused at that point leaves nothing behind; a full disk
  never stops it (the text waits in memory until it fits).

Tune pickles its RunConfig, callbacks included, into the experiment (`tuner.pkl`) and uses that copy
when a run is resumed; so a `Progress` pickles only its settings, and draws on the stream that
`drawing_on` names at the time (none: it draws nothing).
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import threading
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import TextIO

from ray import tune

PLAIN_EVERY_S = 30.0  # plain lines (stdout not a terminal): at most this often
TTY_EVERY_S = 1.0  # redraw on a terminal at most this often
MAX_ROWS = 12  # running trials listed where stdout is not a terminal (on one: what fits the screen)
KINDS = ("done", "running", "stopped by ASHA", "diverged", "errored", "to resume", "waiting")  # the view's counts

_drawing: dict[str, TextIO | None] = {"out": None}


@contextmanager
def drawing_on(out: TextIO | None):
    """Progress views draw on `out` inside this block (None: nowhere)."""
    old = _drawing["out"]
    _drawing["out"] = out
    try:
        yield
    finally:
        _drawing["out"] = old


def clock(seconds: float) -> str:
    """0:42, 12:05, 1:02:03."""
    s = int(max(seconds, 0))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def value(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, (list, tuple)):
        return "-".join(map(str, v))
    return str(v)


def seeds_text(seeds: list[int]) -> str:
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}-{seeds[-1]}"
    return "seeds " + ", ".join(map(str, seeds))


class Progress(tune.Callback):
    """The compact view of a study's trials (see the module's docstring)."""

    def __init__(
        self,
        study: str,
        scientific: list[str],
        nuisance: list[str],
        metric: str,
        mode: str,
        max_t: int,
        total: int,
        seeds: list[int],
    ):
        self.settings = dict(
            study=study,
            scientific=list(scientific),
            nuisance=list(nuisance),
            metric=metric,
            mode=mode,
            max_t=max_t,
            total=total,
            seeds=list(seeds),
        )
        self.study, self.keys, self.metric, self.mode = study, [*scientific, *nuisance], metric, mode
        self.max_t, self.total, self.seeds = max_t, total, list(seeds)
        self.out: TextIO | None = None
        self.tty = False
        self.started = time.time()
        self.last_draw = float("-inf")
        self.drawn = 0  # lines of the last view on a terminal, redrawn in place
        self.best: tuple[float, str, int] | None = None  # the best objective reported: value, values, iteration

    def __getstate__(self):
        return dict(self.settings)

    def __setstate__(self, state):
        self.__init__(**state)

    # ---- Tune's hooks --------------------------------------------------------------------------

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        self.out = _drawing["out"]
        self.tty = bool(self.out is not None and _isatty(self.out))
        self.started = time.time()
        if not self.tty:  # plain lines: the first after PLAIN_EVERY_S, not an empty view at 0:00
            self.last_draw = self.started
        if total_num_samples:
            self.total = max(self.total, int(total_num_samples))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.consider(result.get(self.metric), trial, int(result.get("training_iteration", 0) or 0))

    def on_step_end(self, iteration, trials, **info):
        self.draw(trials)

    def on_experiment_end(self, trials, **info):
        self.draw(trials, final=True)

    # ---- the view ------------------------------------------------------------------------------

    def draw(self, trials, final: bool = False) -> None:
        if self.out is None:
            return
        now = time.time()
        if not final and now - self.last_draw < (TTY_EVERY_S if self.tty else PLAIN_EVERY_S):
            return
        self.last_draw = now
        try:
            if self.tty:
                width, height = shutil.get_terminal_size((100, 30))
                lines = [line[: width - 1] for line in self.lines(trials, final, rows=max(3, height - 8))]
                up = f"\x1b[{self.drawn}F" if self.drawn else ""
                self.out.write(up + "\x1b[J" + "\n".join(lines) + "\n")
                self.drawn = len(lines)
            else:
                self.out.write("\n".join(self.lines(trials, final, rows=MAX_ROWS)) + "\n")
            self.out.flush()
        except (OSError, ValueError) as e:  # the terminal went away (a closed pipe): the study goes on without it
            from studies.engine.storage import storage_error

            if storage_error(e) is None:  # a full disk under a redirected stdout: the next view may fit
                self.out = None

    def consider(self, score, trial, it: int) -> None:
        """Keep the best objective seen so far (a NaN, or no score, is never best)."""
        if not isinstance(score, (int, float)) or score != score:
            return
        if self.best is None or (score > self.best[0] if self.mode == "max" else score < self.best[0]):
            self.best = (float(score), self.describe(trial), it)

    def describe(self, trial) -> str:
        config = trial.config or {}
        return "  ".join(f"{k}={value(config[k])}" for k in self.keys if k in config) or trial.trial_id

    def lines(self, trials, final: bool = False, rows: int = MAX_ROWS) -> list[str]:
        """The view as text lines: status, best so far, the running trials (at most `rows`). Trials that
        ended are told apart: done, stopped by ASHA, diverged, errored (the experiment's error), and
        to resume (a fault of the storage stopped them: not the experiment's error)."""
        from studies.engine import storage

        fault = (storage.faults() or [(None, None)])[0][0]
        faulted = {t for _, t in storage.faults() if t}
        before = storage.statuses() if final else {}  # as the last step left them, before Tune's clean-up
        counts = dict.fromkeys(KINDS, 0)
        running, failed = [], []
        work = 0.0
        for t in trials:
            result = t.last_result or {}
            it = int(result.get("training_iteration", 0) or 0)
            status = before.get(t.trial_id, t.status)
            ended = status == "TERMINATED" or (status == "ERROR" and t.trial_id not in faulted)
            if final and not ended:
                kind = "to resume"  # the study was stopped (a fault, Ctrl-C): --resume continues it
            elif status == "RUNNING":
                kind = "running"
                running.append(t)
            elif status == "TERMINATED":
                kind = "diverged" if result.get("diverged") else "done" if it >= self.max_t else "stopped by ASHA"
            elif status == "ERROR":
                kind = "to resume" if t.trial_id in faulted else "errored"
                failed += [t] if kind == "errored" else []
            else:  # PENDING, PAUSED
                kind = "waiting"
            work += self.max_t if ended else min(it, self.max_t)
            counts[kind] += 1
            self.consider(result.get(self.metric), t, it)  # a resumed run's trials that ended before
        total = max(self.total, len(trials))
        counts["waiting"] += total - len(trials)
        elapsed = time.time() - self.started
        frac = work / (total * self.max_t) if total and self.max_t else 0.0
        if fault is not None:
            eta = f"stopped: the disk {storage.reason(fault)}"
        elif final:
            eta = "interrupted" if counts["to resume"] else "finished"
        elif frac > 0:
            eta = f"ETA ~{clock(elapsed * (1 - frac) / frac)}"
        else:
            eta = "ETA: after the first results"
        shown = [f"{n} {k}" for k, n in counts.items() if n or k in ("done", "running", "errored")]
        lines = [f"[{clock(elapsed)}] {self.study}: {total} trials: {', '.join(shown)}; {eta}"]
        if self.best is not None:
            score, values, it = self.best
            lines.append(f"  best {self.metric} so far {score:.4f}: {values} (iteration {it}/{self.max_t})")
        for t in running[:rows]:
            result = t.last_result or {}
            it = int(result.get("training_iteration", 0) or 0)
            score = result.get(self.metric)
            latest = f"{self.metric} {score:.4f}" if isinstance(score, (int, float)) else "no result yet"
            lines.append(f"  running  {self.describe(t)}: iteration {it}/{self.max_t}, {latest}")
        if len(running) > rows:
            lines.append(f"  ... and {len(running) - rows} more running")
        for t in failed[:3]:
            where = getattr(t, "path", None) or "its trial folder"
            lines.append(f"  errored  {self.describe(t)}: its error is in ray.log and {where}")
        if len(failed) > 3:
            lines.append(f"  ... and {len(failed) - 3} more errored")
        return lines


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Stream(io.TextIOBase):
    """A text stream that writes into a RunLog, and to `echo` as well when it is not None."""

    def __init__(self, log: RunLog, echo: TextIO | None):
        super().__init__()
        self.log, self.echo = log, echo

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self):
        return "utf-8"

    def write(self, s: str) -> int:
        self.log.add(s, self.echo)
        return len(s)

    def flush(self) -> None:
        self.log.flush()


class RunLog(_Stream):
    """A text stream for Ray's and Tune's output: kept in memory until `attach(path)` names the file,
    then appended there; with `echo` (and `echo_err` for what comes on stderr), also written there
    (the terminal, for --verbose). A write that the disk refuses (full) never raises: the text waits
    in memory (its last UNWRITTEN_MAX bytes) and goes to the file with the next write that fits."""

    UNWRITTEN_MAX = 8 << 20

    def __init__(self, echo: TextIO | None = None, echo_err: TextIO | None = None):
        super().__init__(self, echo)
        self.stderr = _Stream(self, echo_err if echo_err is not None else echo)
        self.buffer_ = io.StringIO()
        self.fd: int | None = None
        self.unwritten = bytearray()  # appended to the file as soon as it can be
        self.dropped = 0  # bytes that waited beyond UNWRITTEN_MAX
        self.path: Path | None = None
        self.lock = threading.Lock()
        self.ended = False

    def add(self, s: str, echo: TextIO | None) -> None:
        with self.lock:
            if self.ended:
                return
            if self.fd is None:
                self.buffer_.write(s)
            else:
                self.unwritten += s.encode("utf-8", "replace")
                if s.endswith("\n") or len(self.unwritten) > 1 << 16:
                    self._drain()
            if echo is not None:
                try:
                    echo.write(s)
                    echo.flush()
                except (OSError, ValueError):  # the terminal went away, or its disk is full
                    pass

    def _drain(self) -> None:
        """Append what waits to the file (lock held); on a storage fault keep it for the next try."""
        from studies.engine.storage import record, storage_error

        try:
            while self.unwritten:
                del self.unwritten[: os.write(self.fd, self.unwritten)]
        except OSError as e:
            if storage_error(e) is None:
                raise
            record(e)
            extra = len(self.unwritten) - self.UNWRITTEN_MAX
            if extra > 0:
                del self.unwritten[:extra]
                self.dropped += extra

    def flush(self) -> None:
        with self.lock:
            if self.fd is not None:
                self._drain()

    def attach(self, path: str | Path) -> None:
        """From now on write to `path` (appended: a resumed run adds to it), what was kept first."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # closed in end()
            self.unwritten += self.buffer_.getvalue().encode("utf-8", "replace")
            self.buffer_ = io.StringIO()
            self.path = path
            self._drain()

    def end(self) -> None:
        """Write what waits, close the file; later writes (a logging handler that kept this stream) go
        nowhere. What a full disk still refuses then is lost, and said so in the file where it fits."""
        with self.lock:
            self.ended = True
            if self.fd is None:
                return
            self._drain()
            if self.unwritten or self.dropped:
                lost = len(self.unwritten) + self.dropped
                self.unwritten = bytearray(f"[{lost} bytes of Ray's output were lost: the disk was full]\n".encode())
                self._drain()
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None

    @contextmanager
    def capturing(self):
        """Inside the block, sys.stdout and sys.stderr (Tune's reporter, the workers' output that
        log_to_driver prints, warnings) and the records of the "ray" logger (Ray's and Tune's: its
        console handler keeps the stderr of Ray's import) come here."""
        ray_logger = logging.getLogger("ray")
        saved = list(ray_logger.handlers)
        consoles = [h for h in saved if type(h) is not logging.FileHandler and isinstance(h, logging.StreamHandler)]
        mine = logging.StreamHandler(self.stderr)
        mine.setFormatter(
            next((h.formatter for h in consoles if h.formatter), None)
            or logging.Formatter("%(asctime)s\t%(levelname)s %(filename)s:%(lineno)s -- %(message)s")
        )
        ray_logger.handlers = [h for h in saved if h not in consoles] + [mine]
        try:
            with redirect_stdout(self), redirect_stderr(self.stderr):
                yield self
        finally:
            ray_logger.handlers = saved
