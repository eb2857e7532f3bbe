"""Analysis on synthetic tables with known values: grouping, confidence intervals, the plotted data
read back from matplotlib, findings, reports and the cross-run index."""

import json
import re

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest

import analysis
from analysis import files, findings, style
from analysis.__main__ import main as cli
from analysis.curves import curves_figure, mean_curves_figure
from analysis.data import asha_rungs, best_per_group, ci95, mean_curves, run_summary, summarize
from analysis.plots import best_per_value_figure, hparam_axes_figure, metric_vs_figure
from datasets.images import CIFAR_CLASSES
from studies.optimizer_comparison_analysis import optimizer_views, per_class, per_class_figure
from studies.regularization_analysis import regularization_figure


def ys(line) -> np.ndarray:
    """A plotted line's y values as floats (errorbar keeps them as objects)."""
    return np.asarray(line.get_ydata(), dtype=float)


def bars(ax) -> dict:
    """Errorbar containers by legend label."""
    return {c.get_label(): c for c in ax.containers if hasattr(c, "lines")}


def err_segments(container) -> np.ndarray:
    """(N, 2) lower and upper ends of an errorbar container's vertical bars."""
    segs = container.lines[2][0].get_segments()
    return np.array([[s[0][1], s[1][1]] for s in segs], dtype=float)


def rgba(c):
    return tuple(np.round(mcolors.to_rgba(c), 6))


# ---- synthetic runs -----------------------------------------------------------------------------


def synthetic_lr_scan():
    rows, curves = [], []
    for lr, acc in [(1e-4, 0.5), (1e-3, 0.9), (1e-2, 0.7), (1.0, np.nan)]:
        for seed in (0, 1):
            tid = f"{lr}-{seed}"
            diverged = np.isnan(acc)
            a = 0.0 if diverged else acc + 0.02 * seed
            rows.append(
                {
                    "study": "lr_scan",
                    "trial_id": tid,
                    "config.lr": lr,
                    "config.seed": seed,
                    "status": "diverged" if diverged else "completed",
                    "diverged": diverged,
                    "stopped_early": lr == 1e-4,
                    "iterations": 3,
                    "metric.val_acc": a,
                    "best.val_acc": a,
                    "metric.test_acc": a - 0.05,
                    "metric.train_acc": a + 0.05,
                    "metric.train_loss": 1 - a,
                    "metric.test_loss": 1.1 - a,
                    "best.train_acc": a + 0.05,
                    "best.test_acc": a - 0.05,
                }
            )
            for it in (1, 2, 3):
                curves.append(
                    {
                        "study": "lr_scan",
                        "trial_id": tid,
                        "config.lr": lr,
                        "config.seed": seed,
                        "iteration": it,
                        "step": 10 * it,
                        "metric.val_acc": a * it / 3,
                        "metric.val_loss": 2.05 - a * it / 3,
                        "metric.train_loss": 2 - a * it / 3,
                        "metric.test_loss": 2.1 - a * it / 3,
                        "metric.train_acc": (a + 0.05) * it / 3,
                        "metric.test_acc": (a - 0.05) * it / 3,
                    }
                )
    return pd.DataFrame(rows), pd.DataFrame(curves)


def manifest(study, scientific, nuisance=(), seeds=(0, 1), iterations=3, grace=1, reduction=2, **kw):
    return {
        "study": study,
        "name": "synthetic",
        "budget": "quick",
        "metric": "val_acc",
        "mode": "max",
        "scientific": list(scientific),
        "nuisance": list(nuisance),
        "seeds": list(seeds),
        "iterations": iterations,
        "asha": {"grace": grace, "reduction": reduction},
        "command": f"python -m studies.{study}",
        "fixed": {},
        **kw,
    }


MANIFEST = manifest("lr_scan", ["lr"])
FIXED_LR = 0.1**4  # 1.0000000000000002e-04: the search's 1e-4 as a float may not be exactly 1e-4


