"""The form in which a trial reports, shared by the loop and by a study's own trainable: one report
per iteration with the mean over the trial's seeds under the plain metric names (what ASHA and
Optuna read) and each seed's values under `seed<k>/<metric>` (what the tables and the claims read).

    def train(config):                       # a study's own trainable (Study(trainable=train))
        for iteration in range(config["iterations"]):
            per_seed = {seed: {"val_acc": ..., "test_acc": ...} for seed in config["seeds"]}
            report_seeds(per_seed, step=...)
"""

from __future__ import annotations

import math


def mean_over_seeds(per_seed: list[dict]) -> dict:
    """The configuration's metrics: the mean over its seeds (a diverged seed counts with accuracy 0 and
    perplexity inf, so a configuration that diverges for some seeds ranks below one that never does)."""
    out = {}
    for k in per_seed[0]:  # losses: the mean over the seeds whose loss is finite
        vals = [m[k] for m in per_seed if "acc" in k or k.endswith("ppl") or math.isfinite(m[k])]
        out[k] = sum(vals) / len(vals) if vals else math.nan
    return out


def seed_metrics(per_seed: dict[int, dict], diverged_at: dict[int, int | None] | None = None, **extra) -> dict:
    """One report's metrics from each seed's: the mean over the seeds, then `seed<k>/<m>` for each seed
    and metric, and `seed<k>/diverged_at` (the iteration whose loss was NaN or inf, 0 if none: the
    seed's table row ends there). `extra` (step, samples, lr_current, ...) goes in as given; `diverged`
    is True when every seed has diverged."""
    diverged_at = diverged_at or {}
    metrics = {**mean_over_seeds(list(per_seed.values())), **extra}
    for seed, m in per_seed.items():
        metrics.update({f"seed{seed}/{k}": v for k, v in m.items()})
        metrics[f"seed{seed}/diverged_at"] = diverged_at.get(seed) or 0
    metrics.setdefault("diverged", all(diverged_at.get(s) for s in per_seed))
    return metrics


def report_seeds(per_seed: dict[int, dict], checkpoint=None, diverged_at: dict | None = None, **extra) -> None:
    """`tune.report` of one iteration of every seed of the trial (see `seed_metrics`): the form that
    the tables, ASHA, Optuna and the claims read. `per_seed` maps each seed of `config["seeds"]` to its
    metrics (`val_acc`, `test_acc`, `train_loss`, ... and any of your own); `checkpoint` is a
    `tune.Checkpoint` or None."""
    from ray import tune

    tune.report(seed_metrics(per_seed, diverged_at, **extra), checkpoint=checkpoint)
