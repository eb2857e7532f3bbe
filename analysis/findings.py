"""Findings of a run, as sentences computed from its tables: what a researcher would write under
the figures. The study's own come first (`findings` in `studies/NAME_analysis.py`); every run also
gets the notes on seeds that disagree, on ASHA and on divergence. Numbers are means over seeds with
their spread (`analysis.data.stat`: 95% CI for n >= 3, else min-max)."""

from __future__ import annotations

import pandas as pd

import studies
from analysis.data import asha_rungs, not_diverged, summarize
from analysis.style import config_text, fmt

DISAGREE = 0.3  # seeds whose objective differs by more than this disagree


def general(trials: pd.DataFrame, manifest: dict) -> list[str]:
    """What every run gets: which trials ASHA stopped, which diverged, which failed."""
    out = []
    n = len(trials)
    stopped = trials[trials["stopped_early"].astype(bool)] if "stopped_early" in trials else trials.iloc[:0]
    if len(stopped):
        rungs = asha_rungs(manifest)
        at = sorted(stopped["iterations"].unique().tolist()) if "iterations" in stopped else []
        out.append(f"ASHA stopped {len(stopped)} of {n} trials (at iteration {', '.join(map(str, at))} of "
                   f"{manifest.get('iterations')}; rungs {', '.join(fmt(r) for r in rungs)}): their final values are "
                   "from the iteration at which they were stopped, not from the end of the budget.")
    bad = trials[trials["diverged"].astype(bool)] if "diverged" in trials else trials.iloc[:0]
    if len(bad):
        keys = [k for k in manifest.get("scientific", []) if f"config.{k}" in bad]
        cfgs = sorted({", ".join(f"{k}={fmt(r[f'config.{k}'])}" for k in keys) for _, r in bad.iterrows()})
        out.append(f"{len(bad)} of {n} trials diverged (NaN or inf loss; red crosses in the figures, left out of "
                   f"the means): {'; '.join(cfgs)}.")
    err = int((trials["status"] == "error").sum()) if "status" in trials else 0
    if err:
        out.append(f"{err} trials failed with an error and are left out.")
    return out


def seed_disagreement(trials: pd.DataFrame, manifest: dict, threshold: float = DISAGREE) -> list[str]:
    """Configurations whose seeds end far apart: with few seeds, their mean says little."""
    keys = [f"config.{k}" for k in [*manifest.get("scientific", []), *manifest.get("nuisance", [])]
            if f"config.{k}" in trials]
    obj = f"best.{manifest.get('metric', 'val_acc')}"
    if not keys or obj not in trials:
        return []
    s = summarize(not_diverged(trials), keys, [obj])
    s = s[(s[f"{obj}.max"] - s[f"{obj}.min"]) > threshold]
    if not len(s):
        return []
    cfgs = [config_text(r, keys) + f" ({r[f'{obj}.min']:.2f}–{r[f'{obj}.max']:.2f})" for _, r in s.iterrows()]
    return [f"Seeds disagree (their {obj.removeprefix('best.')} differs by more than {threshold:g}) for "
            f"{len(s)} configuration{'s' if len(s) > 1 else ''}: {'; '.join(cfgs)}. More seeds (--seeds) would "
            "settle these."]


def findings(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> list[str]:
    """The run's findings, most important first: its study's own, then those every run gets."""
    module = studies.analysis_module(manifest.get("study", ""))
    out = module.findings(trials, curves, manifest) if module and len(trials) else []
    return out + seed_disagreement(trials, manifest) + general(trials, manifest)
