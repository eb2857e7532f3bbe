"""Findings of a run, as sentences computed from its tables: what a researcher would write under
the figures. The study's own come first (`findings` in `studies/NAME_analysis.py`); every run also
gets the notes on seeds that disagree, on ASHA and on divergence. Numbers are means over seeds with
their spread (`analysis.data.stat`: 95% CI for n >= 3, else min-max)."""

from __future__ import annotations

import pandas as pd

from analysis.data import asha_rungs, not_diverged, summarize
from analysis.modules import analysis_module
from analysis.style import config_text, fmt, is_acc

DISAGREE = 0.3  # seeds whose objective differs by more than this disagree
NEAR_CHANCE = 0.05  # an accuracy at most this above chance says nothing yet


def chance_level(manifest: dict) -> float | None:
    """Chance accuracy: one over the number of classes the run records."""
    classes = manifest.get("classes")
    return 1 / len(classes) if classes else None


def stopped_at_chance(trials: pd.DataFrame, manifest: dict) -> list[str]:
    """A rung decision made while the metric still sat at chance is a decision on noise: say so."""
    level = chance_level(manifest)
    metric = f"metric.{manifest.get('metric', 'val_acc')}"
    if level is None or metric not in trials or "stopped_early" not in trials or not metric.endswith("acc"):
        return []
    stopped = trials[trials["stopped_early"].astype(bool)]
    blind = stopped[stopped[metric] <= level + NEAR_CHANCE]
    if not len(blind):
        return []
    return [
        f"Warning: ASHA stopped {len(blind)} of {len(stopped)} stopped seed runs while their "
        f"{metric.removeprefix('metric.')} was still at chance ({level:.2f} + {NEAR_CHANCE:g} or less): a rung "
        "came before the curves left chance, so that decision rested on noise. A longer grace period (the "
        "budget's `grace`) would judge them on learning."
    ]


def general(trials: pd.DataFrame, manifest: dict) -> list[str]:
    """What every run gets: which trials ASHA stopped, which diverged, which failed."""
    out = []
    n = len(trials)
    stopped = trials[trials["stopped_early"].astype(bool)] if "stopped_early" in trials else trials.iloc[:0]
    if len(stopped):
        rungs = asha_rungs(manifest)
        at = sorted(stopped["iterations"].unique().tolist()) if "iterations" in stopped else []
        out.append(
            f"ASHA stopped {len(stopped)} of {n} trials (at iteration {', '.join(map(str, at))} of "
            f"{manifest.get('iterations')}; rungs {', '.join(fmt(r) for r in rungs)}): their final values are "
            "from the iteration at which they were stopped, not from the end of the budget."
        )
    bad = trials[trials["diverged"].astype(bool)] if "diverged" in trials else trials.iloc[:0]
    if len(bad):
        keys = [k for k in manifest.get("scientific", []) if f"config.{k}" in bad]
        cfgs = sorted({", ".join(f"{k}={fmt(r[f'config.{k}'])}" for k in keys) for _, r in bad.iterrows()})
        out.append(
            f"{len(bad)} of {n} trials diverged (NaN or inf loss; red crosses in the figures, left out of "
            f"the means): {'; '.join(cfgs)}."
        )
    err = int((trials["status"] == "error").sum()) if "status" in trials else 0
    if err:
        out.append(f"{err} trials failed with an error and are left out.")
    return out


def seed_disagreement(trials: pd.DataFrame, manifest: dict, threshold: float = DISAGREE) -> list[str]:
    """Configurations whose seeds end far apart: with few seeds, their mean says little. An accuracy's
    spread is in fractions; any other objective's (a perplexity) relative to its mean."""
    keys = [
        f"config.{k}"
        for k in [*manifest.get("scientific", []), *manifest.get("nuisance", [])]
        if f"config.{k}" in trials
    ]
    obj = f"best.{manifest.get('metric', 'val_acc')}"
    if not keys or obj not in trials:
        return []
    s = summarize(not_diverged(trials), keys, [obj])
    scale = 1.0 if is_acc(obj) else s[f"{obj}.mean"].abs()
    s = s[(s[f"{obj}.max"] - s[f"{obj}.min"]) > threshold * scale]
    if not len(s):
        return []
    cfgs = [config_text(r, keys) + f" ({r[f'{obj}.min']:.2f}–{r[f'{obj}.max']:.2f})" for _, r in s.iterrows()]
    by = f"{threshold:g}" if is_acc(obj) else f"{threshold:.0%} of its mean"
    return [
        f"Seeds disagree (their {obj.removeprefix('best.')} differs by more than {by}) for "
        f"{len(s)} configuration{'s' if len(s) > 1 else ''}: {'; '.join(cfgs)}. More seeds (--seeds) would "
        "settle these."
    ]


def findings(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> list[str]:
    """The run's findings, most important first: its study's own, then those every run gets."""
    module = analysis_module(manifest)
    own = getattr(module, "findings", None)  # every part of an analysis module is optional
    out = own(trials, curves, manifest) if own and len(trials) else []
    return out + seed_disagreement(trials, manifest) + general(trials, manifest) + stopped_at_chance(trials, manifest)
