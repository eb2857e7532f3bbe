"""The lr-schedule study: StepLR in the trainable, counted in report blocks (read from the curves'
`lr_current`); the collapse of a seed from its curve; the claims on made-up tables; and the smoke
budget on real Ray Tune."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_train import _Tune, patch_tune  # the stand-in for ray.tune inside the trainable

from studies.engine import loop as train_mod
from studies.lr_schedule_analysis import CLAIMS, COLLAPSE, fall, with_collapse


def _lrs(monkeypatch, **config) -> list[float]:
    fake = _Tune()
    patch_tune(monkeypatch, fake)
    train_mod.train(
        {
            "task": "palindrome",
            "model": "rnn",
            "cell": "rnn",
            "seq_len": 5,
            "steps_per_report": 4,
            "n_eval": 64,
            "batch_size": 16,
            "checkpoint_every": 100,
            "seeds": [0, 1],
            **config,
        }
    )
    return [r["lr_current"] for r in fake.reports]


@pytest.mark.parametrize("pack", ["on", "off"])  # one scheduler for the pack, or one per seed
def test_steplr_multiplies_the_lr_by_gamma_every_step_size_iterations(monkeypatch, pack):
    lrs = _lrs(monkeypatch, lr=1e-2, lr_schedule="step", lr_step_size=3, lr_gamma=0.5, iterations=8, pack=pack)
    np.testing.assert_allclose(lrs, [1e-2] * 3 + [5e-3] * 3 + [2.5e-3] * 2, rtol=1e-12)


def test_without_a_schedule_the_lr_stays(monkeypatch):
    assert _lrs(monkeypatch, lr=3e-3, lr_schedule="none", iterations=5) == [3e-3] * 5


def test_the_optimizer_steps_with_the_reported_lr(monkeypatch):
    """The lr reported is the one the optimizer used: with lr_gamma 1 nothing changes, so StepLR's
    training equals the constant lr's; with a small gamma the second block's loss differs."""

    def losses(**c):
        fake = _Tune()
        patch_tune(monkeypatch, fake)
        train_mod.train(
            {
                "task": "palindrome",
                "model": "rnn",
                "cell": "rnn",
                "seq_len": 5,
                "steps_per_report": 6,
                "n_eval": 64,
                "batch_size": 16,
                "checkpoint_every": 100,
                "seeds": [0],
                "iterations": 2,
                "lr": 1e-2,
                "lr_step_size": 1,
                **c,
            }
        )
        return [r["train_loss"] for r in fake.reports]

    const = losses(lr_schedule="none")
    assert losses(lr_schedule="step", lr_gamma=1.0) == pytest.approx(const, rel=1e-6)
    slowed = losses(lr_schedule="step", lr_gamma=0.01)
    assert slowed[0] == pytest.approx(const[0], rel=1e-6) and slowed[1] != pytest.approx(const[1], rel=1e-3)


# ---- the collapse of a seed, from its curve -------------------------------------------------------------


def test_fall_is_the_deepest_drop_below_an_earlier_peak():
    assert fall([0.1, 0.5, 1.0, 0.4, 0.9, 0.2]) == pytest.approx(0.8)
    assert fall([0.1, 0.3, 0.6, 1.0]) == 0.0  # rises only
    assert fall([0.1, 0.9, 0.5, 1.0, 1.0]) == pytest.approx(0.4)  # fell and came back: the fall counts
    assert fall([0.5, np.nan, 0.2]) == pytest.approx(0.3)


def _tables(falls: dict[tuple, list[float]], seeds: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trials and curves of made-up seeds: per (T, schedule, clip), each seed rises to 1.0 and then
    falls by the given amount (one value per seed); the training loss is 1e-3 (StepLR: 3e-3)."""
    rows, curves = [], []
    for (T, sched, clip), drops in falls.items():
        for s, d in zip(range(seeds), drops):
            tid = f"{T}-{sched}-{clip}-{s}"
            acc = [0.1, 0.6, 1.0, 1.0 - d, 1.0 - d]
            rows.append(
                {
                    "trial_id": tid,
                    "status": "completed",
                    "diverged": False,
                    "stopped_early": False,
                    "config.cell": "rnn",
                    "config.seq_len": T,
                    "config.lr_schedule": sched,
                    "config.clip": clip,
                    "config.seed": s,
                    "metric.test_acc": acc[-1],
                    "best.test_acc": max(acc),
                    "metric.train_loss": (3e-3 if sched == "step" else 1e-3) * (1 + 0.1 * s),
                }
            )
            curves += [
                {
                    "trial_id": tid,
                    "iteration": i + 1,
                    "step": 200 * (i + 1),
                    "metric.test_acc": a,
                    "metric.train_loss": 2.3 * (1 - a) + 1e-3,
                }
                for i, a in enumerate(acc)
            ]
    return pd.DataFrame(rows), pd.DataFrame(curves)


