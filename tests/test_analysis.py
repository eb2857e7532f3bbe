"""Analysis on synthetic tables with known values: grouping, confidence intervals, plotted data."""

import json

import numpy as np
import pandas as pd
import pytest

import analysis
from analysis import figures
from analysis.tables import best_per_group, ci95, summarize


def ys(line) -> np.ndarray:
    """A plotted line's y values as floats (errorbar keeps them as objects)."""
    return np.asarray(line.get_ydata(), dtype=float)


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


def test_best_per_group_picks_the_best_mean_nuisance_per_scientific_value():
    t = pd.DataFrame({"config.optimizer": ["adam"] * 4 + ["sgd"] * 4,
                      "config.lr": [1e-3, 1e-3, 1e-2, 1e-2, 1e-3, 1e-3, 1e-1, 1e-1],
                      "best.val_acc": [0.8, 0.9, 0.95, 0.5, 0.6, 0.6, 0.7, 0.8]})
    b = best_per_group(t, ["config.optimizer"], ["config.lr"], "best.val_acc").set_index("config.optimizer")
    assert b.loc["adam", "config.lr"] == 1e-3 and b.loc["adam", "best.val_acc.mean"] == pytest.approx(0.85)
    assert b.loc["sgd", "config.lr"] == 1e-1 and b.loc["sgd", "best.val_acc.mean"] == pytest.approx(0.75)


def synthetic_lr_scan():
    rows, curves = [], []
    for lr, acc in [(1e-4, 0.5), (1e-3, 0.9), (1e-2, 0.7), (1.0, np.nan)]:
        for seed in (0, 1):
            tid = f"{lr}-{seed}"
            diverged = np.isnan(acc)
            a = 0.0 if diverged else acc + 0.02 * seed
            rows.append({"study": "lr_scan", "trial_id": tid, "config.lr": lr, "config.seed": seed,
                         "status": "diverged" if diverged else "completed", "diverged": diverged,
                         "stopped_early": lr == 1e-4, "iterations": 3, "metric.val_acc": a, "best.val_acc": a,
                         "metric.test_acc": a - 0.05, "metric.train_acc": a + 0.05, "metric.train_loss": 1 - a,
                         "best.train_acc": a + 0.05, "best.test_acc": a - 0.05})
            for it in (1, 2, 3):
                curves.append({"study": "lr_scan", "trial_id": tid, "config.lr": lr, "config.seed": seed,
                               "iteration": it, "step": 10 * it, "metric.val_acc": a * it / 3,
                               "metric.train_loss": 2 - a * it / 3})
    return pd.DataFrame(rows), pd.DataFrame(curves)


MANIFEST = {"study": "lr_scan", "name": "synthetic", "metric": "val_acc", "mode": "max", "scientific": ["lr"],
            "nuisance": [], "seeds": [0, 1], "iterations": 3, "command": "python -m studies.lr_scan"}


def test_accuracy_vs_lr_plots_the_seed_means_on_a_log_axis():
    trials, curves = synthetic_lr_scan()
    fig = figures.study_figures("lr_scan", trials, curves, MANIFEST)["accuracy_vs_lr"]
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_title() and ax.get_xlabel() == "learning rate"
    bars = {c.get_label(): c.lines[0] for c in ax.containers}  # errorbar containers, by legend label
    best = bars["best validation accuracy"]
    assert list(best.get_xdata()) == [1e-4, 1e-3, 1e-2]  # the diverged lr=1 is left out of the means
    np.testing.assert_allclose(ys(best), [0.51, 0.91, 0.71])
    np.testing.assert_allclose(ys(bars["final test accuracy"]), [0.46, 0.86, 0.66])
    crosses = [c for c in ax.collections if c.get_label() == "diverged"]
    assert len(crosses) == 1 and crosses[0].get_offsets()[:, 0].tolist() == [1.0, 1.0]


def test_curves_fade_trials_stopped_by_asha_and_colour_by_value():
    trials, curves = synthetic_lr_scan()
    fig = figures.curves_figure(curves, trials, "lr")
    lines = fig.axes[0].lines
    assert len(lines) == 8
    alphas = {l.get_alpha() for l in lines}
    assert alphas == {0.3, 0.9}
    same = [l for l in lines if l.get_label() == "lr=0.001"]
    assert len(same) == 1  # one legend entry per value
    np.testing.assert_allclose(ys(lines[2]), [0.3, 0.6, 0.9])


def test_palindrome_figure_has_one_line_per_cell():
    rows = []
    for cell, accs in {"rnn": [1.0, 0.3, 0.1], "lstm": [1.0, 1.0, 0.6]}.items():
        for T, a in zip((5, 10, 15), accs):
            for seed in (0, 1):
                rows.append({"trial_id": f"{cell}{T}{seed}", "config.cell": cell, "config.seq_len": T,
                             "config.seed": seed, "metric.test_acc": a, "metric.val_acc": a, "diverged": False,
                             "stopped_early": False})
    t = pd.DataFrame(rows)
    fig = figures.metric_vs_figure(t, "seq_len", ["metric.test_acc"], "t", hue="cell")
    data = {c.get_label(): ys(c.lines[0]).tolist() for c in fig.axes[0].containers}
    assert data == {"cell=lstm": [1.0, 1.0, 0.6], "cell=rnn": [1.0, 0.3, 0.1]}


def test_regularization_gap_is_train_minus_test():
    rows = []
    for k, v, tr, te in [("dropout", 0.0, 1.0, 0.8), ("dropout", 0.5, 0.9, 0.85), ("l2", 0.01, 0.85, 0.84)]:
        cfg = {"config.dropout": 0.0, "config.l2": 0.0, "config.weight_decay": 0.0, f"config.{k}": v}
        rows.append({**cfg, "trial_id": k + str(v), "metric.train_acc": tr, "metric.test_acc": te, "diverged": False})
    fig = figures.regularization_figure(pd.DataFrame(rows))
    ax = fig.axes[0]  # against dropout, l2 held at 0
    gap = [c.lines[0] for c in ax.containers if c.get_label() == "gap (train − test)"][0]
    np.testing.assert_allclose(ys(gap), [0.2, 0.05])


def test_load_roundtrips_parquet_and_render_writes_report(tmp_path):
    from analysis import io

    trials, curves = synthetic_lr_scan()
    io.write_table(tmp_path / "trials", trials)
    io.write_table(tmp_path / "curves", curves)
    io.write_text(tmp_path / "manifest.json", json.dumps(MANIFEST))
    r = analysis.load(tmp_path)
    pd.testing.assert_frame_equal(r.trials, trials)
    pd.testing.assert_frame_equal(r.curves, curves)
    out = analysis.render(tmp_path)
    assert {p.name for p in out["figures"]} == {"accuracy_vs_lr.png", "curves_by_lr.png", "hparam_axes.png"}
    text = out["report"].read_text()
    assert "lr=0.001, seed=1" in text and "figures/accuracy_vs_lr.png" in text
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_load_refuses_a_folder_without_results(tmp_path):
    with pytest.raises(analysis.ResultsError, match="holds no trials.parquet"):
        analysis.load(tmp_path)
