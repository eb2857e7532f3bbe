"""The study's search algorithm and scheduler: a grid of scientific values, each configuration one
trial that trains all its seeds (see `studies.engine.loop`), with the nuisance hyperparameters searched
by one Optuna study per scientific value, and ASHA that compares a trial only with trials of the
same scientific values.

Ray's own searchers either enumerate a grid (BasicVariantGenerator) or optimise a whole space
(OptunaSearch); a fair comparison needs both at once: the best lr *for each* optimizer. Optuna
sees each configuration's mean over its seeds, and a configuration that ASHA stopped is told to
it as pruned (with its intermediate values), never as a finished result: TPE ranks it below every
configuration that ran to the end, so the tuned value is a real optimum.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import cloudpickle
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher


class GridSearch(Searcher):
    def __init__(
        self,
        points: list[dict],
        seeds: list[int],
        fixed: dict,
        metric: str,
        mode: str,
        space: dict | None = None,
        samples: int = 1,
        first: dict | None = None,
        max_t: int | None = None,
        record=None,
    ):
        super().__init__(metric=metric, mode=mode)
        self.points, self.seeds, self.fixed = points, list(seeds), fixed
        self.max_t = max_t or fixed.get("iterations")  # a trial that ends before it was stopped by ASHA
        self.samples = samples if space else 1
        self.order = [(p, k) for k in range(self.samples) for p in range(len(points))]  # round robin
        self.issued = 0
        self.live: dict[str, tuple[int, object]] = {}  # Tune trial id -> (point, Optuna trial or None)
        self.given: set[str] | None = set()  # every Tune trial id suggested
        self.requeue: list[tuple[int, object]] = []  # suggested, then lost from Tune's saved trials: again
        if record is not None and (record.metric, record.mode) != (metric, mode):
            record = dataclasses.replace(record, metric=metric, mode=mode)  # what this searcher is told
        self.record = record  # a `studies.engine.record.Record`: the Optuna studies live in its database
        self.known: set[int] = set()  # with a record: the Optuna trial ids given out (the rest are orphans)
        self.orphans: dict[str, list[int]] = {}  # study name -> Optuna trials asked after this state was saved
        self.studies, self.distributions = None, {}
        if space or record:
            import optuna
            from ray.tune.search.optuna import OptunaSearch

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            self.distributions = OptunaSearch.convert_search_space(space) if space else {}
            self.startup = max(2, min(10, self.samples // 2))  # TPE needs a few random points first
            self.samplers = [self._sampler(p) for p in range(len(points))]
            if record:
                self.studies = record.studies(points, self.samplers, fresh=True)
            else:
                direction = "maximize" if mode == "max" else "minimize"
                self.studies = [optuna.create_study(direction=direction, sampler=s) for s in self.samplers]
            for s in dict.fromkeys(self.studies) if first and space else ():  # the nuisance values tried first
                s.enqueue_trial(dict(first))

    def _sampler(self, p: int, told: int = 0):
        """Point p's TPE sampler; `told`: its study's trials in the database when a run resumes (a sampler
        seeded as at the last save would draw again what the trials asked after it drew)."""
        import optuna

        return optuna.samplers.TPESampler(seed=p + 1009 * told, n_startup_trials=self.startup)

    @property
    def total(self) -> int:
        """Trials in the study: one per scientific value and nuisance sample (each trains every seed)."""
        return len(self.order)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # metric and mode are set here already; the config comes from the grid

    def suggest(self, trial_id: str):
        if self.requeue:
            p, ot = self.requeue.pop(0)
            if self.record and ot is not None:
                self.record.label(ot, self.points[p], trial_id, self.seeds)  # given again: its new Tune id
        elif self.issued == len(self.order):
            return Searcher.FINISHED
        else:
            p, ot = self._next(trial_id=trial_id)
        self.live[trial_id] = (p, ot)
        if self.given is not None:
            self.given.add(trial_id)
        tuned = {k: v for k, v in ot.params.items() if k in self.distributions} if ot else {}
        return {**self.fixed, **self.points[p], **tuned, "seeds": self.seeds}

    def _next(self, params: dict | None = None, trial_id: str | None = None) -> tuple[int, object]:
        p, _ = self.order[self.issued]
        self.issued += 1
        if not self.studies:
            return p, None
        point = self.points[p]
        dists = self.distributions or (self.record.nuisance_in(point) if self.record else {})
        if params is None and not self.distributions:
            params = {k: point[k] for k in dists} or None  # a confirmation's values, recorded, never sampled
        ot = self._adopt(p, params, trial_id, dists)
        if ot is None:
            if params is not None:
                self.studies[p].enqueue_trial(params)  # a trial Tune has already run with these values
            ot = self.studies[p].ask(dists)
        if self.record:
            self.known.add(ot._trial_id)
            self.record.label(ot, point, trial_id, self.seeds)
        return p, ot

    def _adopt(self, p: int, params: dict | None, trial_id: str | None, dists: dict):
        """An Optuna trial of point p's study that a killed run asked after it last saved this state (it
        is in the database, and Tune gives its point again): taken up, never asked twice. The one that
        Tune's trial id names, else the first whose values agree with `params`."""
        import optuna

        name = self.record.name(self.record.point(self.points[p])) if self.record else None
        cands = self.orphans.get(name) or []
        if not cands:
            return None
        study = self.studies[p]
        trials = {t._trial_id: t for t in study.get_trials(deepcopy=False)}
        ok = lambda t: all(t.params.get(k, v) == v for k, v in (params or {}).items())
        pick = next((i for i in cands if trial_id and trials[i].user_attrs.get("tune_trial_id") == trial_id), None)
        pick = pick if pick is not None else next((i for i in cands if ok(trials[i])), None)
        if pick is None:
            return None
        cands.remove(pick)
        ot = optuna.Trial(study, pick)
        if not trials[pick].state.is_finished():
            for k, d in dists.items():
                ot._suggest(k, d)  # any value the kill left unset (the database holds the rest)
        return ot

    def reconcile(self, trials: list[tuple[str, dict, str, dict]]) -> int:
        """Agree with Tune's saved trials, `(trial id, config, status, last result)` in the order Tune
        created them. A disk that fills while Tune saves its experiment can leave that list older than
        this searcher's state, or newer: a trial this searcher suggested that Tune never saved is
        suggested again, and a trial Tune saved that this searcher never saw takes the next grid point,
        told its result if it ended. Returns how many trials Tune will ask for."""
        saved = {tid for tid, *_ in trials}
        for tid in [t for t in self.live if t not in saved]:
            self.requeue.append(self.live.pop(tid))
            if self.given is not None:
                self.given.discard(tid)
        for tid, config, status, result in trials if self.given is not None else ():
            if tid in self.given:
                continue
            keys = self.distributions
            self.live[tid] = self._next({k: config[k] for k in keys if k in config} if keys else None, tid)
            self.given.add(tid)
            if status == "TERMINATED":
                self.on_trial_complete(tid, result)
        return len(self.requeue) + len(self.order) - self.issued

    def on_trial_result(self, trial_id: str, result: dict):
        ot = self.live.get(trial_id, (None, None))[1]
        value = result.get(self.metric)
        if ot is not None and self.record:
            self.record.report(ot, result)
        elif ot is not None and value is not None and math.isfinite(value):
            ot.report(value, result.get("training_iteration", 0))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        p, ot = self.live.pop(trial_id, (None, None))
        if ot is None:
            return
        from optuna.trial import TrialState

        if self.record:
            self.record.finish(ot, None if error else result, self.seeds)
        value = None if error or not result else result.get(self.metric)
        done = dict(skip_if_finished=True)  # told before a kill that Tune's saved state did not see
        if value is None or not math.isfinite(value):
            self.studies[p].tell(ot, state=TrialState.FAIL, **done)
        elif self.max_t and result.get("training_iteration", self.max_t) < self.max_t:
            self.studies[p].tell(ot, state=TrialState.PRUNED, **done)  # stopped by ASHA: not a final value
        else:
            self.studies[p].tell(ot, value, **done)

    def __getstate__(self) -> dict:
        """What is pickled (with Tune's experiment, and by `save`): everything, or with a record, the
        bookkeeping alone, each Optuna trial as its id in the database (which holds the studies)."""
        if not getattr(self, "record", None):
            return dict(self.__dict__)
        ids = lambda pairs: [(p, None if ot is None else ot._trial_id) for p, ot in pairs]
        state = {k: v for k, v in self.__dict__.items() if k not in ("studies", "orphans", "samplers")}
        return {**state, "live": dict(zip(self.live, ids(self.live.values()))), "requeue": ids(self.requeue)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"given": None, "requeue": [], "record": None, "known": set(), "orphans": {}, **state})
        if not self.record:
            return
        import optuna

        self.studies = self.record.studies(self.points, [None] * len(self.points), fresh=False)
        for p, s in enumerate(self.studies):
            s.sampler = self._sampler(p, len(s.get_trials(deepcopy=False)))
        self.samplers = [s.sampler for s in self.studies]
        trial = lambda p, i: (p, None if i is None else optuna.Trial(self.studies[p], i))
        self.live = {t: trial(p, i) for t, (p, i) in self.live.items()}
        self.requeue = [trial(p, i) for p, i in self.requeue]
        held = {ot._trial_id for _, ot in [*self.live.values(), *self.requeue] if ot is not None} | self.known
        self.orphans = {}
        for s in dict.fromkeys(self.studies):  # asked after this state was saved: taken up, never asked again
            trials = s.get_trials(deepcopy=False)
            lost = [t._trial_id for t in trials if t._trial_id not in held and t.state.name != "WAITING"]
            if lost:
                self.orphans[s.study_name] = lost

    def save(self, checkpoint_path: str):
        with open(checkpoint_path, "wb") as f:
            cloudpickle.dump(self.__getstate__(), f)

    def restore(self, checkpoint_path: str):
        with open(checkpoint_path, "rb") as f:
            self.__setstate__(cloudpickle.load(f))  # given None: saved before both


