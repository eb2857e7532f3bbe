"""Declaring and running a study: the `Study` a study module declares, its command line, and
the Ray Tune run (grid x seeds, Optuna for nuisance hyperparameters, ASHA) that writes tables,
figures and a report under `<storage>/<study>/<name>/`."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGETS = ("smoke", "quick", "full")


def cross(**axes: list) -> list[dict]:
    """All combinations of the axes: cross(lr=[1, 2], seed=[0]) -> [{lr: 1, seed: 0}, {lr: 2, seed: 0}]."""
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


@dataclass(frozen=True)
class Budget:
    """How much one run of a study costs. `iterations` is ASHA's max_t (epochs, or report blocks)."""

    iterations: int
    seeds: int = 1
    samples: int = 1  # Optuna samples of the nuisance space per scientific value
    grace: int = 1  # ASHA grace period, in iterations
    reduction: int = 3  # ASHA reduction factor
    grid: list[dict] | None = None  # a smaller scientific grid (smoke tests)
    fixed: dict = field(default_factory=dict)  # overrides of the study's fixed config


@dataclass(frozen=True)
class Study:
    name: str
    doc: str
    grid: list[dict]  # scientific hyperparameters: one dict per point
    fixed: dict  # fixed hyperparameters (training.DEFAULTS fills the rest)
    budgets: dict[str, Budget]
    search: dict = field(default_factory=dict)  # nuisance hyperparameters: tune domains, Optuna
    search_first: dict = field(default_factory=dict)  # nuisance values Optuna tries first, per scientific value
    metric: str = "val_acc"
    mode: str = "max"
    datasets: tuple[str, ...] = ("digits", "cifar10")
    asha_groups: tuple[str, ...] = ()  # ASHA compares trials only within a group (see GroupedASHA)

    @property
    def scientific(self) -> list[str]:
        return list(dict.fromkeys(k for p in self.grid for k in p))


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

    @property
    def signature(self) -> dict:
        """What makes two runs the same study: compared before a run is resumed."""
        return {"study": self.study.name, "points": self.points, "seeds": self.seeds,
                "fixed": self.fixed, "search": {k: describe(v) for k, v in self.study.search.items()},
                "samples": self.budget.samples, "iterations": self.budget.iterations}


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
        gpus = 1.0 if (args.address is None and _cuda_available()) else 0.0
    elif gpus > 0 and args.address is None and not _cuda_available():
        raise UsageError(f"--gpus-per-trial {gpus:g}: no GPU is visible on this machine; "
                         "use --gpus-per-trial 0, or --address to run on a cluster with GPUs")
    storage = args.storage if "://" in args.storage else str(Path(args.storage).expanduser().resolve())
    name = args.name or args.budget
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"--name {name!r}: use a plain folder name such as 'quick' or 'try2'")
    run_dir = f"{storage.rstrip('/')}/{study.name}/{name}"
    return Plan(study, args.budget, b, args, points, list(range(b.seeds)), fixed, run_dir, args.cpus_per_trial, gpus)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def runtime_env(address: str | None = None) -> dict:
    """What Ray's workers need to import this project: its root first on the path, so that our
    `datasets` wins over Hugging Face's; on a cluster the project itself travels as working_dir."""
    env = {"RAY_CHDIR_TO_TRIAL_DIR": "0"}
    if address is None:
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        return {"env_vars": env}
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")  # set for `ray job submit` drivers
    if (job.get("runtime_env") or {}).get("working_dir"):  # the job ships the project (Ray refuses a second one)
        return {"env_vars": env}
    return {"working_dir": str(ROOT), "env_vars": env,
            "excludes": [".git", ".venv", "results", "data", ".gpu", "**/__pycache__", "*.parquet"]}


def loopback_only() -> None:
    """Make the Ray started next (and its processes) bind to 127.0.0.1 only, not the machine's
    external address. Ray reads the switch at import, so it is set in the module too."""
    from ray._private import ray_constants

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray_constants.ENABLE_RAY_CLUSTER = os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] not in ("0", "false", "False")