def synthetic_optimizer(dataset="digits"):
    """adam: lr 1e-4 -> val 0.80/0.82, lr 1e-3 -> 0.90/0.92; sgd: lr 1e-4 -> 0.85/0.87, lr 1e-2 ->
    0.70/0.72. Test accuracy = val - 0.05. At the fixed lr sgd wins; tuned, adam wins."""
    rows, curves = [], []
    for opt, lrs in {"adam": [(FIXED_LR, 0.80), (1e-3, 0.90)], "sgd": [(FIXED_LR, 0.85), (1e-2, 0.70)]}.items():
        for lr, acc in lrs:
            for seed in (0, 1):
                a, tid = acc + 0.02 * seed, f"{opt}-{lr}-{seed}"
                per_class = {
                    f"metric.test_acc_{k}": (k / 10 if opt == "adam" else 1 - k / 10) + 0.02 * seed for k in range(10)
                }
                rows.append(
                    {
                        "study": "optimizer_comparison",
                        "trial_id": tid,
                        "config.optimizer": opt,
                        "config.lr": lr,
                        "config.seed": seed,
                        "config.dataset": dataset,
                        "status": "completed",
                        "diverged": False,
                        "stopped_early": False,
                        "iterations": 3,
                        "step": 30,
                        "metric.val_acc": a,
                        "best.val_acc": a,
                        "metric.test_acc": a - 0.05,
                        "metric.train_acc": a + 0.05,
                        "metric.train_loss": 1 - a,
                        "metric.test_loss": 1.1 - a,
                        **per_class,
                    }
                )
                for it in (1, 2, 3):
                    curves.append(
                        {
                            "trial_id": tid,
                            "config.optimizer": opt,
                            "config.lr": lr,
                            "config.seed": seed,
                            "iteration": it,
                            "step": 10 * it,
                            "metric.val_acc": a * it / 3,
                            "metric.train_loss": 2 - a * it / 3,
                            "metric.test_loss": 2.1 - a * it / 3,
                            "metric.train_acc": a * it / 3,
                            "metric.test_acc": (a - 0.05) * it / 3,
                        }
                    )
    return pd.DataFrame(rows), pd.DataFrame(curves)


OPT_MANIFEST = manifest("optimizer_comparison", ["optimizer"], ["lr"])
PALINDROME_ACC = {"lstm": [1.0, 1.0, 0.1, 0.1], "rnn": [1.0, 0.5, 0.1, 0.1]}


def synthetic_palindrome(seeds=(0, 1), spread=0.0):
    rows, curves = [], []
    for cell, accs in PALINDROME_ACC.items():
        for T, acc in zip((5, 10, 15, 20), accs):
            for seed in seeds:
                a, tid = float(np.clip(acc + spread * (seed - np.mean(seeds)), 0, 1)), f"{cell}{T}-{seed}"
                stopped = acc < 0.5
                rows.append(
                    {
                        "study": "palindrome",
                        "trial_id": tid,
                        "config.cell": cell,
                        "config.seq_len": T,
                        "config.seed": seed,
                        "config.steps_per_report": 100,
                        "status": "stopped" if stopped else "completed",
                        "stopped_early": stopped,
                        "diverged": False,
                        "iterations": 2 if stopped else 4,
                        "step": 200 if stopped else 400,
                        "metric.test_acc": a,
                        "metric.val_acc": a,
                        "best.val_acc": a,
                        "metric.train_acc": a,
                        "metric.train_loss": 2.3 * (1 - a) + 0.01,
                    }
                )
                for it in range(1, (2 if stopped else 4) + 1):
                    curves.append(
                        {
                            "trial_id": tid,
                            "config.cell": cell,
                            "config.seq_len": T,
                            "config.seed": seed,
                            "iteration": it,
                            "step": 100 * it,
                            "metric.val_acc": a * it / 4,
                            "metric.train_loss": 2.3 - 2 * a * it / 4,
                        }
                    )
    return pd.DataFrame(rows), pd.DataFrame(curves)


PAL_MANIFEST = manifest("palindrome", ["cell", "seq_len"], iterations=4, grace=2, reduction=2)


def synthetic_regularization():
    """Baseline (all 0): train 1.0 / test 0.8; dropout 0.5: 0.9 / 0.85; L2 1e-4: 0.99 / 0.8, 0.01: 0.85 / 0.84;
    3 seeds."""
    rows = []
    for k, v, tr, te in [
        ("dropout", 0.0, 1.0, 0.8),
        ("dropout", 0.5, 0.9, 0.85),
        ("l2", 1e-4, 0.99, 0.8),
        ("l2", 0.01, 0.85, 0.84),
    ]:
        for seed, d in zip((0, 1, 2), (-0.01, 0.0, 0.01)):
            cfg = {"config.dropout": 0.0, "config.l2": 0.0, "config.weight_decay": 0.0, f"config.{k}": v}
            rows.append(
                {
                    **cfg,
                    "study": "regularization",
                    "trial_id": f"{k}{v}-{seed}",
                    "config.seed": seed,
                    "metric.train_acc": tr + d,
                    "metric.test_acc": te + d,
                    "metric.val_acc": te + d,
                    "best.val_acc": te + d,
                    "diverged": False,
                    "stopped_early": False,
                    "status": "completed",
                    "iterations": 3,
                }
            )
    return pd.DataFrame(rows)


REG_MANIFEST = manifest("regularization", ["dropout", "l2", "weight_decay"], seeds=(0, 1, 2))


def write_run(folder, trials, curves, manifest):
    files.write_table(folder / "trials", trials)
    files.write_table(folder / "curves", curves)
    files.write_text(folder / "manifest.json", json.dumps(manifest))
    return folder


# ---- tables -------------------------------------------------------------------------------------


def test_ci95_matches_hand_computation():
    # values 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.302653 -> 4.302653 / sqrt(3) = 2.484138
    assert ci95([1, 2, 3]) == pytest.approx(2.484138, rel=1e-5)
    assert np.isnan(ci95([5.0]))
    assert ci95([1, 2, 3, np.nan]) == pytest.approx(2.484138, rel=1e-5)


