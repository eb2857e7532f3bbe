"""Running a study from its command line: parse and check the flags into a `Plan` (nothing
started yet), check the storage, then execute the plan on Ray Tune (grid x seeds, Optuna for
nuisance hyperparameters, ASHA), which writes tables, figures and a report under
`<storage>/<study>/<name>/`. The Tune settings (TuneConfig, RunConfig, the trainable with its
resources) come from the plan. The study declarations live in `studies.study`, the Ray
environment (runtime_env, ray.init arguments, cluster checks) in `studies.cluster`."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studies.cluster import cuda_available, loopback_only, ray_init_kwargs, storage_problem, unschedulable
from studies.study import BUDGETS, Budget, Study

if TYPE_CHECKING:
    from ray import tune


class UsageError(Exception):
    """Bad input: reported as one line, exit code 2, before anything is written."""


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
    p.add_argument("--inject-faults", type=float, default=0.0, metavar="P",
                   help="testing: each trial crashes once with probability P, and is retried from its checkpoint")
    return p


def _parse_value(s: str):
    for kind in (int, float):
        try:
            return kind(s)
        except ValueError:
            pass
    return s


def _replace_axis(study: Study, points: list[dict], spec: str) -> list[dict]:
    """--grid KEY=V1,V2: the grid with KEY's values replaced (every other combination kept)."""
    key, sep, values = spec.partition("=")
    if not sep or key not in study.scientific:
        raise UsageError(f"--grid {spec!r}: expected KEY=V1,V2 with KEY one of {', '.join(study.scientific)}")
    vals = [_parse_value(v) for v in values.split(",") if v.strip()]
    if not vals:
        raise UsageError(f"--grid {spec!r}: empty search space; give at least one value")
    others = list({json.dumps({k: v for k, v in p.items() if k != key}, sort_keys=True): None for p in points})
    return [{**json.loads(o), key: v} for o in others for v in vals]


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
        """Where Tune writes (`tune_dir`), how often a crashed trial is retried, and the checkpoints kept."""
        from ray import tune

        return tune.RunConfig(name="tune", storage_path=self.run_dir, verbose=1,
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
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other: give one of them")
    if not 0 <= args.inject_faults <= 1:
        raise UsageError(f"--inject-faults {args.inject_faults:g}: expected a probability in [0, 1]")
    if args.address is not None and not re.fullmatch(r"auto|ray://[\w.\-]+:\d+|[\w.\-]+:\d+", args.address):
        raise UsageError(f"--address {args.address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    if args.address is None and args.cpus_per_trial > (os.cpu_count() or 1):
        raise UsageError(f"--cpus-per-trial {args.cpus_per_trial:g}: this machine has {os.cpu_count()} CPUs, so no "
                         "trial could ever start; ask for fewer")
    fixed = {**study.fixed, **b.fixed, "iterations": b.iterations}
    if args.inject_faults:
        fixed["fault_rate"] = args.inject_faults
    if args.precision is not None:
        fixed["precision"] = args.precision
    if args.dataset is not None:
        if args.dataset not in study.datasets:
            raise UsageError(f"--dataset: unknown dataset {args.dataset!r} for {study.name}; "
                             f"choose one of {', '.join(study.datasets)}")
        fixed["dataset"] = args.dataset
    if "dataset" in fixed:
        fixed["data_dir"] = str(Path(args.data_dir).expanduser().resolve())
    points = b.grid or study.grid
    for spec in args.grid:
        points = _replace_axis(study, points, spec)
    if not points:
        raise UsageError(f"{study.name}: empty search space; give the study at least one grid point")
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
    storage = args.storage if "://" in args.storage else str(Path(args.storage).expanduser().resolve())
    name = args.name or args.budget
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"--name {name!r}: use a plain folder name such as 'quick' or 'try2'")
    run_dir = f"{storage.rstrip('/')}/{study.name}/{name}"
    seeds = list(range(args.first_seed, args.first_seed + b.seeds))
    return Plan(study, args.budget, b, args, points, seeds, fixed, run_dir, args.cpus_per_trial, gpus)


def _check_storage(p: Plan) -> None:
    """The run directory must be writable, and must not hold a different study (unless told)."""
    if "://" in p.run_dir:
        return
    path = Path(p.run_dir)
    existing = next(a for a in [path, *path.parents] if a.exists())  # nothing is created here
    if not existing.is_dir():
        raise UsageError(f"--storage {p.args.storage}: {existing} is a file, not a folder; choose a writable folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--storage {p.args.storage}: {existing} is not writable; choose a writable folder")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise UsageError(f"--storage {p.args.storage}: {path} is not readable and writable; fix its permissions "
                         "or choose another --name")
    manifest = path / "manifest.json"
    if p.args.resume and not (path / "tune").is_dir():
        raise UsageError(f"--resume: {path} holds no run to resume; leave out --resume to start one")
    if path.exists() and not p.args.overwrite:
        try:
            old = json.loads(manifest.read_text())["signature"]
        except (OSError, ValueError, KeyError):
            old = None
        if old is not None and old != json.loads(json.dumps(p.signature)):
            what = "another study" if old.get("study") != p.study.name else "a different search space"
            raise UsageError(f"{path} holds a run of {what}: pass --name NEW for a new run, "
                             "or --overwrite to replace it")


def _say(study: Study, kind: str, message: str) -> None:
    """One line on stderr: 'python -m studies.NAME: error: ...'."""
    print(f"python -m studies.{study.name}: {kind}: {message}", file=sys.stderr)


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


FALLBACK = ("fashion_mnist", "digits")  # a budget's dataset, and the one that always works offline


def prepare_data(p: Plan) -> str | None:
    """Make the plan's dataset loadable (downloading it where the network allows) before Ray starts.
    A dataset the user named must be there (else UsageError); the budget's Fashion-MNIST falls back
    to digits, which ship with scikit-learn: the plan is changed, and the notice to print returned."""
    if "dataset" not in p.fixed:
        return None
    import datasets

    try:
        datasets.prepare(p.fixed["dataset"], p.fixed["data_dir"])
    except datasets.DatasetError as e:
        if p.args.dataset is not None or p.fixed["dataset"] != FALLBACK[0]:
            raise UsageError(str(e)) from None
        p.fixed["dataset"] = FALLBACK[1]
        return (f"{e}. This run uses {FALLBACK[1]} instead; claims that need {FALLBACK[0]} are reported as "
                "inconclusive")
    return None


def run(study: Study, argv: list[str] | None = None, **plan_fields: Any) -> int:
    """`python -m studies.NAME`: plan, check, run on Ray Tune, write results. Returns the exit code.
    `plan_fields` set fields of the Plan after the command line is read (e.g. reuse_actors=False)."""
    try:
        p = plan(study, argv)
        if plan_fields:
            p = replace(p, **plan_fields)
        notice = prepare_data(p)
        if notice:
            _say(study, "notice", notice)
        _check_storage(p)
    except UsageError as e:
        _say(study, "error", str(e))
        return 2
    return execute(p)


def execute(p: Plan) -> int:
    """Run a checked plan on Ray Tune (a new run, or the resumed one) and write its results.
    Returns the exit code: 0, 1 if every trial failed, 2 if no trial could ever start."""
    import ray
    from ray import tune

    from studies import results
    from studies.search import GridSearch, GroupedASHA

    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started = time.time()
    own_ray = not ray.is_initialized()
    if own_ray:
        if p.args.address is None:
            loopback_only()
        ray.init(**ray_init_kwargs(p.args.address))
    try:
        problem = unschedulable(p.cpus, p.gpus, p.args.address, ray.cluster_resources())
        if problem and p.args.address is None:
            _say(p.study, "error", problem)
            return 2
        if problem:  # a cluster's autoscaler may still add the nodes: say so, and wait for them
            _say(p.study, "warning", f"{problem}; waiting for the autoscaler to add nodes")
        if p.args.address is not None:  # every node of the cluster writes its trials under --storage
            problem = storage_problem(p.args.storage, ray.nodes())
            if problem:
                _say(p.study, "error", problem)
                return 2
        if p.args.overwrite and "://" not in p.run_dir and Path(p.run_dir).exists():
            shutil.rmtree(p.run_dir)
        results.write_manifest(p, started=started, finished=None)
        exp = p.tune_dir
        trainable = p.trainable()
        if "://" not in exp and Path(exp).is_dir() and not list(Path(exp).glob("experiment_state-*.json")):
            shutil.rmtree(exp)  # killed before Tune saved any state: nothing to resume, start afresh
        if tune.Tuner.can_restore(exp):
            print(f"Resuming {exp}", flush=True)
            tuner = tune.Tuner.restore(exp, trainable, resume_unfinished=True, resume_errored=True)
        else:
            search = GridSearch(p.points, p.seeds, p.fixed, p.study.metric, p.study.mode,
                                p.study.search, p.budget.samples, p.study.search_first)
            asha = GroupedASHA(p.study.asha_groups, time_attr="training_iteration", max_t=p.budget.iterations,
                                 grace_period=p.budget.grace, reduction_factor=p.budget.reduction)
            tuner = tune.Tuner(trainable, tune_config=p.tune_config(search, asha), run_config=p.run_config())
        grid = tuner.fit()
        trials, curves = results.tables(grid, p)
    finally:
        if own_ray:
            ray.shutdown()
    paths = results.write(p, trials, curves, started=started)
    configs = trials.drop_duplicates("trial")
    print(f"\n{p.study.name}: {len(configs)} trials ({len(trials)} seed runs), {int(configs['stopped_early'].sum())} "
          f"stopped early by ASHA, {int(trials['diverged'].sum())} seed runs diverged, {time.time() - started:.0f} s")
    for label, path in paths.items():
        print(f"  {label:8s} {path}")
    return 0 if (trials["status"] != "error").any() else 1
