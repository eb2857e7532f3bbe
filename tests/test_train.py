"""The trainable without Ray: one trial trains all seeds of a configuration, each exactly as if it
ran alone; BatchNorm statistics are refreshed before evaluation; the LSTM's forget-gate bias."""

from __future__ import annotations

import contextlib
import shutil
import tempfile

import numpy as np
import pytest
import ray
import ray.tune  # noqa: F401  (the trainable's `from ray import tune` reads this attribute: see patch_tune)
import torch

from models import VGG, RecurrentClassifier
from studies.engine import loop as train_mod
from studies.engine import storage  # noqa: F401 (imported while ray.tune is real: the tests stand a fake in for it)
from studies.engine.task import folded, refresh_bn


class _Tune:
    """Stands in for ray.tune inside the trainable (see patch_tune): collects the reports."""

    def __init__(self):
        self.reports = []

    def get_checkpoint(self):
        return None

    def report(self, metrics, checkpoint=None):
        self.reports.append(dict(metrics))

    class Checkpoint:
        @staticmethod
        def from_directory(path):
            return None


def patch_tune(monkeypatch, fake) -> None:
    """The trainable imports `ray.tune` when it runs (`from ray import tune`): `fake` stands in for it."""
    monkeypatch.setattr(ray, "tune", fake)


BASE = {
    "task": "palindrome",
    "model": "rnn",
    "cell": "lstm",
    "seq_len": 5,
    "steps_per_report": 15,
    "iterations": 3,
    "n_eval": 256,
    "batch_size": 32,
    "checkpoint_every": 2,
}


def _run(monkeypatch, **config) -> list[dict]:
    fake = _Tune()
    patch_tune(monkeypatch, fake)
    train_mod.train({**BASE, **config})
    return fake.reports


def test_a_packed_trial_trains_each_seed_as_if_alone(monkeypatch):
    packed = _run(monkeypatch, seeds=[0, 1])
    alone = {s: _run(monkeypatch, seeds=[s]) for s in (0, 1)}
    assert len(packed) == 3
    for s in (0, 1):
        for k in ("train_loss", "val_acc", "val_loss", "test_acc"):
            np.testing.assert_allclose(
                [r[f"seed{s}/{k}"] for r in packed],
                [r[f"seed{s}/{k}"] for r in alone[s]],
                rtol=1e-5,
                atol=1e-6,
                err_msg=f"seed {s} {k}",
            )
    for r in packed:  # what ASHA and Optuna see: the mean over the seeds
        assert r["val_acc"] == pytest.approx((r["seed0/val_acc"] + r["seed1/val_acc"]) / 2)
        assert r["step"] == packed[0]["step"] * (packed.index(r) + 1)
    assert (
        packed[0]["seed0/val_acc"] != packed[0]["seed1/val_acc"]
        or packed[0]["seed0/train_loss"] != packed[0]["seed1/train_loss"]
    )  # the seeds differ


PACKED_CASES = {  # every model that packs, with the per-seed penalty and clipping on
    "rnn": dict(cell="rnn", seq_len=6, clip=0.5),
    "lstm": dict(cell="lstm", seq_len=6, clip=0.5, forget_bias=1.0),
    "gru": dict(cell="gru", seq_len=6, clip=0.5, impl="scratch"),
    "mlp": dict(
        task="image",
        model="mlp",
        hidden=(32, 16),
        dataset="digits",
        n_train=512,
        batch_size=64,
        l2=1e-3,
        clip=1.0,
        lr_schedule="step",
        lr_step_size=1,
        lr_gamma=0.5,
    ),
    "numpy mlp": dict(
        task="toy",
        model="mlp",
        impl="numpy",
        hidden=(20,),
        dataset="moons",
        optimizer="sgd",
        lr=0.5,
        batch_size=200,
        clip=1.0,
    ),
}


@pytest.mark.parametrize("case", PACKED_CASES)
def test_a_packed_model_trains_each_seed_as_k_separate_runs(monkeypatch, case):
    """pack="on": the seeds as one batched model (models.packed); pack="off": one model per seed."""
    packed = _run(monkeypatch, seeds=[0, 1, 2], pack="on", **PACKED_CASES[case])
    for s in (0, 1, 2):
        alone = _run(monkeypatch, seeds=[s], pack="off", **PACKED_CASES[case])
        for k in ("train_loss", "train_acc", "val_loss", "val_acc", "test_acc"):
            np.testing.assert_allclose(
                [r[f"seed{s}/{k}"] for r in packed],
                [r[f"seed{s}/{k}"] for r in alone],
                rtol=1e-4,
                atol=1e-5,
                err_msg=f"{case} seed {s} {k}",
            )
    assert len({packed[-1][f"seed{s}/val_loss"] for s in (0, 1, 2)}) == 3  # three different seeds
    if case == "mlp":  # StepLR halves the lr after every iteration
        assert [r["lr_current"] for r in packed] == [1e-3, 5e-4, 2.5e-4]


