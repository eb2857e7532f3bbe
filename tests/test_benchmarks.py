"""The benchmark functions run for a handful of steps and return sensible numbers (no timing
assertions: speed is what `python -m benchmarks` measures, not what the tests check)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from benchmarks import common, gpu, packed, throughput


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
    images, labels = throughput.cifar_like(256)
    x, y = next(throughput.resident_batches(*throughput.resident(images, labels), torch.Generator().manual_seed(0)))
    ds = throughput.PILImages(images, labels, throughput.naive_transform())
    xn, yn = next(iter(torch.utils.data.DataLoader(ds, batch_size=throughput.BATCH)))
    assert x.shape == xn.shape == (throughput.BATCH, 3, 32, 32) and y.shape == yn.shape
    # not equal in value: torchvision pads crops with black before Normalize, datasets.augment with
    # zeros after it (the mean), and the random draws differ
    assert abs(x.mean() - xn.mean()) < 0.5 and abs(x.std() - xn.std()) < 0.3


def test_gpu_epochs_run_on_the_cpu_too(small_batches):
    df = gpu.epochs("cpu", n_train=64, steps=1, warmup=0, workers=0)
    assert len(df) == 1 + len(gpu.variants()) and (df["samples/s"] > 0).all() and df["loss"].notna().all()


def test_packed_training_computes_what_separate_trainings_do():
    r = packed.compare(K=2, steps=3, hidden=(32,))
    assert r["packed samples/s"] > 0 and r["separate samples/s"] > 0
    assert r["max |loss diff|"] < 1e-4


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

    def run(arm, accs):  # accs: {(cell, T): [val_acc per seed]}
        rows = [{"config.cell": c, "config.seq_len": T, "config.seed": s, "best.val_acc": a,
                 "iterations": 20, "wall_time_s": 1.0, "stopped_early": False}
                for (c, T), v in accs.items() for s, a in enumerate(v)]
        return StudyRun("palindrome", arm, "quick", STUDY, pd.DataFrame(rows), 10.0, 9.0, 2)

    grid = run("grid", {("rnn", 5): [1.0, 1.0], ("lstm", 5): [1.0, 0.998], ("rnn", 20): [0.2, 0.1],
                        ("lstm", 20): [0.9, 0.7]})
    asha = run("asha", {("rnn", 5): [0.9, 0.9], ("lstm", 5): [1.0, 1.0], ("rnn", 20): [0.5, 0.5],
                        ("lstm", 20): [0.3, 0.2]})
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
            "\n".join(json.dumps({"timestamp": ts, "time_this_iter_s": it}) for ts, it in lines))
    assert _trial_span(tmp_path) == 130 - 95


def test_asha_replay_stops_the_slow_configs_and_keeps_the_grid_whole_without_early_stopping():
    import pandas as pd

    from benchmarks.asha import frontier, replay
    from benchmarks.study_runs import StudyRun
    from studies.lr_scan import STUDY

    lrs, its = [0.1, 0.01, 0.001], 8
    budget = STUDY.budgets["quick"]
    study = replace(STUDY, budgets={"quick": replace(budget, iterations=its, grid=[{"lr": lr} for lr in lrs])})
    # lr 0.01 learns fastest and ends best; 0.1 and 0.001 stay behind at every iteration
    acc = {0.1: 0.3, 0.01: 0.9, 0.001: 0.5}
    curves = pd.DataFrame([{"config.lr": lr, "config.seed": s, "iteration": i, "time_s": float(i),
                            "metric.val_acc": acc[lr] * i / its} for lr in lrs for s in (0, 1)
                           for i in range(1, its + 1)])
    trials = curves.groupby(["config.lr", "config.seed"], as_index=False).agg(
        **{"best.val_acc": ("metric.val_acc", "max"), "iterations": ("iteration", "max")})
    grid = StudyRun("lr_scan", "grid", "quick", study, trials, 1.0, 1.0, 2, curves=curves)

    whole = replay(grid, grace=its, reduction=2)
    assert whole["iterations"].tolist() == [its] * 6  # no rung before the end: the grid itself
    t = replay(grid, grace=2, reduction=2).set_index(["config.lr", "config.seed"])
    # started in grid order, two at a time: 0.1 passes its rungs first (nothing recorded yet), 0.01
    # beats it; 0.001's first seed falls below the median recorded at iteration 2 and stops there,
    # its second seed equals the new median (a tie goes on) and stops at the next rung, iteration 4
    assert t.loc[(0.1, 0), "iterations"] == t.loc[(0.01, 0), "iterations"] == its
    assert t.loc[(0.001, 0), "iterations"] == 2 and t.loc[(0.001, 1), "iterations"] == 4
    assert t["iterations"].sum() < 6 * its
    f = frontier(grid, (2, 2), graces=(2, its), reductions=(2,))
    assert f["same best"].all() and list(f["the budget's"]) == ["yes", ""]
    assert f["iterations / grid"].iloc[0] == t["iterations"].sum() / (6 * its) and f["iterations / grid"].iloc[1] == 1


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