def test_with_collapse_reads_each_seeds_fall_from_its_curve():
    t, c = _tables({(20, "none", 1.0): [0.9, 0.5, 0.0, 0.35, 0.2]})
    out = with_collapse(t, c)
    np.testing.assert_allclose(out["metric.collapse"], [0.9, 0.5, 0.0, 0.35, 0.2])
    assert out["collapsed"].tolist() == [d > COLLAPSE for d in [0.9, 0.5, 0.0, 0.35, 0.2]]
    assert out["setting"].iloc[0] == "constant lr, clip 1"


def test_the_claims_follow_the_collapse():
    """Constant lr collapses at T=20, StepLR does not (pooled over the clips), clip 1 and clip 10 alike:
    all four claims reproduced. Where clip 10 collapses clearly more than clip 1 (the hand-run finding),
    the overturn is contradicted."""
    falls = {
        (5, "none", 1.0): [0] * 5,
        (5, "step", 1.0): [0] * 5,
        (20, "none", 1.0): [0.4, 0.5, 0.6, 0.5, 0.45],
        (20, "step", 1.0): [0.0, 0.05, 0.02, 0.0, 0.01],
        (20, "none", 10.0): [0.45, 0.55, 0.5, 0.4, 0.6],
        (20, "step", 10.0): [0.1, 0.0, 0.05, 0.0, 0.02],
    }
    t, c = _tables(falls)
    verdicts = [claim.check(t, c, {}).verdict for claim in CLAIMS]
    assert verdicts == ["reproduced"] * 4
    t, c = _tables({**falls, (20, "none", 10.0): [0.8, 0.9, 0.7, 0.85, 0.75]})
    assert CLAIMS[3].check(t, c, {}).verdict == "contradicted"
    t, c = _tables({**falls, (20, "step", 10.0): [0.8, 0.9, 0.7, 0.85, 0.75]})  # StepLR collapses at clip 10
    assert CLAIMS[1].check(t, c, {}).verdict != "reproduced"
    t, c = _tables({**falls, (20, "none", 1.0): [0.05, 0.0, 0.08, 0.0, 0.02]})  # falls within the noise only
    assert CLAIMS[0].check(t, c, {}).verdict != "reproduced"


def test_figures_of_a_run_interrupted_before_any_seed_ended():
    """An interrupted run (every trial stopped) still gets its curves; the per-seed views need seeds
    that ran to the end."""
    from studies.lr_schedule_analysis import figures, findings

    t, c = _tables({(5, "none", 1.0): [0] * 2, (20, "step", np.nan): [0.5, 0.1]}, seeds=2)
    assert set(figures(t, c.assign(lr_current=1e-3), {})) == {
        "accuracy_curves",
        "loss_curves",
        "collapse",
        "final_vs_best",
    }
    t = t.assign(status="stopped")
    assert set(figures(t, c, {})) == {"accuracy_curves", "loss_curves"} and findings(t, c, {}) == []


# ---- the smoke budget on real Ray Tune --------------------------------------------------------------------


@pytest.mark.slow
def test_lr_schedule_smoke(ray_session, tmp_path):
    from test_integration import run_smoke

    from studies.lr_schedule import STUDY

    t, c, r = run_smoke("lr_schedule", tmp_path)
    smoke = STUDY.budgets["smoke"]
    clips = t["config.clip"].astype(float)
    got = sorted(zip(t["config.cell"], t["config.lr_schedule"], clips.fillna(0)))
    assert got == [
        ("lstm", "step", 10.0),
        ("rnn", "none", 0.0),
        ("rnn", "none", 1.0),
        ("rnn", "step", 0.0),
        ("rnn", "step", 1.0),
    ]
    assert not t["stopped_early"].any()  # one trial per scientific value: ASHA stops nothing
    # the curves hold the lr of every report: StepLR x gamma every lr_step_size report blocks, else constant
    lr, k, gamma = smoke.fixed["lr"], smoke.fixed["lr_step_size"], STUDY.fixed["lr_gamma"]
    curves = c.merge(t[["trial_id", "config.lr_schedule"]], on="trial_id", suffixes=("_c", ""))
    for sched, g in curves.groupby("config.lr_schedule"):
        want = lr * gamma ** ((g["iteration"] - 1) // k) if sched == "step" else np.full(len(g), lr)
        np.testing.assert_allclose(g["lr_current"], want, rtol=1e-9, err_msg=sched)
    assert (c["step"] == c["iteration"] * smoke.fixed["steps_per_report"]).all()
    collapse = with_collapse(t, c)["metric.collapse"]
    assert collapse.between(0, 1).all() and len(collapse) == len(t)
    figs = {p.stem for p in (tmp_path / "lr_schedule" / "smoke" / "figures").glob("*.png")}
    assert {"accuracy_curves", "loss_curves", "collapse", "final_vs_best"} <= figs
    report = (tmp_path / "lr_schedule" / "smoke" / "report.md").read_text()
    assert "StepLR multiplies the lr by 0.7 every 2 report blocks (60 steps)" in report
