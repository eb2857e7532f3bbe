"""Every trial of a run in an Optuna storage: a SQLite database in the run folder by default
(`<run>/optuna.db`, Optuna's RDBStorage), or any SQLAlchemy URL given with `--optuna-storage` (a
PostgreSQL server for a cluster). Any Optuna tool opens it; `python -m analysis dashboard RUN` starts
optuna-dashboard on it, while the study runs or after.

One Optuna study per scientific value and phase, named by the run and that value, e.g.
`optimizer_comparison/quick optimizer=adam` (a confirmation look's: `... optimizer=adam [confirm]`), also
for a grid without a nuisance search. Each trial holds its scientific values (a categorical of one
choice: never sampled) and its nuisance values as parameters, its intermediate values (the mean over
the seeds, what ASHA and Optuna see), its value and its state (COMPLETE, PRUNED where ASHA stopped it,
FAIL), and as user attributes its phase, its Tune trial id, its seeds and each seed's final values. Each
write is one transaction of the database: a killed run leaves it consistent. The searcher
(`studies.engine.search.GridSearch`) asks and tells through these studies and pickles only its own
bookkeeping (which Optuna trial each Tune trial holds), so `--resume` continues the studies in the
database."""

from __future__ import annotations

import math
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from studies.engine.checks import UsageError

FILE = "optuna.db"
SEARCH, CONFIRM = "search", "confirm"
_storages: dict[str, object] = {}
_lock = threading.Lock()


def default_url(run_dir: str) -> str | None:
    """The run's own database, `sqlite:///<run>/optuna.db`; None for a run at a URI (s3://, gs://),
    where SQLite cannot live: such a run records its trials where `--optuna-storage` says."""
    return None if "://" in run_dir else f"sqlite:///{run_dir}/{FILE}"


def add_flag(parser) -> None:
    """`--optuna-storage URL` on a study's command line."""
    parser.add_argument(
        "--optuna-storage",
        metavar="URL",
        help=f"the Optuna database of every trial, any SQLAlchemy URL (default sqlite:///<run>/{FILE}); "
        "python -m analysis dashboard RUN shows it",
    )


def url_for(p) -> str | None:
    """The storage URL of a plan: `--optuna-storage`, else the run's own database."""
    return getattr(p.args, "optuna_storage", None) or default_url(p.run_dir)


def check_url(url: str) -> None:
    """A UsageError (one line) for a URL that SQLAlchemy cannot parse or whose driver is missing, and
    for a database server that does not answer, or a SQLite file in memory or in a folder that cannot be
    written; starts nothing else, writes nothing."""
    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
        dialect = parsed.get_dialect()
        dialect.import_dbapi()
    except Exception as e:
        raise UsageError(f"--optuna-storage {url!r}: not a usable SQLAlchemy URL ({type(e).__name__}: {e})") from None
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        if path in ("", ":memory:"):
            raise UsageError(f"--optuna-storage {url!r}: an in-memory SQLite database is no record; name a file")
        folder = Path(path).expanduser().resolve().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise UsageError(f"--optuna-storage {url!r}: the folder {folder} does not exist or cannot be written")
        return
    try:
        engine = sqlalchemy.create_engine(url)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as e:
        shown = parsed.render_as_string(hide_password=True)
        raise UsageError(f"--optuna-storage {shown}: the database does not answer ({type(e).__name__})") from None


def storage(url: str):
    """The RDBStorage at `url`, one per process. SQLite runs in WAL mode (a dashboard reading it never
    blocks the run's writes; see `_sqlite_pragmas`) and waits up to 60 s for a lock."""
    with _lock:
        if url not in _storages:
            import optuna

            sqlite = url.startswith("sqlite")
            kwargs = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
            st = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            if sqlite:
                import sqlalchemy

                with st.engine.connect() as c:
                    c.exec_driver_sql("PRAGMA journal_mode=WAL")  # kept in the file: readers never block the run
                sqlalchemy.event.listen(st.engine, "connect", _sqlite_pragmas)
                st.engine.dispose()  # every connection from here on has them
            _storages[url] = st
        return _storages[url]


def _sqlite_pragmas(connection, _record) -> None:
    """WAL with synchronous=NORMAL: a commit is whole after a kill -9 of the run (SQLite's WAL guarantees
    it), and only a power cut can lose the last ones; no fsync per report."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def text(v) -> str:
    """A value as a study's name shows it: '0.001', 'adam', '128-64'."""
    if isinstance(v, (list, tuple)):
        return "-".join(map(str, v))
    return repr(v) if isinstance(v, float) else str(v)


