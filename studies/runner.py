"""Running a study from its command line: parse and check the flags into a `Plan` (nothing
started yet), check the storage, then execute the plan on Ray Tune (grid x seeds, Optuna for
nuisance hyperparameters, ASHA), which writes tables, figures and a report under
`<storage>/<study>/<name>/`. The Tune settings (TuneConfig, RunConfig, the trainable with its
resources) come from the plan. The study declarations live in `studies.study`, the Ray
environment (runtime_env, ray.init arguments, cluster checks) in `studies.cluster`, the checks of
storage, address and data that run before Ray starts in `studies.checks`."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studies.checks import (  # noqa: F401  (UsageError, FALLBACK: what callers import from here)
    FALLBACK,
    UsageError,
    check_address,
    check_storage,
    prepare_data,
    replace_axis,
)
from studies.cluster import (
    cuda_available,
    loopback_only,
    ray_init_kwargs,
    storage_problem,
    unschedulable,
)
from studies.study import BUDGETS, Budget, Study

if TYPE_CHECKING:
    from ray import tune


# Above these a run is refused unless --yes: a typo such as --seeds 100000 would otherwise hold the
# machine (or a cluster's bill) for days. The full budgets stay far below (at most 144 seed runs, 100
# iterations).
LARGE_RUNS = 2_000  # seed runs: trials x seeds
LARGE_ITERATIONS = 10_000  # iterations per trial
MAX_SEED = 2**32  # seeds are below this (torch and numpy take them)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        raise UsageError(message)


def _positive(kind):
    def parse(s):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None
        if not v > 0:
            raise argparse.ArgumentTypeError(f"{s} must be positive")
        return v

    return parse


def _non_negative(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"{s} must be 0 or more (fractions such as 0.25 share a GPU)")
    return v


def parser(study: Study) -> argparse.ArgumentParser:
    p = _Parser(prog=f"python -m studies.{study.name}", description=study.doc,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=BUDGETS, default="quick",
                   help="smoke: seconds, for tests; quick (default): a miniature that runs offline on a "
                        "laptop CPU; full: the hand-run setup, for GPUs")
    p.add_argument("--num-samples", type=_positive(int), help="Optuna samples of the nuisance hyperparameters "
                   "per scientific value (studies with a nuisance search)")
    p.add_argument("--seeds", type=_positive(int), help="repeats of every configuration, seeds 0..N-1")
    p.add_argument("--first-seed", type=int, default=0, metavar="K",
                   help="the seeds are K..K+N-1 (default 0): a repeat of the study with new seeds")
    p.add_argument("--max-concurrent", type=_positive(int), help="at most this many trials at once")
    p.add_argument("--cpus-per-trial", type=_positive(float), default=1.0)
    p.add_argument("--gpus-per-trial", type=_non_negative, default=None,
                   help="GPUs per trial, fractions allowed (default: 1 if a GPU is visible, else 0)")
    p.add_argument("--address", help="an existing Ray cluster: auto, HOST:PORT or ray://HOST:PORT "
                   "(default: start Ray here)")
    p.add_argument("--storage", default="./results", help="results root, a path or a URI (default ./results)")
    p.add_argument("--name", help="run name (default: the budget); the same name again resumes")
    p.add_argument("--dataset", help=f"dataset: {', '.join(study.datasets)}")
    p.add_argument("--data-dir", default="./data", help="where datasets are read and downloaded")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run of this --name")
    p.add_argument("--overwrite", action="store_true", help="replace the run of this --name")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help=f"replace the values of a scientific hyperparameter ({', '.join(study.scientific)}), "
                        "e.g. --grid lr=1e-3,1.0")
    p.add_argument("--iterations", type=_positive(int), help="iterations per trial (epochs, or report blocks): "
                   "ASHA's max_t")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"),
                   help="arithmetic of matmuls and convolutions: auto (default: bf16 autocast on a GPU, fp32 on "
                        "the CPU), bf16 (autocast on the CPU too, for CPUs with bf16 units: avx512_bf16, AMX), fp32")
    p.add_argument("--pack", choices=("auto", "on", "off"),
                   help="train the seeds of a trial as one batched model (models.packed): auto (default: on a GPU, "
                        "and for the MLP on the CPU), on (wherever the model packs), off (one model per seed)")
    p.add_argument("--verbose", action="store_true",
                   help="show Ray's and Tune's full output here (it always goes to <run>/ray.log)")
    p.add_argument("--yes", action="store_true", help=f"run even above {LARGE_RUNS:,} seed runs (trials x seeds) "
                   f"or {LARGE_ITERATIONS:,} iterations per trial")
    p.add_argument("--inject-faults", type=float, default=0.0, metavar="P",
                   help="testing: each trial crashes once with probability P, and is retried from its checkpoint")
    return p


@dataclass
class Plan:
    """A study resolved against its command line: everything a run needs, nothing started yet."""

    study: Study
    budget_name: str
    budget: Budget
    args: argparse.Namespace
    points: list[dict]
    seeds: list[int]
    fixed: dict
    run_dir: str  # local path or URI
    cpus: float
    gpus: float
    # one worker process serves many trials (a new one costs ~3 s of torch and Tune imports), or a
    # new one per trial; None: reuse on this machine's Ray, not on a cluster (so that trials spread
    # over its nodes)
    reuse_actors: bool | None = None

    @property
    def signature(self) -> dict:
        """What makes two runs the same study: compared before a run is resumed."""
        return {"study": self.study.name, "points": self.points, "seeds": self.seeds,
                "fixed": self.fixed, "search": {k: describe(v) for k, v in self.study.search.items()},
                "samples": self.budget.samples, "iterations": self.budget.iterations}

    @property
    def n_trials(self) -> int:
        """Tune trials: one per grid point and nuisance sample; each trains every seed."""
        return len(self.points) * (self.budget.samples if self.study.search else 1)

    @property
    def log_path(self) -> str:
        """Ray's and Tune's full output (see studies.progress.RunLog)."""
        return f"{self.run_dir}/ray.log"

    @property
    def tune_dir(self) -> str:
        """Tune's experiment folder (local path or URI): its state, and one folder per trial."""
        return f"{self.run_dir}/tune"

    def trainable(self) -> Any:
        """The training function with the CPUs and GPUs of one trial."""
        from ray import tune

        from studies.train import train

        return tune.with_resources(train, {"cpu": self.cpus, "gpu": self.gpus})

    def tune_config(self, search: Any, scheduler: Any) -> tune.TuneConfig:
        """Tune's settings for a new run: this search algorithm and scheduler, one sample per trial
        the search will suggest, at most --max-concurrent at once."""
        from ray import tune

        reuse = self.args.address is None if self.reuse_actors is None else self.reuse_actors
        return tune.TuneConfig(metric=self.study.metric, mode=self.study.mode, search_alg=search,
                               scheduler=scheduler, num_samples=search.total,
                               max_concurrent_trials=self.args.max_concurrent,
                               trial_dirname_creator=_trial_dirname, reuse_actors=reuse)

    def run_config(self) -> tune.RunConfig:
        """Where Tune writes (`tune_dir`), how often a crashed trial is retried, the checkpoints kept,
        and what it prints: its own output (verbose=1: trial tables, status every 30 s) goes where
        `execute` sends stdout (ray.log), and the compact view (`studies.progress.Progress`) to the terminal."""
        from ray import tune

        from studies.progress import Progress

        view = Progress(self.study.name, self.study.scientific, list(self.study.search), self.study.metric,
                        self.study.mode, self.budget.iterations, self.n_trials, self.seeds)
        return tune.RunConfig(name="tune", storage_path=self.run_dir, verbose=1, callbacks=[view],
                              failure_config=tune.FailureConfig(max_failures=2),
                              checkpoint_config=tune.CheckpointConfig(num_to_keep=2))