def test_summarize_groups_over_seeds():
    t = pd.DataFrame({"config.lr": [0.1, 0.1, 0.1, 0.01, 0.01], "metric.val_acc": [0.5, 0.6, 0.7, 0.9, 0.8]})
    s = summarize(t, ["config.lr"], ["metric.val_acc"]).set_index("config.lr")
    assert s.loc[0.1, "metric.val_acc.mean"] == pytest.approx(0.6)
    assert s.loc[0.1, "metric.val_acc.std"] == pytest.approx(0.1)
    assert s.loc[0.1, "metric.val_acc.n"] == 3
    assert s.loc[0.01, "metric.val_acc.ci95"] == pytest.approx(12.706205 * np.std([0.9, 0.8], ddof=1) / np.sqrt(2))
    assert (s.loc[0.1, "metric.val_acc.min"], s.loc[0.1, "metric.val_acc.max"]) == (0.5, 0.7)


def test_best_per_group_picks_the_best_mean_nuisance_per_scientific_value():
    t = pd.DataFrame(
        {
            "config.optimizer": ["adam"] * 4 + ["sgd"] * 4,
            "config.lr": [1e-3, 1e-3, 1e-2, 1e-2, 1e-3, 1e-3, 1e-1, 1e-1],
            "metric.val_acc": [0.8, 0.9, 0.95, 0.5, 0.6, 0.6, 0.7, 0.8],
            "metric.test_acc": [0.7, 0.8, 0.99, 0.99, 0.5, 0.5, 0.6, 0.7],  # never what chooses
        }
    )
    b = best_per_group(t, OPT_MANIFEST, "metric.test_acc").set_index("config.optimizer")
    assert b.loc["adam", "config.lr"] == 1e-3 and b.loc["adam", "metric.test_acc.mean"] == pytest.approx(0.75)
    assert b.loc["sgd", "config.lr"] == 1e-1 and b.loc["sgd", "metric.test_acc.mean"] == pytest.approx(0.65)


def test_run_summary_counts_every_trial_but_averages_only_the_finite_ones():
    trials, _ = synthetic_lr_scan()
    s = run_summary(trials, MANIFEST).set_index("config.lr")
    assert list(s.index) == [1e-4, 1e-3, 1e-2, 1.0]
    assert s.loc[1.0, "trials"] == 2 and s.loc[1.0, "diverged"] == 2 and np.isnan(s.loc[1.0, "best.val_acc.mean"])
    assert s.loc[1e-4, "stopped_early"] == 2
    assert s.loc[1e-3, "best.val_acc.mean"] == pytest.approx(0.91)
    assert s.loc[1e-3, "best.val_acc.ci95"] == pytest.approx(12.706205 * np.std([0.9, 0.92], ddof=1) / np.sqrt(2))
    assert s.loc[1e-3, "metric.gap.mean"] == pytest.approx(0.10)  # train - test = (a + 0.05) - (a - 0.05)
    assert s.loc[1e-3, "best.val_acc.n"] == 2


# ---- figures ------------------------------------------------------------------------------------


def test_accuracy_vs_lr_plots_the_seed_means_on_a_log_axis():
    trials, curves = synthetic_lr_scan()
    fig = analysis.figures(trials, curves, MANIFEST)["accuracy_vs_lr"]
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_title() and ax.get_xlabel() == "learning rate"
    assert ax.get_ylim() == (0.0, 1.02) and "fraction" in ax.get_ylabel()
    b = bars(ax)
    best = b["best validation accuracy"].lines[0]
    assert list(best.get_xdata()) == [1e-4, 1e-3, 1e-2]  # the diverged lr=1 is left out of the means
    np.testing.assert_allclose(ys(best), [0.51, 0.91, 0.71])
    np.testing.assert_allclose(ys(b["final test accuracy"].lines[0]), [0.46, 0.86, 0.66])
    crosses = [c for c in ax.collections if c.get_label() == "diverged"]
    assert len(crosses) == 1 and crosses[0].get_offsets()[:, 0].tolist() == [1.0, 1.0]
    # n = 2 seeds: a min-max band instead of a t-based CI, and the title says so
    assert "min–max" in ax.get_title() and "n=2" in ax.get_title()
    band = next(c for c in ax.collections if c.get_label() == "_band best validation accuracy")
    y = band.get_paths()[0].vertices[:, 1]
    assert y.min() == pytest.approx(0.50) and y.max() == pytest.approx(0.92)
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"best validation accuracy", "diverged"}


