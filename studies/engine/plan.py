"""A study resolved against its command line: the flags (`parser`), checked into a `Plan` that holds
everything a run needs and starts nothing (`plan`). The Tune settings (TuneConfig, RunConfig, the
trainable with its resources) come from the plan. Bad input is a `UsageError`: one line, exit code 2."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studies.engine.checks import UsageError, replace_axis
from studies.engine.cluster import cuda_available
from studies.engine.record import add_flag
from studies.engine.source import Source, command, resolve_trainable, source_of
from studies.engine.study import BUDGETS, Budget, Study
from studies.engine.task import Task, resolve_task

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


def prog(study: Study, source: Source | None = None) -> str:
    """How the command line names the study: `python -m studies.NAME`, or `python -m studies REF` for a
    study of one's own."""
    source = source or source_of(study)
    return f"python -m studies {source.reference()}" if source.external else f"python -m {source.module}"


def parser(study: Study, source: Source | None = None) -> argparse.ArgumentParser:
    p = _Parser(prog=prog(study, source), description=study.doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--budget",
        choices=BUDGETS,
        default="quick",
        help="smoke: seconds, for tests; quick (default): a miniature that runs offline on a "
        "laptop CPU; full: the hand-run setup, for GPUs",
    )
    p.add_argument(
        "--num-samples",
        type=_positive(int),
        help="Optuna samples of the nuisance hyperparameters per scientific value (studies with a nuisance search)",
    )
    p.add_argument("--seeds", type=_positive(int), help="repeats of every configuration, seeds 0..N-1")
    p.add_argument(
        "--first-seed",
        type=int,
        default=0,
        metavar="K",
        help="the seeds are K..K+N-1 (default 0): a repeat of the study with new seeds",
    )
    p.add_argument("--max-concurrent", type=_positive(int), help="at most this many trials at once")
    p.add_argument("--cpus-per-trial", type=_positive(float), default=1.0)
    p.add_argument(
        "--gpus-per-trial",
        type=_non_negative,
        help="GPUs per trial, fractions allowed (default: 1 if a GPU is visible, else 0)",
    )
    p.add_argument(
        "--address", help="an existing Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: start Ray here)"
    )
    p.add_argument("--storage", default="./results", help="results root, a path or a URI (default ./results)")
    p.add_argument("--name", help="run name (default: the budget); the same name again resumes")
    p.add_argument("--dataset", help=f"dataset: {', '.join(study.datasets)}")
    p.add_argument("--data-dir", default="./data", help="where datasets are read and downloaded")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run of this --name")
    p.add_argument("--overwrite", action="store_true", help="replace the run of this --name")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help=f"replace the values of a scientific hyperparameter ({', '.join(study.scientific)}), "
        "e.g. --grid lr=1e-3,1.0",
    )
    p.add_argument(
        "--iterations", type=_positive(int), help="iterations per trial (epochs, or report blocks): ASHA's max_t"
    )
    p.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        help="arithmetic of matmuls and convolutions: auto (default: bf16 autocast on a GPU, fp32 on "
        "the CPU), bf16 (autocast on the CPU too, for CPUs with bf16 units: avx512_bf16, AMX), fp32",
    )
    for flag, what in (
        (
            "--pack",
            "train the seeds of a trial as one batched model (models.packed): auto (default: on a GPU, "
            "and for the MLP on the CPU), on (wherever the model packs), off (one model per seed)",
        ),
        (
            "--compile",
            "the training step (forward, loss and their backward) through torch.compile: auto "
            "(default: off; on this project's 2-core CPU it gains less than it costs, BENCHMARKS.md), on, off",
        ),
    ):
        p.add_argument(flag, choices=("auto", "on", "off"), help=what)
    p.add_argument(
        "--verbose", action="store_true", help="show Ray's and Tune's full output here (always in <run>/ray.log)"
    )
    confirm = "the chosen configuration of each scientific value trained again on fresh seeds, which the claims read"
    p.add_argument("--no-confirm", dest="confirm", action="store_false", help=f"skip the confirmation ({confirm})")
    more = "looks of twice as many (3, 6, 12), each at 0.05 / looks (default: the budget's, else one look)"
    p.add_argument("--max-seeds", type=_positive(int), help=f"confirmation seeds a side, at most, in {more}")
    p.add_argument(
        "--yes",
        action="store_true",
        help=f"run even above {LARGE_RUNS:,} seed runs (trials x seeds) or {LARGE_ITERATIONS:,} iterations per trial",
    )
    add_flag(p)  # --optuna-storage URL
    p.add_argument(
        "--inject-faults",
        type=float,
        default=0.0,
        metavar="P",
        help="testing: each trial crashes once with probability P, and is retried from its checkpoint",
    )
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
    source: Source  # where the study's module lives
    command: str  # the command that runs it again, flags included
    task: Task | None = None  # what the shared loop trains on; None for a study with its own trainable
    # one worker process serves many trials (a new one costs ~3 s of torch and Tune imports), or a
    # new one per trial; None: reuse on this machine's Ray, not on a cluster (so that trials spread
    # over its nodes)
    reuse_actors: bool | None = None

    @property
    def prog(self) -> str:
        """The study's command as its messages name it."""
        return prog(self.study, self.source)

    @property
    def signature(self) -> dict:
        """What makes two runs the same study: compared before a run is resumed."""
        return {
            "study": self.study.name,
            "points": self.points,
            "seeds": self.seeds,
            "fixed": self.fixed,
            "search": {k: describe(v) for k, v in self.study.search.items()},
            "samples": self.budget.samples,
            "iterations": self.budget.iterations,
        }

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
        """The training function with the CPUs and GPUs of one trial: the study's own, or the shared loop
        with the study's task."""
        from ray import tune

        from studies.engine.loop import train

        fn = (
            resolve_trainable(self.study.trainable)
            if self.study.trainable
            else tune.with_parameters(train, task=self.task)
        )
        return tune.with_resources(fn, {"cpu": self.cpus, "gpu": self.gpus})

    def tune_config(self, search: Any, scheduler: Any) -> tune.TuneConfig:
        """Tune's settings for a new run: this search algorithm and scheduler, one sample per trial
        the search will suggest, at most --max-concurrent at once."""
        from ray import tune

        reuse = self.args.address is None if self.reuse_actors is None else self.reuse_actors
        return tune.TuneConfig(
            metric=self.study.metric,
            mode=self.study.mode,
            search_alg=search,
            scheduler=scheduler,
            num_samples=search.total,
            max_concurrent_trials=self.args.max_concurrent,
            trial_dirname_creator=_trial_dirname,
            reuse_actors=reuse,
        )

    def run_config(
        self, name: str = "tune", trials: int | None = None, seeds: list[int] | None = None
    ) -> tune.RunConfig:
        """Where Tune writes (`tune_dir`), how often a crashed trial is retried (a storage fault stops
        the study instead: `studies.engine.storage`), the checkpoints kept, and what it prints: its own
        output (verbose=1: trial tables, status every 30 s) goes where `execute` sends stdout (ray.log),
        and the compact view (`studies.progress.Progress`) to the terminal. `name`, `trials` and `seeds`: those
        of another experiment of the run (the confirmation phase's)."""
        from ray import tune

        from studies.engine.progress import Progress
        from studies.engine.storage import StorageGuard, filesystem_for

        view = Progress(
            self.study.name if name == "tune" else f"{self.study.name} ({name})",
            self.study.scientific,
            list(self.study.search),
            self.study.metric,
            self.study.mode,
            self.budget.iterations,
            self.n_trials if trials is None else trials,
            self.seeds if seeds is None else seeds,
        )
        return tune.RunConfig(
            name=name,
            storage_path=self.run_dir,
            storage_filesystem=filesystem_for(self.run_dir),  # a local run: every file written atomically
            verbose=1,
            callbacks=[view, StorageGuard()],
            failure_config=tune.FailureConfig(max_failures=2),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        )


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def describe(domain) -> str:
    """A tune domain as stable text, e.g. 'Float(1e-05, 0.1, LogUniform)'."""
    if hasattr(domain, "categories"):
        return f"Categorical({list(domain.categories)})"
    if hasattr(domain, "lower"):
        sampler = type(domain.get_sampler()).__name__
        return f"{type(domain).__name__}({domain.lower}, {domain.upper}, {sampler})"
    return repr(domain)