class _Saved:
    """A checkpoint kept as a copy of the trainable's directory (what tune.Checkpoint holds)."""

    def __init__(self, path):
        self.path = tempfile.mkdtemp()
        shutil.copytree(path, self.path, dirs_exist_ok=True)

    @contextlib.contextmanager
    def as_directory(self):
        yield self.path


@pytest.mark.parametrize("pack", ["on", "off"])
def test_a_resumed_trial_goes_on_as_if_never_stopped(monkeypatch, pack):
    """Resume from the checkpoint of iteration 2 (every seed's weights, the pack's optimizer and
    lr schedule, the generators): iterations 3-4 report what the uninterrupted run reported."""
    config = dict(cell="gru", seeds=[0, 1], iterations=4, pack=pack, lr_schedule="step", lr_step_size=1, lr_gamma=0.5)
    saved = {}
    fake = _Tune()
    fake.Checkpoint = type("Checkpoint", (), {"from_directory": staticmethod(_Saved)})
    fake.report = lambda metrics, checkpoint=None: (
        fake.reports.append(dict(metrics)),
        checkpoint and saved.setdefault(len(fake.reports), checkpoint),
    )
    patch_tune(monkeypatch, fake)
    train_mod.train({**BASE, **config})
    whole, fake.reports = fake.reports, []
    fake.get_checkpoint = lambda: saved[2]
    train_mod.train({**BASE, **config})
    resumed = fake.reports
    assert len(resumed) == 2 and resumed[-1]["restarts"] == 1
    for k in ("seed0/val_loss", "seed1/val_loss", "train_loss", "lr_current", "step"):
        np.testing.assert_allclose([r[k] for r in resumed], [r[k] for r in whole[2:]], rtol=1e-5, err_msg=k)


def test_a_trial_whose_seeds_all_diverge_stops_at_that_report(monkeypatch):
    reports = _run(
        monkeypatch,
        seeds=[0, 1],
        lr=1e8,
        optimizer="sgd",
        task="image",
        model="mlp",
        hidden=(64,),
        dataset="digits",
        n_train=256,
        batch_size=64,
    )
    ends = {s: reports[-1][f"seed{s}/diverged_at"] for s in (0, 1)}
    assert all(ends.values()) and reports[-1]["diverged"]  # both diverge at once: the trial stops there
    assert len(reports) == max(ends.values())


def test_refresh_bn_sets_the_running_statistics_to_the_data_batches():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    x = torch.randn(64, 1, 8, 8) * 3 + 2
    refresh_bn(model, x, batch_size=64)
    with torch.no_grad():
        h = model[0](x)
    torch.testing.assert_close(model[1].running_mean, h.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model[1].running_var, h.var(dim=(0, 2, 3), unbiased=True), rtol=1e-3, atol=1e-4)
    assert model[1].momentum == 0.1 and model.training  # put back as it was


def test_folded_measures_the_same_function_with_batchnorm_in_the_convolutions():
    torch.manual_seed(0)
    model = VGG(in_channels=1, width=0.125)
    refresh_bn(model, torch.randn(64, 1, 8, 8) * 2 + 1, batch_size=32)
    x = torch.randn(16, 1, 8, 8)
    f = folded(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in f.modules())
    assert model.training and sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 8  # untouched
    with torch.inference_mode():
        want = model.eval()(x)
        torch.testing.assert_close(f(x), want, rtol=1e-4, atol=1e-5)
    batch_stats = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2, track_running_stats=False))
    assert folded(batch_stats) is batch_stats  # eval mode uses the batch's statistics: nothing to fold


@pytest.mark.parametrize("impl", ["fused", "scratch"])
def test_forget_bias_sets_the_lstm_forget_gate(impl):
    m = RecurrentClassifier("lstm", impl, 1, 16, 10, forget_bias=1.0)
    b = m.rnn.bias_ih_l0.detach() + m.rnn.bias_hh_l0.detach()
    torch.testing.assert_close(b[16:32], torch.ones(16))
    assert not torch.allclose(b[:16], torch.ones(16))  # the other gates keep torch's init


@pytest.mark.parametrize("every, tested", [(1, [1, 2, 3, 4]), (3, [3, 4]), (None, [4])])
def test_the_test_sets_are_measured_every_test_every_th_report_and_the_last(monkeypatch, every, tested):
    image = dict(task="image", model="mlp", hidden=(16,), dataset="digits", n_train=128, batch_size=64)
    reports = _run(monkeypatch, **image, iterations=4, test_every=every)
    assert [r["training_iteration"] for r in reports if "test_acc" in r] == tested
    assert all("val_acc" in r and "seed0/test_acc_3" in r for r in reports if r["training_iteration"] in tested)
    assert not any("seed0/test_acc_3" in r for r in reports if r["training_iteration"] not in tested)
    assert all(r["seed0/eval_s"] > 0 for r in reports)  # each seed's measurement, timed
    # the reports in between are the same training: the test sets are only measured, never trained on
    every_report = _run(monkeypatch, **image, iterations=4, test_every=1)
    assert [r["val_loss"] for r in reports] == [r["val_loss"] for r in every_report]