def test_wide_confidence_intervals_are_clipped_to_the_accuracy_range():
    # T=10: 3 seeds at 0.0, 0.5, 1.0: the t-based CI is ±1.24 around 0.5; bars must stop at 0 and 1
    trials, _ = synthetic_palindrome(seeds=(0, 1, 2), spread=0.5)
    fig = metric_vs_figure(trials, "seq_len", ["metric.test_acc"], "t", hue="cell", chance=0.1)
    ax = fig.axes[0]
    assert ax.get_ylim() == (0.0, 1.02) and "95% CI" in ax.get_title()
    rnn = bars(ax)["cell=rnn"]
    np.testing.assert_allclose(ys(rnn.lines[0]), [2.5 / 3, 0.5, 0.7 / 3, 0.7 / 3])  # seeds clipped to [0, 1]
    seg = err_segments(rnn)
    assert seg.min() >= 0.0 and seg.max() <= 1.0
    assert seg[1].tolist() == pytest.approx([0.0, 1.0])  # T=10: 0.5 ± 1.24, clipped at both ends
    chance = [l for l in ax.lines if l.get_label() == "chance (0.1)"]
    assert len(chance) == 1 and ys(chance[0]).tolist() == [0.1, 0.1]
    assert "chance (0.1)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_palindrome_figure_has_one_line_per_cell_with_a_band_for_two_seeds():
    trials, _ = synthetic_palindrome()
    fig = metric_vs_figure(trials, "seq_len", ["metric.test_acc"], "t", hue="cell", chance=0.1)
    ax = fig.axes[0]
    data = {label: ys(c.lines[0]).tolist() for label, c in bars(ax).items()}
    assert data == {"cell=lstm": [1.0, 1.0, 0.1, 0.1], "cell=rnn": [1.0, 0.5, 0.1, 0.1]}
    assert list(ax.get_xticks()) == [5, 10, 15, 20]
    # every trial as a dot: hollow (no face) where ASHA stopped it
    dots = [c for c in ax.collections if c.get_label() == "_trial"]
    hollow = [c for c in dots if len(c.get_facecolors()) == 0]
    assert sum(len(c.get_offsets()) for c in dots) == 16 and sum(len(c.get_offsets()) for c in hollow) == 8


def test_curves_fade_trials_stopped_by_asha_and_colour_by_value():
    trials, curves = synthetic_lr_scan()
    fig = curves_figure(curves, trials, "lr")
    lines = fig.axes[0].lines
    assert len(lines) == 8
    alphas = {l.get_alpha() for l in lines}
    assert alphas == {style.FADED, 0.9}
    same = [l for l in lines if l.get_label() == "lr=0.001"]
    assert len(same) == 1  # one legend entry per value
    np.testing.assert_allclose(ys(lines[2]), [0.3, 0.6, 0.9])
    pal = style.colors(trials["config.lr"])
    assert rgba(same[0].get_color()) == rgba(pal[1e-3])
    # the legend shows faded values at full opacity
    assert all(h.get_alpha() == 1 for h in fig.axes[-1].get_legend().legend_handles)


def test_a_trial_that_diverged_at_its_first_report_ends_in_a_cross_at_zero():
    trials, curves = synthetic_lr_scan()
    curves.loc[curves["config.lr"] == 1.0, ["metric.val_acc", "metric.train_loss"]] = np.nan
    curves = curves[~((curves["config.lr"] == 1.0) & (curves["iteration"] > 1))]
    fig = curves_figure(curves, trials, "lr")
    crosses = [c for c in fig.axes[0].collections if c.get_label() == "_diverged"]
    assert [c.get_offsets().tolist() for c in crosses] == [[[1.0, 0.0]]]  # and one more, labelled for the legend
    assert [c for c in fig.axes[0].collections if c.get_label() == "diverged"][0].get_offsets().tolist() == [[1.0, 0.0]]


def test_asha_rungs_are_grace_times_powers_of_reduction_below_max_iterations():
    assert asha_rungs({"asha": {"grace": 2, "reduction": 3}, "iterations": 12}) == [2, 6]
    assert asha_rungs({"asha": {"grace": 5, "reduction": 2}, "iterations": 20}, scale=100) == [500, 1000]
    assert asha_rungs({"asha": {"grace": 10, "reduction": 2}, "iterations": 30}) == [10, 20]
    assert asha_rungs({"iterations": 30}) == []


def test_learning_curves_mark_the_rungs_on_the_step_axis_for_palindromes():
    trials, curves = synthetic_palindrome()
    figs = analysis.figures(trials, curves, PAL_MANIFEST)
    ax = figs["curves_all_trials"].axes[0]
    assert ax.get_xlabel().startswith("optimizer step")
    rungs = [l for l in ax.lines if l.get_linestyle() == "--"]
    assert sorted(l.get_xdata()[0] for l in rungs) == [200]  # grace 2 x 100 steps; 4 < 4 is no rung
    faded = [l for l in ax.lines if l.get_alpha() == style.FADED]
    assert len(faded) == 8  # the T=15 and T=20 trials, stopped by ASHA


