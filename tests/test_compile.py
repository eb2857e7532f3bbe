"""`compile="on"`: the training step's forward, loss and backward through torch.compile give the eager
step's numbers, for each model family (a packed recurrent cell, an MLP, a CNN), a few steps each."""

from __future__ import annotations

import numpy as np
import pytest
from test_train import _run

from studies.engine import loop

CASES = {
    "packed gru": dict(cell="gru", seq_len=5, clip=0.5, seeds=[0, 1], pack="on", steps_per_report=4),
    "mlp, l2 and a step schedule": dict(
        task="image",
        model="mlp",
        hidden=(16,),
        dataset="digits",
        n_train=256,
        batch_size=64,
        l2=1e-3,
        lr_schedule="step",
        lr_step_size=1,
        lr_gamma=0.5,
    ),
    # SGD: Adam's first steps move every weight by about lr whatever its gradient's size, so a last-bit
    # difference in a gradient near 0 (a convolution's summation order) would show as a difference of lr;
    # a small lr: the eager convolutions run channels_last and the compiled ones need not, and at lr 0.05
    # the layouts' last-bit differences grow to 3e-3 of the loss within 4 steps (at 0.002: 1e-7)
    "cnn": dict(
        task="image", model="cnn", dataset="digits", n_train=128, batch_size=64, width=0.25, optimizer="sgd", lr=0.002
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_the_compiled_step_gives_the_eager_numbers(monkeypatch, case):
    calls = []

    def counted(dev):
        step = loop.torch.compile(loop.forward_loss, dynamic=False)
        return lambda *a: calls.append(1) or step(*a)

    monkeypatch.setattr(loop, "compiled", counted)
    eager = _run(monkeypatch, compile="off", iterations=2, **CASES[case])
    assert not calls
    fused = _run(monkeypatch, compile="on", iterations=2, **CASES[case])
    assert calls and len(fused) == len(eager) == 2  # every step went through it
    for k in ("train_loss", "train_acc", "val_loss", "val_acc", "test_acc"):
        np.testing.assert_allclose([r[k] for r in fused], [r[k] for r in eager], rtol=1e-4, atol=1e-5, err_msg=k)


def test_auto_leaves_the_step_eager_on_the_cpu():
    cpu = loop.torch.device("cpu")
    assert not loop.compiles({"compile": "auto"}, cpu) and loop.compiles({"compile": "on"}, cpu)
