"""Parameter importance with its spread, for studies with a nuisance search: how much of the search's
objective each hyperparameter explains, the nuisance ones beside the scientific ones, computed by
Optuna's own evaluators, fANOVA (`FanovaImportanceEvaluator`, a random forest's functional ANOVA) and
PED-ANOVA (`PedAnovaImportanceEvaluator`, how the top 10% of the trials differ from all of them).

Optuna reports one number per parameter, and both numbers move: fANOVA with its forest's seed, both
with the trials that happened to be drawn. So the importance here is evaluated on `RESAMPLES` bootstrap
resamples of the search's trials (each with its own evaluator seed), and reported as the median with the
2.5 and 97.5 percentiles of the resamples. The trials are the search phase's that ran to the end (Optuna's
COMPLETE: ASHA's stopped trials have no final value), each at its mean over its seeds (the value Optuna
was told); the scientific values are categorical, the nuisance values take the study's search space."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd

from analysis.selection import SEARCH, phase

RESAMPLES = 16
MIN_TRIALS = 4  # below this no evaluator says anything
EVALUATORS = ("fANOVA", "PED-ANOVA")
CAPTION = (
    "Parameter importance (normalised to 1 per evaluation): median and 95% interval over bootstrap resamples "
    "of the search's finished trials, each with its own evaluator seed (Optuna's fANOVA and PED-ANOVA)."
)
_DOMAIN = re.compile(r"(Float|Integer)\(([^,]+), ([^,]+), (\w+)\)")


def _distribution(described: str | None, values: pd.Series):
    """A nuisance key's Optuna distribution from the manifest's text of its Tune domain
    ('Float(1e-05, 0.1, LogUniform)'), else from the values tried."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    m = _DOMAIN.fullmatch(described or "")
    if m:
        kind, low, high, sampler = m.groups()
        log = "Log" in sampler
        if kind == "Integer":  # Tune's integer domains exclude their upper bound
            return IntDistribution(int(float(low)), int(float(high)) - 1, log=log)
        return FloatDistribution(float(low), float(high), log=log)
    if pd.api.types.is_numeric_dtype(values):
        lo, hi = float(values.min()), float(values.max())
        return FloatDistribution(lo, hi if hi > lo else lo + 1, log=lo > 0 and hi / lo > 100)
    return CategoricalDistribution(sorted({_choice(v) for v in values}, key=str))


def _choice(v):
    """A table cell as Optuna's categorical takes it; a missing one (a key that some settings lack, such as
    the Transformer's heads beside an LSTM) as the text 'none'."""
    v = v.item() if hasattr(v, "item") else v
    if v is None or (isinstance(v, float) and v != v):
        return "none"
    return v if isinstance(v, (bool, int, float, str)) else str(v)


def _param(dist, v):
    """A table cell as the value of its Optuna distribution."""
    from optuna.distributions import FloatDistribution, IntDistribution

    if isinstance(dist, FloatDistribution):
        return float(v)
    return int(v) if isinstance(dist, IntDistribution) else _choice(v)


def finished(trials: pd.DataFrame, manifest: dict) -> tuple[pd.DataFrame, dict]:
    """The search's trials that ran to the end, one row per Tune trial (the objective: its mean over the
    seeds), and the Optuna distribution of each key that varies among them."""
    from optuna.distributions import CategoricalDistribution

    nuisance = [k for k in manifest.get("nuisance") or [] if f"config.{k}" in trials]
    if not nuisance or not len(trials):
        return pd.DataFrame(), {}
    t = phase(trials, SEARCH)
    t = t if "trial" in t else t.assign(trial=t["trial_id"])  # tables without the Tune trial: a row each
    objective = f"metric.{manifest.get('metric', 'val_acc')}"
    bad = t.groupby("trial")["status"].transform(lambda s: bool(set(s) & {"stopped", "error", "unfinished"}))
    t = t[~bad & t[objective].notna()]
    keys = [k for k in [*manifest.get("scientific", []), *nuisance] if f"config.{k}" in t]
    rows = t.groupby("trial").agg({objective: "mean", **{f"config.{k}": "first" for k in keys}}).reset_index()
    rows = rows.rename(columns={objective: "value"})
    described = ((manifest.get("signature") or {}).get("search")) or {}
    dists = {}
    for k in keys:
        col = rows[f"config.{k}"]
        if col.nunique(dropna=False) < 2:
            continue
        if k in nuisance:
            dists[k] = _distribution(described.get(k), col)
        else:
            dists[k] = CategoricalDistribution(sorted({_choice(v) for v in col}, key=str))
    return rows, dists