def test_palindrome_curves_per_cell_have_a_panel_per_cell_coloured_by_length():
    trials, curves = synthetic_palindrome()
    fig = analysis.figures(trials, curves, PAL_MANIFEST)["curves_per_cell"]
    top = [ax for ax in fig.axes if ax.get_title().startswith("cell = ")]
    assert [ax.get_title() for ax in top] == ["cell = lstm", "cell = rnn"]
    pal = style.colors(trials["config.seq_len"])
    for ax in top:
        lines = [l for l in ax.lines if l.get_label().startswith("seq_len=") or l.get_label() == "_seed"]
        assert len(lines) == 8  # 4 lengths x 2 seeds
        for l in (l for l in lines if l.get_label().startswith("seq_len=")):
            assert rgba(l.get_color()) == rgba(pal[int(l.get_label().split("=")[1])])
    lstm_t10 = next(l for l in top[0].lines if l.get_label() == "seq_len=10")
    np.testing.assert_allclose(ys(lstm_t10), [0.25, 0.5, 0.75, 1.0])


def test_lr_scan_has_four_panel_mean_curves_and_the_gap_against_lr():
    trials, curves = synthetic_lr_scan()
    figs = analysis.figures(trials, curves, MANIFEST)
    assert list(figs)[0] == "accuracy_vs_lr"
    assert {"gap_vs_lr", "mean_curves_by_lr", "hparam_axes", "curves_all_trials"} <= set(figs)
    panels = [ax for ax in figs["mean_curves_by_lr"].axes if ax.get_title()]
    titles = ["train loss", "validation loss", "train accuracy", "validation accuracy"]  # test: once, at the end
    assert [ax.get_title() for ax in panels] == titles
    mean = next(l for l in panels[3].lines if l.get_label() == "lr=0.001")
    np.testing.assert_allclose(ys(mean), [0.91 / 3, 0.91 * 2 / 3, 0.91])  # mean over seeds 0.90 and 0.92
    assert mean.get_linewidth() > 2
    gap = bars(figs["gap_vs_lr"].axes[0])["final train − test gap"]
    np.testing.assert_allclose(ys(gap.lines[0]), [0.1, 0.1, 0.1])


def test_mean_curves_are_drawn_only_where_all_seeds_report():
    trials, curves = synthetic_lr_scan()
    curves = curves[~((curves["trial_id"] == "0.001-1") & (curves["iteration"] == 3))]  # one seed stopped at 2
    m = mean_curves(curves, trials, "lr", ["metric.test_acc"]).set_index(["config.lr", "iteration"])
    assert m.loc[(1e-3, 3), "complete"] == False and m.loc[(1e-3, 2), "complete"] == True  # noqa: E712
    assert m.loc[(1e-3, 3), "metric.test_acc.mean"] == pytest.approx(0.85)
    fig = mean_curves_figure(curves, trials, "lr", ["metric.test_acc"])
    mean = next(l for l in fig.axes[0].lines if l.get_label() == "lr=0.001")
    assert list(mean.get_xdata()) == [1, 2]


def test_optimizer_views_select_the_fixed_lr_and_each_optimizers_best():
    trials, _ = synthetic_optimizer()
    v = optimizer_views(trials, OPT_MANIFEST, 1e-4).set_index(["view", "config.optimizer"])
    assert v.loc[("fixed lr", "adam"), "config.lr"] == FIXED_LR  # 0.1**4 found as 1e-4
    assert v.loc[("fixed lr", "adam"), "metric.test_acc.mean"] == pytest.approx(0.76)
    assert v.loc[("fixed lr", "sgd"), "rank"] == 1 and v.loc[("fixed lr", "adam"), "rank"] == 2
    assert v.loc[("tuned lr", "adam"), "config.lr"] == 1e-3 and v.loc[("tuned lr", "sgd"), "config.lr"] == FIXED_LR
    assert v.loc[("tuned lr", "adam"), "rank"] == 1
    figs = analysis.figures(*synthetic_optimizer(), OPT_MANIFEST)
    assert list(figs)[0] == "best_per_optimizer"
    ax = figs["optimizer_views"].axes[0]
    heights = {p.get_label(): [] for p in ax.patches}
    for c in ax.containers:
        if not hasattr(c, "lines"):  # bar containers
            heights[c.get_label()] = [round(p.get_height(), 6) for p in c.patches]
    assert heights["lr = 1e-4 for all (hand-run view)"] == [0.76, 0.81]
    assert heights["lr tuned per optimizer"] == [0.86, 0.81]
    # the fixed-lr curves hold only the lr = 1e-4 trials: 2 optimizers x 2 seeds
    fixed = figs["fixed_lr_curves"].axes[0]
    assert len([l for l in fixed.lines if l.get_label() == "_seed"]) == 4


def test_isolation_plot_shows_each_optimizers_best_lr_with_its_seeds():
    trials, _ = synthetic_optimizer()
    fig = best_per_value_figure(trials, OPT_MANIFEST, "optimizer", "best.val_acc", "t")
    ax = fig.axes[0]
    assert [round(p.get_height(), 6) for p in ax.patches] == [0.91, 0.86]
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["0.910\nlr=1e-3", "0.860\nlr=1e-4"]
    assert ax.get_ylim() == (0.0, 1.02)