def repair(exp: str) -> None:
    """Make a saved experiment's searcher agree with its saved trials before Tune restores it (see
    `GridSearch.reconcile`); Tune saves the three files one by one, and a full disk can stop it midway.
    Each file is rewritten whole (a temporary file, then a rename). A local folder only."""
    newest = {
        k: max(Path(exp).glob(f"{k}-*"), default=None)
        for k in ("experiment_state", "searcher-state", "search_gen_state")
    }
    if None in newest.values():
        return
    trials = []
    for trial, meta in json.loads(newest["experiment_state"].read_text())["trial_data"]:
        t, m = json.loads(trial), json.loads(meta)
        trials.append((t["trial_id"], t.get("config") or {}, t.get("status"), m.get("last_result") or {}))
    search = GridSearch.__new__(GridSearch)
    search.restore(str(newest["searcher-state"]))
    before = (search.issued, len(search.live), len(search.requeue))
    left = search.reconcile(trials)
    if (search.issued, len(search.live), len(search.requeue)) == before:
        return
    gen = cloudpickle.loads(newest["search_gen_state"].read_bytes())
    gen.update(counter=len(trials), finished=left == 0, total_samples=max(gen["total_samples"], len(trials) + left))
    for path, state in ((newest["searcher-state"], search.__getstate__()), (newest["search_gen_state"], gen)):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(cloudpickle.dumps(state))
        tmp.replace(path)