def describe(domain) -> str:
    """A tune domain as stable text, e.g. 'Float(1e-05, 0.1, LogUniform)'."""
    if hasattr(domain, "categories"):
        return f"Categorical({list(domain.categories)})"
    if hasattr(domain, "lower"):
        sampler = type(domain.get_sampler()).__name__
        return f"{type(domain).__name__}({domain.lower}, {domain.upper}, {sampler})"
    return repr(domain)


def plan(study: Study, argv: list[str] | None = None) -> Plan:
    """Parse and check the command line; raise UsageError on bad input. Starts nothing."""
    args = parser(study).parse_args(argv)
    b = study.budgets[args.budget]
    if args.num_samples is not None:
        if not study.search:
            raise UsageError(f"--num-samples: {study.name} has no nuisance search; use --seeds to repeat its grid")
        b = replace(b, samples=args.num_samples)
    if args.seeds is not None:
        b = replace(b, seeds=args.seeds)
    if args.iterations is not None:
        b = replace(b, iterations=args.iterations, grace=min(b.grace, args.iterations))
    if args.first_seed < 0:
        raise UsageError(f"--first-seed {args.first_seed}: expected a whole number >= 0")
    if args.first_seed + b.seeds > MAX_SEED:
        raise UsageError(f"--first-seed {args.first_seed}: the seeds must stay below 2^32 ({MAX_SEED:,}); "
                         "choose a smaller K")
    if b.iterations > LARGE_ITERATIONS and not args.yes:
        raise UsageError(f"--iterations {b.iterations:,}: more than {LARGE_ITERATIONS:,} iterations per trial "
                         f"(the full budget has {study.budgets['full'].iterations}); pass --yes if you mean it")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other: give one of them")
    if not 0 <= args.inject_faults <= 1:
        raise UsageError(f"--inject-faults {args.inject_faults:g}: expected a probability in [0, 1]")
    if args.address is not None and not re.fullmatch(r"auto|ray://[\w.\-]+:\d+|[\w.\-]+:\d+", args.address):
        raise UsageError(f"--address {args.address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    if args.address not in (None, "auto") and not 0 < int(args.address.rpartition(":")[2]) < 65536:
        raise UsageError(f"--address {args.address}: the port must be 1 to 65535 (a Ray head listens on 6379 "
                         "by default, its Ray Client server on 10001)")
    if args.address is None and args.cpus_per_trial > (os.cpu_count() or 1):
        raise UsageError(f"--cpus-per-trial {args.cpus_per_trial:g}: this machine has {os.cpu_count()} CPUs, so no "
                         "trial could ever start; ask for fewer")
    fixed = {**study.fixed, **b.fixed, "iterations": b.iterations}
    if args.inject_faults:
        fixed["fault_rate"] = args.inject_faults
    if args.precision is not None:
        fixed["precision"] = args.precision
    if args.pack is not None:
        fixed["pack"] = args.pack
    if args.dataset is not None:
        if args.dataset not in study.datasets:
            raise UsageError(f"--dataset: unknown dataset {args.dataset!r} for {study.name}; "
                             f"choose one of {', '.join(study.datasets)}")
        fixed["dataset"] = args.dataset
    if "dataset" in fixed:
        fixed["data_dir"] = str(Path(args.data_dir).expanduser().resolve())
    points = b.grid or study.grid
    given = [spec.partition("=")[0] for spec in args.grid]
    repeated = next((k for k in given if given.count(k) > 1), None)
    if repeated is not None:
        raise UsageError(f"--grid {repeated} is given {given.count(repeated)} times: put all its values in one "
                         f"flag, e.g. --grid {repeated}=V1,V2")
    for spec in args.grid:
        points = replace_axis(study, points, spec)
    if not points:
        raise UsageError(f"{study.name}: empty search space; give the study at least one grid point")
    trials = len(points) * (b.samples if study.search else 1)
    if trials * b.seeds > LARGE_RUNS and not args.yes:
        raise UsageError(f"{trials:,} trials x {b.seeds:,} seeds = {trials * b.seeds:,} seed runs, more than "
                         f"{LARGE_RUNS:,}: pass --yes if you mean it, or give fewer --seeds or --grid values")
    from studies.train import check_config

    for point in points:
        problem = check_config({**fixed, **point})
        if problem:
            raise UsageError(f"{problem} ({study.name}); fix the value or the --grid flag")
    gpus = args.gpus_per_trial
    if gpus is None:
        gpus = 1.0 if (args.address is None and cuda_available()) else 0.0
    elif gpus > 0 and args.address is None and not cuda_available():
        raise UsageError(f"--gpus-per-trial {gpus:g}: no GPU is visible on this machine; "
                         "use --gpus-per-trial 0, or --address to run on a cluster with GPUs")
    storage = args.storage.removeprefix("file://") if args.storage.startswith("file:///") else args.storage
    storage = storage if "://" in storage else str(Path(storage).expanduser().resolve())
    name = args.budget if args.name is None else args.name
    if not re.fullmatch(r"[\w.\-]{1,100}", name) or name.startswith("."):
        raise UsageError(f"--name {name!r}: use a plain folder name such as 'quick' or 'try2' (letters, digits, "
                         "'.', '_' and '-'; at most 100)")
    run_dir = f"{storage.rstrip('/')}/{study.name}/{name}"
    seeds = list(range(args.first_seed, args.first_seed + b.seeds))
    return Plan(study, args.budget, b, args, points, seeds, fixed, run_dir, args.cpus_per_trial, gpus)


def _say(study: Study, kind: str, message: str, file=None) -> None:
    """One line on stderr: 'python -m studies.NAME: error: ...' (a newline in a value shows as \\n)."""
    message = message.replace("\r", "\\r").replace("\n", "\\n")
    print(f"python -m studies.{study.name}: {kind}: {message}", file=file or sys.stderr)


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def run(study: Study, argv: list[str] | None = None, **plan_fields: Any) -> int:
    """`python -m studies.NAME`: plan, check, run on Ray Tune, write results. Returns the exit code.
    `plan_fields` set fields of the Plan after the command line is read (e.g. reuse_actors=False)."""
    try:
        p = plan(study, argv)
        if plan_fields:
            p = replace(p, **plan_fields)
        notice = prepare_data(p)
        check_storage(p)
        check_address(p)
    except UsageError as e:
        _say(study, "error", str(e))
        return 2
    if notice:
        _say(study, "notice", notice)
    return execute(p)


def _header(p: Plan) -> str:
    """What the terminal shows when the trials start: the study, where it runs, where things go."""
    from studies.progress import seeds_text

    where = "this machine's Ray" if p.args.address is None else f"the Ray cluster at {p.args.address}"
    later = " (uploaded at the end)" if "://" in p.run_dir else ""
    return (f"{p.study.name}, budget {p.budget_name}: {p.n_trials} trials, each trains {seeds_text(p.seeds)}, on "
            f"{where}; results in {p.run_dir}\n  Ray's output: {p.log_path}{later}; curves: "
            f"tensorboard --logdir {p.tune_dir}")


def execute(p: Plan) -> int:
    """Run a checked plan on Ray Tune (a new run, or the resumed one) and write its results.
    Returns the exit code: 0, 1 if every trial failed, 2 if no trial could ever start.

    The terminal gets the compact view (`studies.progress.Progress`) and the summary; everything Ray
    and Tune print goes to `<run>/ray.log` (with --verbose: to both)."""
    import tempfile

    import ray
    from ray import tune

    from studies import results
    from studies.progress import RunLog, drawing_on
    from studies.search import GridSearch, GroupedASHA

    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started = time.time()
    out, err = sys.stdout, sys.stderr
    remote = "://" in p.run_dir
    log = RunLog(echo=out, echo_err=err) if p.args.verbose else RunLog()
    staging = Path(tempfile.mkdtemp(prefix="study-log-")) if remote else None  # the log of a URI run, uploaded
    own_ray = not ray.is_initialized()
    try:
        with log.capturing(), drawing_on(None if p.args.verbose else out):
            if own_ray:
                if p.args.address is None:
                    loopback_only()
                ray.init(**ray_init_kwargs(p.args.address))
            try:
                problem = unschedulable(p.cpus, p.gpus, p.args.address, ray.cluster_resources())
                if problem and p.args.address is None:
                    _say(p.study, "error", problem, file=err)
                    return 2
                if problem:  # a cluster's autoscaler may still add the nodes: say so, and wait for them
                    _say(p.study, "warning", f"{problem}; waiting for the autoscaler to add nodes", file=err)
                if p.args.address is not None:  # every node of the cluster writes its trials under --storage
                    problem = storage_problem(p.args.storage, ray.nodes())
                    if problem:
                        _say(p.study, "error", problem, file=err)
                        return 2
                if p.args.overwrite and not remote and Path(p.run_dir).exists():
                    shutil.rmtree(p.run_dir)
                results.write_manifest(p, started=started, finished=None)
                log.attach(staging / "ray.log" if remote else p.log_path)
                print(_header(p), file=out, flush=True)
                exp = p.tune_dir
                trainable = p.trainable()
                if not remote and Path(exp).is_dir() and not list(Path(exp).glob("experiment_state-*.json")):
                    shutil.rmtree(exp)  # killed before Tune saved any state: nothing to resume, start afresh
                if tune.Tuner.can_restore(exp):
                    print(f"  resuming {exp}", file=out, flush=True)
                    tuner = tune.Tuner.restore(exp, trainable, resume_unfinished=True, resume_errored=True)
                else:
                    search = GridSearch(p.points, p.seeds, p.fixed, p.study.metric, p.study.mode,
                                        p.study.search, p.budget.samples, p.study.search_first)
                    asha = GroupedASHA(p.study.asha_groups, keep=p.study.search_first, time_attr="training_iteration",
                                       max_t=p.budget.iterations, grace_period=p.budget.grace,
                                       reduction_factor=p.budget.reduction)
                    tuner = tune.Tuner(trainable, tune_config=p.tune_config(search, asha), run_config=p.run_config())
                grid = tuner.fit()
                trials, curves = results.tables(grid, p)
            finally:
                if own_ray:
                    ray.shutdown()
    except BaseException:
        if log.path is not None:
            _say(p.study, "error", f"the run stopped; Ray's and Tune's output up to here is in {p.log_path}"
                 + (f" (here: {log.path})" if remote else ""), file=err)
        raise
    finally:
        log.end()
    if remote and log.path is not None:
        results.upload(staging, p.run_dir)
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)
    paths = results.write(p, trials, curves, started=started)
    configs = trials.drop_duplicates("trial")
    print(f"\n{p.study.name}: {len(configs)} trials ({len(trials)} seed runs), {int(configs['stopped_early'].sum())} "
          f"stopped early by ASHA, {int(trials['diverged'].sum())} seed runs diverged, {time.time() - started:.0f} s")
    print(f"  {'log':8s} {p.log_path} (Ray's and Tune's output)")
    print(f"  {'curves':8s} tensorboard --logdir {p.tune_dir}")
    for label, path in paths.items():
        print(f"  {label:8s} {path}")
    return 0 if (trials["status"] != "error").any() else 1