def test_per_class_bars_name_cifar_classes_and_use_each_optimizers_best_lr():
    trials, _ = synthetic_optimizer("cifar10")
    d = per_class(trials, OPT_MANIFEST)
    assert d["class_name"].iloc[:10].tolist() == list(CIFAR_CLASSES)
    adam = d[d["config.optimizer"] == "adam"]
    assert (adam["config.lr"] == 1e-3).all()
    np.testing.assert_allclose(adam["acc.mean"], np.arange(10) / 10 + 0.01)
    fig = per_class_figure(trials, OPT_MANIFEST, "t")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(CIFAR_CLASSES)
    bar = [c for c in ax.containers if not hasattr(c, "lines")]
    assert [c.get_label() for c in bar] == ["adam (lr=1e-3)", "sgd (lr=1e-4)"]
    np.testing.assert_allclose([p.get_height() for p in bar[1].patches], 1 - np.arange(10) / 10 + 0.01)
    digits = per_class(synthetic_optimizer("digits")[0], OPT_MANIFEST)
    assert digits["class_name"].iloc[:10].tolist() == [str(k) for k in range(10)]


def test_a_value_has_the_same_colour_in_every_figure_of_a_run():
    trials, curves = synthetic_optimizer()
    figs = analysis.figures(trials, curves, OPT_MANIFEST)
    pal = style.colors(trials["config.optimizer"])
    best = figs["best_per_optimizer"].axes[0].patches
    assert [rgba(p.get_facecolor())[:3] for p in best] == [rgba(pal[o])[:3] for o in ("adam", "sgd")]
    for name in ("lr_per_optimizer",):
        assert rgba(bars(figs[name].axes[0])["optimizer=sgd"].lines[0].get_color()) == rgba(pal["sgd"])
    fixed = next(l for l in figs["fixed_lr_curves"].axes[0].lines if l.get_label() == "optimizer=sgd")
    assert rgba(fixed.get_color()) == rgba(pal["sgd"])
    per_class = [c for c in figs["per_class_accuracy"].axes[0].containers if not hasattr(c, "lines")]
    assert rgba(per_class[1].patches[0].get_facecolor()) == rgba(pal["sgd"])


def test_hparam_axes_plot_every_trial_with_diverged_crosses_and_log_axes():
    trials, _ = synthetic_lr_scan()
    fig = hparam_axes_figure(trials, ["lr"], "metric.val_acc", "t")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_ylim() == (0.0, 1.02)
    dots = [c for c in ax.collections if c.get_label() == "_trial"]
    assert sum(len(c.get_offsets()) for c in dots) == 6
    crosses = [c for c in ax.collections if c.get_label() == "diverged"]
    assert crosses[0].get_offsets()[:, 1].tolist() == [0.0, 0.0]


def test_regularization_gap_is_train_minus_test():
    fig = regularization_figure(synthetic_regularization())
    top, bottom = fig.axes[0], fig.axes[3]  # against dropout (l2 and weight decay held at 0)
    assert top.get_title() == "against dropout p"
    gap = bars(bottom)["final train − test gap"].lines[0]
    np.testing.assert_allclose(ys(gap), [0.2, 0.05])
    np.testing.assert_allclose(ys(bars(top)["final test accuracy"].lines[0]), [0.8, 0.85])
    assert top.get_ylim() == (0.0, 1.02) and "95% CI" in fig._suptitle.get_text()
    assert fig.axes[1].get_xscale() == "symlog"  # l2: 0, 1e-4 and 0.01


def test_every_figure_has_a_title_and_labelled_axes():
    runs = [
        ("lr_scan", *synthetic_lr_scan(), MANIFEST),
        ("palindrome", *synthetic_palindrome(), PAL_MANIFEST),
        ("optimizer_comparison", *synthetic_optimizer(), OPT_MANIFEST),
    ]
    for study, trials, curves, m in runs:
        for name, fig in analysis.figures(trials, curves, m).items():
            assert fig._suptitle is not None or any(ax.get_title() for ax in fig.axes), (study, name)
            assert any(ax.get_xlabel() for ax in fig.axes), (study, name)
            assert any(ax.get_ylabel() for ax in fig.axes), (study, name)
            assert any(ax.get_legend() for ax in fig.axes), (study, name)


# ---- findings -----------------------------------------------------------------------------------


def test_lr_scan_findings_name_the_best_lr_and_the_ones_that_fall_short():
    trials, curves = synthetic_lr_scan()
    text = " ".join(findings.findings(trials, curves, MANIFEST))
    assert "Best lr 1e-3 (chosen on final validation accuracy): final validation accuracy 0.910 (0.900–0.920" in text
    assert "lr in {1e-4, 0.01} falls short" in text
    assert "Diverged: lr 1" in text
    assert "2 of 8 trials diverged" in text and "ASHA stopped 2 of 8 trials" in text