def choice(v):
    """A value as Optuna's categorical takes it (None, bool, int, float, str)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if hasattr(v, "item"):  # a numpy scalar
        return v.item()
    return text(v)


@dataclass
class Record:
    """Where and how a searcher records its trials: the storage URL, the run's prefix of the study
    names, the plan's grid points (a study per point), the nuisance distributions (a confirmation's
    trials record their values under the search's distributions), the phase, metric and mode."""

    url: str
    prefix: str
    grid: list[dict]
    nuisance: dict = field(default_factory=dict)  # name -> Optuna distribution
    phase: str = SEARCH
    metric: str = "val_acc"
    mode: str = "max"
    experiment: str | None = None  # the Tune experiment of a confirmation look (`confirm`, `confirm-6`)

    def point(self, config: dict) -> int:
        """The grid point of a suggested point (a grid point itself, or a whole confirmation config)."""
        return next(i for i, q in enumerate(self.grid) if all(config.get(k) == v for k, v in q.items()))

    def nuisance_in(self, config: dict) -> dict:
        """The nuisance distributions of the values a config holds (a confirmation's chosen values)."""
        return {k: d for k, d in self.nuisance.items() if k in config}

    def name(self, i: int) -> str:
        values = ", ".join(f"{k}={text(v)}" for k, v in self.grid[i].items()) or "all"
        return f"{self.prefix} {values}" + ("" if self.phase == SEARCH else f" [{self.experiment or self.phase}]")

    def studies(self, points: list[dict], samplers: list, fresh: bool) -> list:
        """One Optuna study per distinct grid point of `points` (a list as long as `points`: two
        confirmation configs of one scientific value share its study). `fresh`: a new run, whose studies
        replace any of the same names (an earlier attempt that Tune never saved)."""
        import optuna

        st, out, by_name = storage(self.url), [], {}
        for config, sampler in zip(points, samplers):
            i = self.point(config)
            name = self.name(i)
            if name not in by_name:
                if fresh:
                    try:
                        optuna.delete_study(study_name=name, storage=st)
                    except KeyError:
                        pass
                direction = "maximize" if self.mode == "max" else "minimize"
                s = optuna.create_study(
                    storage=st, study_name=name, direction=direction, sampler=sampler, load_if_exists=True
                )
                if fresh:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # experimental since Optuna 3.2
                        s.set_metric_names([self.metric])
                    s.set_user_attr("phase", self.phase)
                    s.set_user_attr("scientific", {k: choice(v) for k, v in self.grid[i].items()})
                by_name[name] = s
            out.append(by_name[name])
        return out

    def label(self, ot, config: dict, tune_id: str | None, seeds: list[int]) -> None:
        """A new (or adopted) Optuna trial's scientific values and user attributes (an adopted trial that
        was told before a kill keeps what it holds)."""
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            for k, v in self.grid[self.point(config)].items():
                ot.suggest_categorical(k, [choice(v)])  # one choice: never sampled
            if ot.user_attrs.get("tune_trial_id") != tune_id:
                ot.set_user_attr("tune_trial_id", tune_id)
            if "phase" not in ot.user_attrs:
                ot.set_user_attr("phase", self.phase)
                ot.set_user_attr("seeds", list(seeds))
        except UpdateFinishedTrialError:
            pass

    def report(self, ot, result: dict) -> None:
        """One iteration: the mean over the seeds as the intermediate value (one write; each seed's values
        go in once, at the end: `finish`)."""
        from optuna.exceptions import UpdateFinishedTrialError

        value = result.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a step reported before a kill: Optuna keeps the first
                ot.report(value, int(result.get("training_iteration", 0)))
        except UpdateFinishedTrialError:  # told before a kill that Tune's saved state did not see: kept as told
            pass

    def finish(self, ot, result: dict | None, seeds: list[int]) -> None:
        """The last result (which Tune gives to `on_trial_complete` alone where the scheduler stopped the
        trial at it), each seed's objective (`<metric> per seed`) and each seed's every metric (`per seed`),
        before the trial is told."""
        from optuna.exceptions import UpdateFinishedTrialError

        if not result:
            return
        self.report(ot, result)
        per_seed = {k: finite(v) for k, v in result.items() if k.startswith("seed") and "/" in k}
        try:
            ot.set_user_attr(f"{self.metric} per seed", {str(s): per_seed.get(f"seed{s}/{self.metric}") for s in seeds})
            ot.set_user_attr("per seed", per_seed)
        except UpdateFinishedTrialError:
            pass


def finite(v):
    """A number for JSON (NaN and inf as None), anything else as it is."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return choice(v) if v is not None and hasattr(v, "item") else v


def for_plan(p, phase: str = SEARCH, experiment: str | None = None) -> Record | None:
    """How a plan's searcher records its trials, or None where the run has no storage. `experiment`: the
    Tune experiment of a confirmation look, which names its studies (`... [confirm]`)."""
    url = url_for(p)
    if url is None:
        return None
    from ray.tune.search.optuna import OptunaSearch

    space = OptunaSearch.convert_search_space(p.study.search) if p.study.search else {}
    prefix = f"{p.study.name}/{p.run_dir.rstrip('/').rsplit('/', 1)[-1]}"
    return Record(url, prefix, p.points, space, phase, p.study.metric, p.study.mode, experiment)