def importance(trials: pd.DataFrame, manifest: dict, resamples: int = RESAMPLES) -> pd.DataFrame:
    """One row per evaluator and hyperparameter: `median`, `lo` and `hi` (the 2.5 and 97.5 percentiles
    over the resamples) of its normalised importance, `nuisance` (whether Optuna searched it), `trials`
    and `resamples`. Empty where the study has no nuisance search or fewer than MIN_TRIALS finished."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator, get_param_importances

    rows, dists = finished(trials, manifest)
    if len(rows) < MIN_TRIALS or len(dists) < 1:
        return pd.DataFrame(columns=["evaluator", "parameter", "nuisance", "median", "lo", "hi", "trials", "resamples"])
    direction = "minimize" if manifest.get("mode") == "min" else "maximize"
    made = [
        optuna.trial.create_trial(
            params={k: _param(d, r[f"config.{k}"]) for k, d in dists.items()},
            distributions=dists,
            value=float(r["value"]),
        )
        for _, r in rows.iterrows()
    ]
    found: dict[tuple[str, str], list[float]] = {}
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for b in range(resamples):
        pick = np.random.default_rng(b).integers(0, len(made), len(made))
        study = optuna.create_study(direction=direction)
        study.add_trials([made[i] for i in pick])
        for name, ev in (
            ("fANOVA", FanovaImportanceEvaluator(n_trees=32, seed=b)),
            ("PED-ANOVA", PedAnovaImportanceEvaluator()),
        ):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # few trials: Optuna says so per resample
                try:
                    got = get_param_importances(study, evaluator=ev, params=list(dists))
                except (RuntimeError, ValueError):  # a resample with a single value of every key
                    continue
            for k in dists:
                found.setdefault((name, k), []).append(float(got.get(k, 0.0)))
    nuisance = set(manifest.get("nuisance") or [])
    out = [
        {
            "evaluator": ev,
            "parameter": k,
            "nuisance": k in nuisance,
            "median": float(np.median(v)),
            "lo": float(np.percentile(v, 2.5)),
            "hi": float(np.percentile(v, 97.5)),
            "trials": len(made),
            "resamples": len(v),
        }
        for (ev, k), v in found.items()
    ]
    return pd.DataFrame(out)


def figure(table: pd.DataFrame):
    """Horizontal bars: each hyperparameter's median importance per evaluator, its 95% interval as an
    error bar; the nuisance hyperparameters named as such."""
    import matplotlib.pyplot as plt

    params = list(dict.fromkeys(table["parameter"]))
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.55 * len(params) * len(EVALUATORS)))
    height = 0.8 / len(EVALUATORS)
    for j, (ev, color) in enumerate(zip(EVALUATORS, ("tab:blue", "tab:orange"))):
        part = table[table["evaluator"] == ev].set_index("parameter").reindex(params)
        y = np.arange(len(params)) + (j - (len(EVALUATORS) - 1) / 2) * height
        med = part["median"].to_numpy(dtype=float)
        err = np.vstack([med - part["lo"].to_numpy(dtype=float), part["hi"].to_numpy(dtype=float) - med])
        ax.barh(y, med, height=height * 0.9, xerr=np.clip(err, 0, None), color=color, label=ev, capsize=3)
    nuisance = set(table.loc[table["nuisance"], "parameter"])
    ax.set_yticks(np.arange(len(params)), [f"{p} (nuisance)" if p in nuisance else p for p in params])
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("importance (share of the objective's variation)")
    n, b = int(table["trials"].iloc[0]), int(table["resamples"].max())
    ax.set_title(f"Parameter importance, {n} finished search trials, {b} bootstrap resamples", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9, frameon=False)
    fig.tight_layout()
    return fig


def blocks(table: pd.DataFrame, fig_path: str, png: bytes) -> list:
    """The report's section: what was computed, the table, the figure."""
    shown = table.assign(
        importance=[f"{m:.2f} [{lo:.2f}, {hi:.2f}]" for m, lo, hi in zip(table["median"], table["lo"], table["hi"])]
    )[["parameter", "nuisance", "evaluator", "importance", "trials", "resamples"]]
    return [
        ("h2", "Parameter importance"),
        (
            "p",
            "How much of the search's objective each hyperparameter explains, by Optuna's fANOVA and PED-ANOVA "
            "evaluators, as the median [95% interval] over bootstrap resamples of the finished search trials "
            "(each resample with its own evaluator seed): Optuna's own importance is one draw of these. "
            "Table: importance.csv / importance.parquet.",
        ),
        ("table", shown),
        ("fig", "importance", fig_path, png, CAPTION),
    ]