def ray_init_kwargs(address: str | None = None) -> dict:
    kwargs = {"runtime_env": runtime_env(address), "log_to_driver": True, "logging_level": "WARNING"}
    if address is None:
        kwargs["include_dashboard"] = False
    else:
        kwargs["address"] = address
    return kwargs


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


def _unschedulable(p: Plan, resources: dict) -> str | None:
    """Why no trial could ever start on this Ray, or None: refuse at once rather than hang."""
    for kind, need in (("CPU", p.cpus), ("GPU", p.gpus)):
        have = resources.get(kind, 0)
        if need > have:
            where = f"the Ray cluster at {p.args.address}" if p.args.address else "this machine's Ray"
            return (f"a trial needs {need:g} {kind} but {where} has {have:g}: lower --{kind.lower()}s-per-trial"
                    + ("" if p.args.address else " or run on a cluster with --address"))
    return None


def _say(study: Study, kind: str, message: str) -> None:
    """One line on stderr: 'python -m studies.NAME: error: ...'."""
    print(f"python -m studies.{study.name}: {kind}: {message}", file=sys.stderr)


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def run(study: Study, argv: list[str] | None = None) -> int:
    """`python -m studies.NAME`: plan, check, run on Ray Tune, write results. Returns the exit code."""
    try:
        p = plan(study, argv)
        if "dataset" in p.fixed:
            import datasets

            try:
                datasets.prepare(p.fixed["dataset"], p.fixed["data_dir"])
            except datasets.DatasetError as e:
                raise UsageError(str(e)) from None
        _check_storage(p)
    except UsageError as e:
        _say(study, "error", str(e))
        return 2
    return execute(p)


def execute(p: Plan) -> int:
    import ray
    from ray import tune

    from studies import results
    from studies.search import GridSearch, GroupedASHA
    from studies.train import train

    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started = time.time()
    own_ray = not ray.is_initialized()
    if own_ray:
        if p.args.address is None:
            loopback_only()
        ray.init(**ray_init_kwargs(p.args.address))
    try:
        problem = _unschedulable(p, ray.cluster_resources())
        if problem and p.args.address is None:
            _say(p.study, "error", problem)
            return 2
        if problem:  # a cluster's autoscaler may still add the nodes: say so, and wait for them
            _say(p.study, "warning", f"{problem}; waiting for the autoscaler to add nodes")
        if p.args.address is not None:  # every node of the cluster writes its trials under --storage
            from studies.cluster import storage_problem

            problem = storage_problem(p.args.storage, ray.nodes())
            if problem:
                _say(p.study, "error", problem)
                return 2
        if p.args.overwrite and "://" not in p.run_dir and Path(p.run_dir).exists():
            shutil.rmtree(p.run_dir)
        results.write_manifest(p, started=started, finished=None)
        exp = f"{p.run_dir}/tune"
        trainable = tune.with_resources(train, {"cpu": p.cpus, "gpu": p.gpus})
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
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(metric=p.study.metric, mode=p.study.mode, search_alg=search,
                                            scheduler=asha, num_samples=search.total,
                                            max_concurrent_trials=p.args.max_concurrent,
                                            trial_dirname_creator=_trial_dirname,
                                            # one worker process serves many trials on this machine
                                            # (a new one costs ~3 s of torch and Tune imports); on a
                                            # cluster, one per trial, so that trials spread over nodes
                                            reuse_actors=p.args.address is None),
                run_config=tune.RunConfig(name="tune", storage_path=p.run_dir, verbose=1,
                                          failure_config=tune.FailureConfig(max_failures=2),
                                          checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
            )
        grid = tuner.fit()
        trials, curves = results.tables(grid, p)
    finally:
        if own_ray:
            ray.shutdown()
    paths = results.write(p, trials, curves, started=started)
    print(f"\n{p.study.name}: {len(trials)} trials, {int(trials['stopped_early'].sum())} stopped early by ASHA, "
          f"{int(trials['diverged'].sum())} diverged, {time.time() - started:.0f} s")
    for label, path in paths.items():
        print(f"  {label:8s} {path}")
    return 0 if (trials["status"] != "error").any() else 1