class GroupedASHA(ASHAScheduler):
    """ASHA whose rungs are kept per group of trials: a trial competes only with the trials that
    share its values of `group_by`. Studies group by their scientific hyperparameters, so ASHA
    prunes nuisance samples of the same scientific value and never a scientific value in favour of
    another (a longer palindrome is a harder task, not a worse configuration); a study whose
    question is the choice of the value itself (lr_scan) groups by nothing: plain ASHA. Each trial
    is a whole configuration, all seeds, so ASHA never splits the seeds of one. A trial whose
    config holds the `keep` values (the study's `search_first`: the hand-run lr of the fixed-lr
    view) always runs to the end, whichever trial reaches a rung first."""

    def __init__(self, group_by: tuple[str, ...] = (), keep: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self._group_by = tuple(group_by)
        self._keep = dict(keep or {})  # nuisance values that always run to the end (the hand-run lr: its view)
        self._template = copy.deepcopy(self._brackets)
        self._groups: dict[tuple, list] = {}

    def on_trial_add(self, tune_controller, trial):
        super().on_trial_add(tune_controller, trial)
        key = tuple(trial.config.get(k) for k in self._group_by)
        brackets = self._groups.setdefault(key, copy.deepcopy(self._template))
        self._trial_info[trial.trial_id] = brackets[0]

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if self._keep and all(trial.config.get(k) == v for k, v in self._keep.items()):
            return self.CONTINUE  # recorded at the rungs like any trial, never stopped
        return decision

    def on_trial_error(self, tune_controller, trial):
        # A crashed trial is retried from its checkpoint, and its restart copies its result.json back
        # from the storage folder, which Tune syncs from the driver's staging folder only now and
        # then: reports made since the last sync would vanish from the trial's curve. Sync first.
        super().on_trial_error(tune_controller, trial)
        if tune_controller is not None and trial.should_recover():
            tune_controller.checkpoint(force=True, wait=True)
