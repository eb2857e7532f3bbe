"""The study's search algorithm and scheduler: a grid of scientific values, repeated over seeds, with the
nuisance hyperparameters searched by one OptunaSearch per scientific value.

Ray's own searchers either enumerate a grid (BasicVariantGenerator) or optimise a whole space
(OptunaSearch); a fair comparison needs both at once: the best lr *for each* optimizer. Each
Optuna suggestion runs once per seed, and Optuna is told the mean over seeds.
"""

from __future__ import annotations

import copy
import math
from collections import deque

import cloudpickle
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher


class GridSearch(Searcher):
    def __init__(self, points: list[dict], seeds: list[int], fixed: dict, metric: str, mode: str,
                 space: dict | None = None, samples: int = 1, first: dict | None = None):
        super().__init__(metric=metric, mode=mode)
        self.points, self.seeds, self.fixed = points, seeds, fixed
        self.samples = samples if space else 1
        self.order = [(p, k) for k in range(self.samples) for p in range(len(points))]  # round robin
        self.issued = 0
        self.pending: deque[tuple[str, dict]] = deque()  # (key, config) not yet handed to Tune
        self.live: dict[str, str] = {}  # Tune trial id -> key "point-sample"
        self.scores: dict[str, list] = {}
        self.optuna = None
        if space:
            import optuna
            from ray.tune.search.optuna import OptunaSearch

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            dists = OptunaSearch.convert_search_space(space)
            startup = max(2, min(10, self.samples // 2))  # TPE needs a few random points first
            # `first`: the nuisance values every scientific value tries first (e.g. a hand-run lr)
            first_points = [first] if first else None
            self.optuna = [OptunaSearch(space=dists, metric=metric, mode=mode, points_to_evaluate=first_points,
                                        sampler=optuna.samplers.TPESampler(seed=p, n_startup_trials=startup))
                           for p in range(len(points))]

    @property
    def total(self) -> int:
        return len(self.order) * len(self.seeds)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # metric and mode are set here already; the config comes from the grid

    def suggest(self, trial_id: str):
        if not self.pending:
            if self.issued == len(self.order):
                return Searcher.FINISHED
            p, k = self.order[self.issued]
            self.issued += 1
            key = f"{p}-{k}"
            nuisance = self.optuna[p].suggest(key) if self.optuna else {}
            for seed in self.seeds:
                self.pending.append((key, {**self.fixed, **self.points[p], **nuisance, "seed": seed}))
        key, config = self.pending.popleft()
        self.live[trial_id] = key
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        key = self.live.pop(trial_id, None)
        if key is None or self.optuna is None:
            return
        value = None if error or not result else result.get(self.metric)
        self.scores.setdefault(key, []).append(value)
        if len(self.scores[key]) == len(self.seeds):
            ok = [v for v in self.scores[key] if v is not None and math.isfinite(v)]
            p = int(key.split("-")[0])
            self.optuna[p].on_trial_complete(key, {self.metric: sum(ok) / len(ok)} if ok else None, error=not ok)

    def save(self, checkpoint_path: str):
        with open(checkpoint_path, "wb") as f:
            cloudpickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str):
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(cloudpickle.load(f))


class GroupedASHA(ASHAScheduler):
    """ASHA whose rungs are kept per group of trials: a trial competes only with the trials that
    share its values of `group_by`. The palindrome study groups by sequence length, since a
    longer sequence is a harder task, not a worse configuration. No groups: plain ASHA."""

    def __init__(self, group_by: tuple[str, ...] = (), **kwargs):
        super().__init__(**kwargs)
        self._group_by = tuple(group_by)
        self._template = copy.deepcopy(self._brackets)
        self._groups: dict[tuple, list] = {}

    def on_trial_add(self, tune_controller, trial):
        super().on_trial_add(tune_controller, trial)
        key = tuple(trial.config.get(k) for k in self._group_by)
        brackets = self._groups.setdefault(key, copy.deepcopy(self._template))
        self._trial_info[trial.trial_id] = brackets[0]

    def on_trial_error(self, tune_controller, trial):
        # A crashed trial is retried from its checkpoint, and its restart copies its result.json back
        # from the storage folder, which Tune syncs from the driver's staging folder only now and
        # then: reports made since the last sync would vanish from the trial's curve. Sync first.
        super().on_trial_error(tune_controller, trial)
        if tune_controller is not None and trial.should_recover():
            tune_controller.checkpoint(force=True, wait=True)