def test_palindrome_findings_give_the_longest_solved_and_the_first_chance_length():
    trials, curves = synthetic_palindrome()
    text = findings.findings(trials, curves, PAL_MANIFEST)
    assert any(t.startswith("LSTM: >= 99% test accuracy up to T=10; near chance (<= 0.2) from T=15") for t in text)
    assert any(t.startswith("RNN: >= 99% test accuracy up to T=5; near chance (<= 0.2) from T=15") for t in text)


def test_optimizer_findings_give_both_views_and_rank_only_what_the_seeds_separate():
    trials, curves = synthetic_optimizer()
    text = findings.findings(trials, curves, OPT_MANIFEST)
    iso = next(t for t in text if t.startswith("Isolation view (lr tuned per optimizer on validation"))
    assert "adam (lr 1e-3) 0.860 (0.850–0.870 over 2 seeds) ~ sgd (lr 1e-4) 0.810" in iso  # 2 seeds: no '>'
    fixed = next(t for t in text if t.startswith("Fixed-lr view (lr = 1e-4 for all"))
    assert "sgd (lr 1e-4) 0.810 (0.800–0.820 over 2 seeds) ~ adam (lr 1e-4) 0.760" in fixed
    three = pd.concat([trials, trials[trials["config.seed"] == 1].assign(**{"config.seed": 2})], ignore_index=True)
    three.loc[three["config.seed"] == 2, "metric.test_acc"] += 0.02
    iso = next(t for t in findings.findings(three, curves, OPT_MANIFEST) if t.startswith("Isolation view"))
    assert " > sgd (lr 1e-4)" in iso  # 3 seeds a side, every adam seed above every sgd seed


def test_regularization_findings_compare_the_gap_without_and_with_the_regulariser():
    text = findings.findings(synthetic_regularization(), pd.DataFrame(), REG_MANIFEST)
    dropout = next(t for t in text if t.startswith("dropout p:"))
    assert dropout.startswith("dropout p: gap at 0 0.200 ± 0.000 (95% CI, n=3) vs at 0.5 0.050 ± 0.000")
    assert "test accuracy 0.800 -> 0.850" in dropout


# ---- render, reports, index, command line --------------------------------------------------------


def test_load_roundtrips_parquet_and_render_writes_report(tmp_path):
    trials, curves = synthetic_lr_scan()
    write_run(tmp_path, trials, curves, MANIFEST)
    r = analysis.load(tmp_path)
    pd.testing.assert_frame_equal(r.trials, trials)
    pd.testing.assert_frame_equal(r.curves, curves)
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "curves_by_lr.png").write_bytes(b"stale")  # from an older version
    out = analysis.render(tmp_path)
    assert {p.name for p in out["figures"]} == {
        "accuracy_vs_lr.png",
        "gap_vs_lr.png",
        "mean_curves_by_lr.png",
        "hparam_axes.png",
        "curves_all_trials.png",
    }
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(p.name for p in out["figures"])
    text = out["report"].read_text()
    assert "Best single trial: lr=1e-3, seed=1" in text and "figures/accuracy_vs_lr.png" in text
    assert "python -m studies.lr_scan" in text and "## Findings" in text and "Best lr 1e-3" in text
    assert '"study": "lr_scan"' in text  # the manifest
    s = pd.read_parquet(tmp_path / "summary.parquet")
    pd.testing.assert_frame_equal(s, run_summary(trials, MANIFEST))
    assert pd.read_csv(tmp_path / "summary.csv").shape == s.shape
    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob("figures/.*.tmp"))


def test_report_html_is_self_contained(tmp_path):
    write_run(tmp_path, *synthetic_optimizer(), OPT_MANIFEST)
    out = analysis.render(tmp_path, fmt="svg")
    assert all(p.suffix == ".svg" for p in out["figures"])
    page = out["html"].read_text()
    srcs = re.findall(r"""src=["']([^"']*)""", page)
    assert len(srcs) == len(out["figures"]) == 8  # the study's and the generic figures, and the importance
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"<(link|script)\b", page) and "http" not in page
    assert "Isolation view (lr tuned per optimizer on validation" in page


def test_index_and_summary_over_two_runs(tmp_path):
    write_run(tmp_path / "lr_scan" / "quick", *synthetic_lr_scan(), MANIFEST)
    write_run(tmp_path / "palindrome" / "quick", *synthetic_palindrome(), PAL_MANIFEST)
    assert analysis.find_runs(tmp_path) == [tmp_path / "lr_scan" / "quick", tmp_path / "palindrome" / "quick"]
    done = analysis.render_all([tmp_path])
    assert len(done["runs"]) == 2 and (tmp_path / "summary.png").stat().st_size > 10_000
    page = (tmp_path / "index.html").read_text()
    assert page.count("class='card'") == 2
    assert "href='lr_scan/quick/report.html'" in page and "href='palindrome/quick/report.html'" in page
    assert "lr=1e-3: val_acc 0.910 (mean of 2)" in page
    assert all(s.startswith("data:image/png;base64,") for s in re.findall(r"src='([^']*)'", page))
    entries = list(done["runs"].values())
    assert [e["headline"][0] for e in entries] == ["accuracy_vs_lr", "accuracy_vs_length"]
    from analysis.index import summary_figure

    fig = summary_figure(entries)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 2 and titles[0].startswith("lr_scan / synthetic (8 trials)\nbest: lr=1e-3")


