"""What a study module declares: a `Study` (its grid of scientific hyperparameters, fixed config,
nuisance search, metric, analysis module and, optionally, its own trainable) with one `Budget` per
name in `BUDGETS`, and `cross` to write grids. Declarations only: no command line and no Ray here
(see `studies.engine.runner` to run one)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

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
    # confirmation seeds a side, at most, for a claim that its first look leaves undecided (`analysis.sequential`);
    # None: one look
    max_seeds: int | None = None
    # the scientific values whose chosen configuration the confirmation retrains (each dict: values a grid
    # point must have), where this budget's claims read only those; None: every scientific value
    confirm: list[dict] | None = None


@dataclass(frozen=True)
class Study:
    """A study as its module declares it: `python -m studies.NAME` (or `python -m studies path/to/file.py`)
    runs it through `studies.run`. The task is `fixed["task"]`: a built-in name, a `Task`, or an
    importable `module:NAME`."""

    name: str
    doc: str
    grid: list[dict]  # scientific hyperparameters: one dict per point
    fixed: dict  # fixed hyperparameters (training.DEFAULTS fills the rest)
    budgets: dict[str, Budget]
    search: dict = field(default_factory=dict)  # nuisance hyperparameters: tune domains, Optuna
    search_first: dict = field(default_factory=dict)  # nuisance values Optuna tries first, per scientific value
    # scientific keys whose best value is itself chosen, per value of the other scientific keys (the best
    # lr of an lr scan): chosen on validation and confirmed on fresh seeds like the tuned nuisance values
    select: tuple[str, ...] = ()
    # confirm the hand-run setting (`search_first`) beside the chosen one, on the same fresh seeds, where
    # claims compare the two (the optimizers at one fixed lr against each at its tuned lr)
    confirm_first: bool = False
    metric: str = "val_acc"
    mode: str = "max"
    datasets: tuple[str, ...] = ("digits", "cifar10")
    # ASHA compares a trial only with trials that share these values (see GroupedASHA). None: the
    # scientific hyperparameters, so ASHA prunes nuisance samples of one scientific value and never
    # cuts a scientific value in favour of another; () for plain ASHA, where choosing the value is the question.
    asha_groups: tuple[str, ...] | None = None
    # the module of HEADLINE, REFERENCE, CAPTIONS, figures, findings and CLAIMS, by importable name (the
    # study's own module's __name__ where they sit beside the STUDY). None: studies.NAME_analysis for a
    # catalogue study, else none (every run still gets the generic figures and findings)
    analysis: str | None = None
    # a Ray Tune function trainable of the study's own, `train(config)`, or its importable name (module:NAME):
    # it trains every seed of config["seeds"] and reports with studies.report_seeds. None: the shared loop
    trainable: Callable[[dict], None] | str | None = None

    def __post_init__(self):
        if self.asha_groups is None:
            object.__setattr__(self, "asha_groups", tuple(self.scientific))

    @property
    def scientific(self) -> list[str]:
        return list(dict.fromkeys(k for p in self.grid for k in p))
