"""The benchmark functions run for a handful of steps and return sensible numbers (no timing
assertions: speed is what `python -m benchmarks` measures, not what the tests check)."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from benchmarks import common, compiled, gpu, packed, throughput

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


def ok(speed) -> bool:
    return speed.samples_per_s > 0 and math.isfinite(speed.loss) and speed.loss > 0


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_palindrome_paths_train_and_give_the_same_kind_of_loss(cell):
    fast = throughput.palindrome_fast(cell, 5, steps=3, warmup=1)
    naive = throughput.palindrome_naive(cell, 5, steps=3, warmup=1)
    assert ok(fast) and ok(naive)
    assert fast.samples == naive.samples == 3 * throughput.BATCH
    # untrained: cross-entropy near ln 10; the naive double softmax cannot leave [1.46, 2.47]
    assert abs(fast.loss - math.log(10)) < 0.5 and 1.46 < naive.loss < 2.47


def test_the_real_trainable_runs_outside_ray():
    s = throughput.trainable_palindrome("lstm", 5, steps=3, n_eval=64)
    assert ok(s)


@pytest.fixture
def small_batches(monkeypatch):
    """Batches of 16 CIFAR-shaped images: a VGG step in well under a second."""
    monkeypatch.setattr(throughput, "BATCH", 16)


def test_image_paths_train_one_step(small_batches):
    fast = throughput.cnn_fast(steps=1, warmup=0)
    naive = throughput.cnn_naive(steps=1, warmup=0)
    assert ok(fast) and ok(naive)
    assert throughput.pipeline_speed("ours", 2) > 0 and throughput.pipeline_speed("naive", 2) > 0


def test_naive_and_resident_batches_have_the_same_shape_and_scale():
    from studies.engine.tasks import IMAGE

    images, labels = throughput.cifar_like(256)
    data = throughput.image_data(images, labels)  # as the image task's load gives a trial its images
    x, y = next(IMAGE.batches(throughput.image_config(), data, torch.Generator().manual_seed(0)))
    ds = throughput.PILImages(images, labels, throughput.naive_transform())
    xn, yn = next(iter(torch.utils.data.DataLoader(ds, batch_size=throughput.BATCH)))
    assert x.shape == xn.shape == (throughput.BATCH, 3, 32, 32) and y.shape == yn.shape
    # not equal in value: torchvision pads crops with black before Normalize, datasets.augment with
    # zeros after it (the mean), and the random draws differ
    assert abs(x.mean() - xn.mean()) < 0.5 and abs(x.std() - xn.std()) < 0.3


def test_gpu_epochs_run_on_the_cpu_too(small_batches):
    df = gpu.epochs("cpu", n_train=64, steps=1, warmup=0, workers=0)
    assert len(df) == 1 + len(gpu.variants()) and (df["samples/s"] > 0).all() and df["loss"].notna().all()


@pytest.mark.parametrize("hidden", [(32,), (16, 8)])
def test_the_packed_benchmark_times_the_same_training_both_ways(hidden):
    import torch

    cpu = torch.device("cpu")
    fns = packed.speeds(packed.mlp_config(hidden), packed.fashion_shaped(3, cpu), K=2, steps=3, dev=cpu)
    one, both = fns["one by one"](), fns["packed"]()  # each after the same warm-up block
    assert one.samples == both.samples == 2 * 3 * packed.BATCH and one.samples_per_s > 0 and both.samples_per_s > 0
    assert abs(one.loss - both.loss) < 1e-4  # the same seeds, batches and steps: the same mean loss


def test_the_compiled_benchmark_times_the_same_step_eager_and_compiled():
    import torch

    from studies.engine.tasks import IMAGE

    c = {**packed.mlp_config((16,)), "steps_per_report": 2}
    r = compiled.case(c, IMAGE, packed.fashion_shaped(2, torch.device("cpu")), K=2, rounds=1)
    assert set(r["sps"]) == {"eager", "compiled"} and min(r["sps"].values()) > 0 and len(r["peaks"]) == 1
    assert (
        r["steps"] == 2 and r["cold"] == r["cold"] and r["warm"] == r["warm"]
    )  # both compile times measured (not NaN)


def test_record_appends_atomically(tmp_path):
    import pandas as pd

    path = tmp_path / "BENCHMARKS.md"
    df = pd.DataFrame({"config": ["a"], "samples/s": [1234.5]})
    common.record("first", [("Table", df)], ["a note"], path)
    common.record("second", [("Table", df)], [], path)
    text = path.read_text()
    assert text.startswith("# Benchmarks") and text.index("## first") < text.index("## second")
    assert "a note" in text and "torch" in text and "1,234" in text
    assert [p.name for p in tmp_path.iterdir()] == ["BENCHMARKS.md"]  # no temporary file left


def test_unknown_benchmark_is_a_usage_error():
    from benchmarks.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["nope"])
    assert e.value.code == 2


def test_asha_comparison_picks_the_best_mean_over_seeds_per_group():
    import pandas as pd

    from benchmarks.asha import compare
    from benchmarks.study_runs import StudyRun
    from studies.palindrome import STUDY

    # the cells compete within a length (palindrome's ASHA groups by every scientific key now: one configuration
    # per group); forget_bias is not in these tables, so the groups are by seq_len alone
    study = replace(STUDY, asha_groups=("seq_len", "forget_bias"))

    def run(arm, accs):  # accs: {(cell, T): [val_acc per seed]}
        rows = [
            {
                "config.cell": c,
                "config.seq_len": T,
                "config.seed": s,
                "best.val_acc": a,
                "iterations": 20,
                "wall_time_s": 1.0,
                "stopped_early": False,
            }
            for (c, T), v in accs.items()
            for s, a in enumerate(v)
        ]
        return StudyRun("palindrome", arm, "quick", study, pd.DataFrame(rows), 10.0, 9.0, 2)

    grid = run(
        "grid", {("rnn", 5): [1.0, 1.0], ("lstm", 5): [1.0, 0.998], ("rnn", 20): [0.2, 0.1], ("lstm", 20): [0.9, 0.7]}
    )
    asha = run(
        "asha", {("rnn", 5): [0.9, 0.9], ("lstm", 5): [1.0, 1.0], ("rnn", 20): [0.5, 0.5], ("lstm", 20): [0.3, 0.2]}
    )
    t = compare(grid, asha)
    assert list(t["group"]) == ["seq_len=5", "seq_len=20"]
    assert list(t["grid best"]) == ["cell=rnn", "cell=lstm"] and list(t["asha best"]) == ["cell=lstm", "cell=rnn"]
    assert list(t["match"]) == ["tie", "no"]


def test_trial_span_reads_tunes_result_files(tmp_path):
    import json

    from benchmarks.study_runs import _trial_span

    for name, lines in {"trial_a": [(100, 5), (110, 10)], "trial_b": [(104, 2), (130, 26)]}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(
            "\n".join(json.dumps({"timestamp": ts, "time_this_iter_s": it}) for ts, it in lines)
        )
    assert _trial_span(tmp_path) == 130 - 95


def test_asha_replay_stops_the_slow_configs_and_keeps_the_grid_whole_without_early_stopping():
    import pandas as pd

    from benchmarks.asha import frontier, replay
    from benchmarks.study_runs import StudyRun
    from studies.lr_scan import STUDY

    lrs, its = [0.1, 0.01, 0.001], 8
    budget = STUDY.budgets["quick"]
    # the lrs compete (plain ASHA; lr_scan's own ASHA groups by lr now: one configuration per group)
    study = replace(
        STUDY, asha_groups=(), budgets={"quick": replace(budget, iterations=its, grid=[{"lr": lr} for lr in lrs])}
    )
    # lr 0.01 learns fastest and ends best; 0.1 and 0.001 stay behind at every iteration (0.001 on its mean
    # over seeds: its seed 1 alone would keep up)
    acc = {(0.1, 0): 0.3, (0.1, 1): 0.3, (0.01, 0): 0.9, (0.01, 1): 0.9, (0.001, 0): 0.1, (0.001, 1): 0.7}
    curves = pd.DataFrame(
        [
            {
                "config.lr": lr,
                "config.seed": s,
                "iteration": i,
                "time_s": float(i),
                "metric.val_acc": acc[lr, s] * i / its,
            }
            for lr in lrs
            for s in (0, 1)
            for i in range(1, its + 1)
        ]
    )
    trials = curves.groupby(["config.lr", "config.seed"], as_index=False).agg(
        **{"best.val_acc": ("metric.val_acc", "max"), "iterations": ("iteration", "max")}
    )
    grid = StudyRun("lr_scan", "grid", "quick", study, trials, 1.0, 1.0, 2, curves=curves)

    whole = replay(grid, grace=its, reduction=2)
    assert whole["iterations"].tolist() == [its] * 6  # no rung before the end: the grid itself
    t = replay(grid, grace=2, reduction=2).set_index(["config.lr", "config.seed"])
    # one trial per lr with both seeds, started in grid order, two at a time: 0.1 passes its rungs first
    # (nothing recorded yet), 0.01 beats it; 0.001's mean over seeds falls below the median recorded at
    # iteration 2 (its seed 1 alone would not), and both its seeds stop there together
    assert t.loc[(0.1, 0), "iterations"] == t.loc[(0.01, 0), "iterations"] == its
    assert t.loc[(0.1, 1), "iterations"] == t.loc[(0.01, 1), "iterations"] == its
    assert t.loc[(0.001, 0), "iterations"] == t.loc[(0.001, 1), "iterations"] == 2
    assert t["iterations"].sum() < 6 * its
    f = frontier(grid, (2, 2), graces=(2, its), reductions=(2,))
    assert f["same best"].all() and list(f["the budget's"]) == ["yes", ""]
    assert f["iterations / grid"].iloc[0] == t["iterations"].sum() / (6 * its) and f["iterations / grid"].iloc[1] == 1
    # where the grid run's table says when each trial started, the replay starts them in that order: 0.001
    # first passes its rungs (nothing recorded yet), and 0.1, last now, is the one stopped at iteration 2
    started = grid.trials.assign(started_s=grid.trials["config.lr"].map({0.001: 0.0, 0.01: 1.0, 0.1: 2.0}))
    t = replay(replace(grid, trials=started), grace=2, reduction=2).set_index(["config.lr", "config.seed"])
    assert t.loc[(0.001, 0), "iterations"] == t.loc[(0.01, 1), "iterations"] == its
    assert t.loc[(0.1, 0), "iterations"] == t.loc[(0.1, 1), "iterations"] == 2


def test_asha_runs_the_studies_whose_groups_hold_several_configurations():
    # optimizer_comparison: its Optuna lr samples compete within an optimizer; the others group by all their
    # scientific keys and search nothing: one configuration per group, nothing for ASHA to stop
    import importlib

    from benchmarks import asha
    from studies.lr_scan import STUDY as LR_SCAN
    from studies.optimizer_comparison import STUDY as OPTIMIZERS

    for budget in ("smoke", "quick"):
        names = asha.studies_to_run(budget)
        assert "optimizer_comparison" in names and not {"lr_scan", "palindrome", "regularization"} & set(names)
        assert all(importlib.import_module(f"studies.{n}").STUDY.search for n in names)  # what ASHA prunes
    assert asha.configs_per_group(OPTIMIZERS, "quick") == OPTIMIZERS.budgets["quick"].samples
    assert asha.configs_per_group(LR_SCAN, "quick") == 1


def test_asha_comparison_judges_a_pick_the_grid_never_sampled_by_its_own_run():
    import pandas as pd

    from benchmarks.asha import compare
    from benchmarks.study_runs import StudyRun
    from studies.optimizer_comparison import STUDY

    def run(arm, accs):  # accs: {(optimizer, lr): [val_acc per seed]}; Optuna's lrs differ between the runs
        rows = [
            {
                "trial": f"{o}{lr}",
                "config.optimizer": o,
                "config.lr": lr,
                "config.model": "cnn",
                "config.n_train": None,
                "config.seed": s,
                "best.val_acc": a,
                "iterations": 8,
                "wall_time_s": 1.0,
                "stopped_early": False,
            }
            for (o, lr), v in accs.items()
            for s, a in enumerate(v)
        ]
        return StudyRun("optimizer_comparison", arm, "quick", STUDY, pd.DataFrame(rows), 10.0, 9.0, 2)

    grid = run(
        "grid",
        {
            ("adam", 1e-4): [0.8, 0.8],
            ("adam", 3e-3): [0.9, 0.86],
            ("sgd", 1e-4): [0.3, 0.3],
            ("sgd", 0.05): [0.85, 0.85],
        },
    )
    asha = run(
        "asha",
        {
            ("adam", 1e-4): [0.8, 0.8],
            ("adam", 2e-3): [0.88, 0.88],
            ("sgd", 1e-4): [0.3, 0.3],
            ("sgd", 0.02): [0.7, 0.8],
        },
    )
    assert grid.n_trials == 4 and len(grid.trials) == 8 and grid.compute_s == 4.0
    t = compare(grid, asha)
    assert list(t["group"]) == ["optimizer=adam", "optimizer=sgd"]
    assert list(t["grid best"]) == ["lr=0.003", "lr=0.05"] and list(t["asha best"]) == ["lr=0.002", "lr=0.02"]
    assert t["asha pick's grid val_acc"].isna().all() and list(t["match"]) == ["as good", "no"]


def test_report_costs_time_a_trial_of_every_seed_with_the_trainables_parts():
    from benchmarks import overhead

    df = overhead.report_costs(budget="smoke")
    assert list(df["study"]) == ["palindrome", "palindrome", "lr_scan"]
    assert (df[["train s", "eval s", "checkpoint s", "checkpoint MB"]] > 0).all().all()
    assert (df["seeds"] == 1).all() and df["eval %"].between(0, 100).all()


def test_the_evaluation_benchmark_splits_a_reports_measurement_into_its_parts():
    from benchmarks import evaluation

    df = evaluation.costs("smoke", ["lr_scan", "palindrome"])
    image, pal = df.iloc[0], df.iloc[1]
    parts = [f"{p} s" for p in evaluation.PARTS]
    assert image["train s"] > 0 and min(image[["bn s", "train_eval s", "val s", "test s"]]) > 0
    assert image["tests s"] == 0 and abs(image[[*parts, "other s"]].sum() - image["eval s"]) < 1e-6
    assert (
        pal["bn s"] == pal["train_eval s"] == 0 and min(pal[["val s", "test s"]]) > 0
    )  # fresh batches: no training set
    assert df["eval %"].between(0, 100).all()


def test_gpu_packing_asks_for_1_to_8_trials_per_gpu(monkeypatch):
    import pandas as pd

    from benchmarks.study_runs import StudyRun
    from studies.palindrome import STUDY

    asked = []

    def fake_run(name, budget, arm, flags):
        asked.append((name, budget, arm, flags))
        k = int(arm.split("-")[0])
        trials = pd.DataFrame({"iterations": [10] * 24, "wall_time_s": [1.0] * 24})
        return StudyRun(name, arm, budget, STUDY, trials, 3600 / k, 3600 / k, 2)  # k per GPU: k times faster

    monkeypatch.setattr(gpu, "study_run", fake_run)
    df = gpu.packing("smoke")
    assert [a[3][:2] for a in asked] == [("--gpus-per-trial", g) for g in ("1", "0.5", "0.25", "0.125")]
    assert all(a[0] == "palindrome" and a[1] == "smoke" for a in asked)
    assert list(df["trials per GPU"]) == [1, 2, 4, 8] and list(df["trials per hour"]) == [24, 48, 96, 192]
    assert list(df["vs 1 per GPU"]) == [1, 2, 4, 8] and df["GPU busy %"].isna().all()  # done before a first sample


def test_compile_studies_compares_each_claims_verdict_in_both_arms(monkeypatch):
    import pandas as pd

    from benchmarks import compile_studies

    verdicts = {"off": ["reproduced", "inconclusive"], "on": ["reproduced", "contradicted"]}

    def fake_run(name, budget, arm, flags):
        v = verdicts[flags[1]]
        claims = pd.DataFrame({"claim": ["A > B", "C > D"], "verdict": v})
        trials = pd.DataFrame({"trial_id": ["t-0"], "trial": ["t"], "wall_time_s": [15.0]})
        curves = pd.DataFrame({"trial_id": ["t-0", "t-0"], "metric.eval_s": [1.0, 2.0]})
        wall = 10.0 if flags[1] == "off" else 8.0
        return SimpleNamespace(claims=claims, n_trials=4, wall_s=wall, compute_s=15.0, trials=trials, curves=curves)

    monkeypatch.setattr(compile_studies, "study_run", fake_run)
    walls, claims = compile_studies.arms(["palindrome"])
    assert walls.loc[0, "speed-up"] == 1.25 and walls.loc[0, "verdicts equal"] == "NO"
    assert walls.loc[0, "eval % (median trial, off)"] == 20.0  # 3 of the trial's 15 s
    assert list(claims["on"]) == ["reproduced", "contradicted"] and list(claims["off"]) == verdicts["off"]
    verdicts["on"] = verdicts["off"]
    assert compile_studies.arms(["palindrome"])[0].loc[0, "verdicts equal"] == "yes"