def plan(study: Study, argv: list[str] | None = None, source: Source | None = None, cmd: str | None = None) -> Plan:
    """Parse and check the command line; raise UsageError on bad input. Starts nothing. `source` is
    where the study's module lives (found among the imported modules where not given), `cmd` the
    command that was run (rebuilt from `source` and `argv` where not given)."""
    import sys

    source = source or source_of(study)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser(study, source).parse_args(argv)
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
        raise UsageError(
            f"--first-seed {args.first_seed}: the seeds must stay below 2^32 ({MAX_SEED:,}); choose a smaller K"
        )
    if b.iterations > LARGE_ITERATIONS and not args.yes:
        raise UsageError(
            f"--iterations {b.iterations:,}: more than {LARGE_ITERATIONS:,} iterations per trial "
            f"(the full budget has {study.budgets['full'].iterations}); pass --yes if you mean it"
        )
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other: give one of them")
    if not 0 <= args.inject_faults <= 1:
        raise UsageError(f"--inject-faults {args.inject_faults:g}: expected a probability in [0, 1]")
    if args.address is not None and not re.fullmatch(r"auto|ray://[\w.\-]+:\d+|[\w.\-]+:\d+", args.address):
        raise UsageError(f"--address {args.address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    if args.address not in (None, "auto") and not 0 < int(args.address.rpartition(":")[2]) < 65536:
        raise UsageError(
            f"--address {args.address}: the port must be 1 to 65535 (a Ray head listens on 6379 "
            "by default, its Ray Client server on 10001)"
        )
    if args.address is None and args.cpus_per_trial > (os.cpu_count() or 1):
        raise UsageError(
            f"--cpus-per-trial {args.cpus_per_trial:g}: this machine has {os.cpu_count()} CPUs, so no "
            "trial could ever start; ask for fewer"
        )
    fixed = {**study.fixed, **b.fixed, "iterations": b.iterations}
    if args.inject_faults:
        fixed["fault_rate"] = args.inject_faults
    fixed |= {k: getattr(args, k) for k in ("precision", "pack", "compile") if getattr(args, k) is not None}
    if args.dataset is not None:
        if args.dataset not in study.datasets:
            raise UsageError(
                f"--dataset: unknown dataset {args.dataset!r} for {study.name}; "
                f"choose one of {', '.join(study.datasets)}"
            )
        fixed["dataset"] = args.dataset
    if "dataset" in fixed:
        fixed["data_dir"] = str(Path(args.data_dir).expanduser().resolve())
    points = b.grid or study.grid
    given = [spec.partition("=")[0] for spec in args.grid]
    repeated = next((k for k in given if given.count(k) > 1), None)
    if repeated is not None:
        raise UsageError(
            f"--grid {repeated} is given {given.count(repeated)} times: put all its values in one "
            f"flag, e.g. --grid {repeated}=V1,V2"
        )
    for spec in args.grid:
        points = replace_axis(study, points, spec)
    if not points:
        raise UsageError(f"{study.name}: empty search space; give the study at least one grid point")
    trials = len(points) * (b.samples if study.search else 1)
    if trials * b.seeds > LARGE_RUNS and not args.yes:
        raise UsageError(
            f"{trials:,} trials x {b.seeds:,} seeds = {trials * b.seeds:,} seed runs, more than "
            f"{LARGE_RUNS:,}: pass --yes if you mean it, or give fewer --seeds or --grid values"
        )
    task = None
    if study.trainable is not None:
        resolve_trainable(study.trainable)
    else:
        from studies.engine.config import check_config

        try:
            task = resolve_task(fixed.get("task", "image"))
        except ValueError as e:
            raise UsageError(f"{e} ({study.name})") from None
        if "task" in fixed:  # the config and the tables hold its name; the trainable gets the Task itself
            fixed["task"] = task.name
        for point in points:
            problem = check_config({**fixed, **point}, task)
            if problem:
                raise UsageError(f"{problem} ({study.name}); fix the value or the --grid flag")
    gpus = args.gpus_per_trial
    if gpus is None:
        gpus = 1.0 if (args.address is None and cuda_available()) else 0.0
    elif gpus > 0 and args.address is None and not cuda_available():
        raise UsageError(
            f"--gpus-per-trial {gpus:g}: no GPU is visible on this machine; "
            "use --gpus-per-trial 0, or --address to run on a cluster with GPUs"
        )
    storage = args.storage.removeprefix("file://") if args.storage.startswith("file:///") else args.storage
    storage = storage if "://" in storage else str(Path(storage).expanduser().resolve())
    name = args.budget if args.name is None else args.name
    if not re.fullmatch(r"[\w.\-]{1,100}", name) or name.startswith("."):
        raise UsageError(
            f"--name {name!r}: use a plain folder name such as 'quick' or 'try2' (letters, digits, "
            "'.', '_' and '-'; at most 100)"
        )
    run_dir = f"{storage.rstrip('/')}/{study.name}/{name}"
    seeds = list(range(args.first_seed, args.first_seed + b.seeds))
    cmd = cmd or command(source, argv)
    return Plan(
        study, args.budget, b, args, points, seeds, fixed, run_dir, args.cpus_per_trial, gpus, source, cmd, task
    )