def test_command_line_renders_a_root_into_out(tmp_path, capsys):
    root, out = tmp_path / "results", tmp_path / "out"
    write_run(root / "lr_scan" / "quick", *synthetic_lr_scan(), MANIFEST)
    write_run(root / "palindrome" / "quick", *synthetic_palindrome(), PAL_MANIFEST)
    assert cli([str(root), "--out", str(out), "--format", "pdf"]) == 0
    assert (out / "index.html").is_file() and (out / "summary.png").is_file()
    assert (out / "lr_scan" / "synthetic" / "figures" / "accuracy_vs_lr.pdf").is_file()
    assert (out / "palindrome" / "synthetic" / "report.html").is_file()
    assert not (root / "lr_scan" / "quick" / "report.md").exists()  # --out leaves the runs alone
    assert "index:" in capsys.readouterr().out


@pytest.mark.parametrize(
    "case",
    ["missing", "empty", "bad_manifest", "no_manifest", "bad_parquet", "format", "out_is_file", "one_bad_of_two"],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, case):
    good = write_run(tmp_path / "good", *synthetic_lr_scan(), MANIFEST)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    bad = tmp_path / "bad"
    args = [str(bad)]
    if case == "empty":
        bad.mkdir()
    elif case in ("bad_manifest", "no_manifest", "bad_parquet"):
        write_run(bad, *synthetic_lr_scan(), MANIFEST)
        if case == "bad_manifest":
            (bad / "manifest.json").write_text("{truncated")
        elif case == "no_manifest":
            (bad / "manifest.json").unlink()
        else:
            (bad / "trials.parquet").write_bytes(b"PAR1 not really")
    elif case == "format":
        args = [str(good), "--format", "jpg"]
    elif case == "out_is_file":
        (tmp_path / "file").write_text("x")
        args = [str(good), "--out", str(tmp_path / "file")]
    elif case == "one_bad_of_two":
        args = [str(good), str(bad)]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m analysis: error: ") and err.count("\n") == 1, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


def test_load_refuses_a_folder_without_results(tmp_path):
    with pytest.raises(analysis.ResultsError, match="holds no trials.parquet"):
        analysis.load(tmp_path)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def test_rankings_mark_ties_at_the_shown_precision():
    assert style.chain([(0.9861, "adam"), (0.9859, "rmsprop"), (0.897, "sgd")]) == "adam ≈ rmsprop > sgd"


def test_a_rung_decision_at_chance_is_flagged():
    from analysis.findings import stopped_at_chance

    t = pd.DataFrame({"stopped_early": [True, True, False], "metric.val_acc": [0.11, 0.6, 0.9]})
    m = {"metric": "val_acc", "classes": [str(i) for i in range(10)]}
    (line,) = stopped_at_chance(t, m)
    assert "stopped 1 of 2 stopped seed runs" in line and "chance (0.10" in line
    assert stopped_at_chance(t.assign(**{"metric.val_acc": [0.5, 0.6, 0.9]}), m) == []
    assert stopped_at_chance(t, {"metric": "val_acc"}) == []  # chance unknown: nothing said


def test_a_value_measured_at_some_lengths_only_gets_no_line():
    trials, _ = synthetic_palindrome()
    sparse = trials[(trials["config.cell"] == "rnn") & trials["config.seq_len"].isin([5, 20])].assign(
        **{"config.cell": "rnn, double softmax"}
    )
    fig = analysis.figures(pd.concat([trials, sparse]), pd.DataFrame(), PAL_MANIFEST)["accuracy_vs_length"]
    lines = {c.get_label(): c.lines[0] for c in fig.axes[0].containers if c.get_label().startswith("cell=")}
    assert lines["cell=rnn, double softmax"].get_linestyle() == "None"  # T=5 and 20 only: no line across 10, 15
    assert lines["cell=rnn"].get_linestyle() == "-"


def test_lr_scan_findings_and_claims_name_the_same_best_lr_chosen_on_validation():
    from studies.lr_scan_analysis import CLAIMS

    trials, curves = synthetic_lr_scan()
    trials.loc[trials["config.lr"] == 1e-2, "metric.test_acc"] = 0.99  # best on test, not on validation
    text = " ".join(findings.findings(trials, curves, MANIFEST))
    assert "Best lr 1e-3 (chosen on final validation accuracy)" in text
    stuck = next(c for c in CLAIMS if "stuck" in c.text).check(trials, curves, MANIFEST)
    assert "best lr 1e-3" in stuck.value and "lr 1e-2" not in stuck.value
