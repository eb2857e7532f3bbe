"""The toy MLP study: the NumPy MLP's forward and backward against torch autograd, the toy data, the
study's rules and tables, and its smoke budget on real Ray Tune."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import datasets
from analysis.verdicts import CONTRADICTED, INCONCLUSIVE, REPRODUCED, Sample, about_equal
from models import MLP, NumpyMLP
from models.numpy_mlp import softmax_cross_entropy
from studies import toy_mlp_analysis as A

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


def _twins(hidden, seed=0, d_in=2):
    """A torch MLP and a NumPy MLP with the same weights (random, so that no ReLU is dead by design)."""
    torch.manual_seed(seed)
    ref, mine = MLP(d_in, hidden, 2), NumpyMLP(d_in, hidden, 2)
    with torch.no_grad():
        for p, q in zip(ref.parameters(), mine.parameters(), strict=True):
            p.normal_()
            q.copy_(p)
    return ref, mine


@pytest.mark.parametrize("hidden", [(20,), (), (7, 5)])
def test_numpy_backward_matches_torch_autograd(hidden):
    ref, mine = _twins(hidden, d_in=3)
    x = torch.randn(64, 3, dtype=torch.float32)
    y = torch.randint(0, 2, (64,))
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    losses = [F.cross_entropy(m(v), y) for m, v in zip((ref, mine), xs)]
    torch.testing.assert_close(losses[1], losses[0])
    for loss in losses:
        loss.backward()
    for p, q in zip(ref.parameters(), mine.parameters()):
        assert q.grad is not None and q.grad.abs().sum() > 0
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xs[1].grad, xs[0].grad, rtol=1e-5, atol=1e-6)  # the input's gradient too


@pytest.mark.parametrize("hidden", [(20,), ()])
def test_packed_numpy_mlps_give_each_models_outputs_and_gradients(hidden):
    """The seeds of a trial stacked (models.packed): the NumPy passes with a leading seed axis."""
    from models.packed import PackedNumpyMLP, pack

    torch.manual_seed(0)
    models = [NumpyMLP(2, hidden=hidden) for _ in range(3)]
    packed = pack(models)
    assert isinstance(packed, PackedNumpyMLP)
    x, y = torch.randn(3, 50, 2), torch.randint(0, 2, (3, 50))
    logits = packed(x)
    F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").backward()
    for k, m in enumerate(models):
        one = m(x[k])
        torch.testing.assert_close(logits[k], one, rtol=1e-5, atol=1e-6)
        F.cross_entropy(one, y[k], reduction="sum").backward()
        for i, p in enumerate(m.params):
            torch.testing.assert_close(getattr(packed, f"p{i}").grad[k], p.grad, rtol=1e-5, atol=1e-5)


def test_numpy_softmax_cross_entropy_and_its_gradient():
    logits = torch.randn(32, 2, dtype=torch.float64, requires_grad=True) * 30  # large: the max shift matters
    logits.retain_grad()
    y = torch.randint(0, 2, (32,))
    loss = F.cross_entropy(logits, y)
    loss.backward()
    mine, grad = softmax_cross_entropy(logits.detach().numpy(), y.numpy())
    assert np.isclose(mine, loss.item()) and np.allclose(grad, logits.grad.numpy())


def test_same_seed_same_initial_weights_and_a_linear_model():
    for hidden in [(20,), ()]:
        torch.manual_seed(5)
        ref = MLP(2, hidden, 2)
        torch.manual_seed(5)
        mine = NumpyMLP(2, hidden, 2)
        assert [p.shape for p in mine.parameters()] == [p.shape for p in ref.parameters()]
        assert all(torch.equal(p, q) for p, q in zip(ref.parameters(), mine.parameters()))
    assert len(list(NumpyMLP(2, (), 2).parameters())) == 2  # hidden=(): logistic regression


def test_the_shared_loop_trains_both_implementations_alike():
    from studies.engine.config import full_config
    from studies.engine.loop import make_replicas, make_unit, measure, train_block
    from studies.engine.tasks import TOY

    c = full_config(
        {
            "task": "toy",
            "model": "mlp",
            "hidden": (20,),
            "dataset": "moons",
            "optimizer": "sgd",
            "momentum": 0.0,
            "lr": 0.3,
            "steps_per_report": 200,
            "seeds": [3],
        },
        TOY,
    )
    cpu = torch.device("cpu")
    out = {}
    for impl in ("numpy", "torch"):
        ci = {**c, "impl": impl}
        task = TOY
        [r] = make_replicas(ci, task, task.load(ci, cpu), cpu)
        assert r.seed == 3
        loss, acc, steps = train_block(make_unit(ci, [r], False), ci, task)
        out[impl] = (r, measure(r, ci, task, loss, acc))
        assert steps == 200 and isinstance(r.model, NumpyMLP if impl == "numpy" else MLP)
    (rn, mn), (rt, mt) = out["numpy"], out["torch"]
    for p, q in zip(rt.model.parameters(), rn.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)
    assert mn["test_acc"] == mt["test_acc"] and mt["test_acc"] > 0.9 and mt["train_acc"] > 0.9


def test_toy_data_is_a_pure_function_of_name_and_seed():
    for name in datasets.TOY_DATASETS:
        a, b = datasets.toy(name, 0), datasets.toy(name, 0)
        assert all(torch.equal(getattr(a, k), getattr(b, k)) for k in ("train_x", "val_x", "test_y"))
        n = (96, 24, 30) if name == "iris" else (800, 200, 200)
        assert (len(a.train_x), len(a.val_x), len(a.test_x)) == n and a.train_x.shape[1] == 2
        assert set(a.train_y.tolist()) == {0, 1} and a.train_x.dtype == torch.float32
        if name != "iris":  # held out: no training point in the test set (iris repeats flowers: 0.1 cm steps)
            assert not {tuple(r) for r in a.train_x.tolist()} & {tuple(r) for r in a.test_x.tolist()}
    assert not torch.equal(datasets.toy("moons", 0).test_x, datasets.toy("moons", 1).test_x)  # a sample per seed
    assert datasets.class_names("toy") == ("0", "1")
    with pytest.raises(ValueError, match="unknown toy dataset 'moon'"):
        datasets.toy("moon", 0)


def test_numpy_impl_refuses_dropout():
    from studies.engine.config import full_config
    from studies.engine.tasks import build_model

    with pytest.raises(ValueError, match="impl=numpy has no dropout"):
        build_model(full_config({"model": "mlp", "impl": "numpy", "dropout": 0.5}), (2,), 2)


def test_numpy_and_torch_agree_by_the_equivalence_rule():
    s = lambda label, v: Sample(label, np.array(v, dtype=float))
    t = lambda a, b: about_equal(s("a", a), s("b", b), A.TOL).verdict
    assert t([0.9, 0.905, 0.91], [0.9, 0.905, 0.91]) == REPRODUCED
    assert t([0.9, 0.95, 0.92], [0.9, 0.95, 0.92]) == INCONCLUSIVE  # 3 seeds this far apart show no equivalence
    assert t([0.99, 0.98, 0.99], [0.90, 0.91, 0.92]) == CONTRADICTED
    # means 0.03 apart: neither shown equal within 0.02 nor shown apart by more
    assert t([0.90] * 5 + [0.96], [0.95] * 5 + [0.89]) == INCONCLUSIVE
    assert t([0.9], [0.9, 0.9]) == INCONCLUSIVE


def _trials() -> pd.DataFrame:
    """Two lrs of each setting on one dataset, 3 seeds each: lr 0.3 is best for the MLPs."""
    rows = []
    for impl, hidden in (("numpy", "20"), ("torch", "20"), ("torch", "")):
        for lr, acc in ((0.01, 0.8), (0.3, 0.99 if hidden else 0.5)):
            for seed in range(3):
                rows.append(
                    {
                        "config.dataset": "circles",
                        "config.impl": impl,
                        "config.hidden": hidden,
                        "config.lr": lr,
                        "config.seed": seed,
                        "status": "completed",
                        "diverged": False,
                        "metric.val_acc": acc,
                        "metric.val_loss": 1 - acc,
                        "metric.test_acc": acc + 0.001 * seed,
                    }
                )
    return pd.DataFrame(rows)


def test_views_take_the_hand_run_lr_and_each_settings_tuned_lr():
    t, m = _trials(), {"search_first": {"lr": 0.01}, "nuisance": ["lr"], "metric": "val_acc"}
    assert list(A.setting(t).unique()) == ["numpy MLP", "torch MLP", "torch linear"]
    assert A.tuned_lr(t, m, "circles", "torch MLP") == 0.3 and A.tuned_lr(t, m, "circles", "torch linear") == 0.01
    s = A.view_summary(t, m).set_index(["view", "config.setting"])
    assert s.loc[("tuned lr", "numpy MLP"), "lr"] == 0.3 and s.loc[("hand-run lr", "numpy MLP"), "lr"] == 0.01
    assert s.loc[("tuned lr", "torch MLP"), "metric.test_acc.n"] == 3
    table = A.reference_table(t, m)
    assert table["dataset"].tolist() == ["circles"] and table["hand-run NumPy / PyTorch"].iloc[0] == "0.92 / 0.96"


@pytest.mark.slow
def test_toy_mlp_smoke(ray_session, tmp_path):
    from test_integration import run_smoke

    t, c, r = run_smoke("toy_mlp", tmp_path)
    assert set(zip(t["config.dataset"], t["config.impl"])) == {
        (d, i) for d in ("moons", "circles") for i in ("numpy", "torch")
    }
    first = t[np.isclose(t["config.lr"], 1e-2)]  # the hand-run lr: tried first, always to the end
    assert (first["status"] == "completed").all() and len(first) == 8
    assert (t["step"][t["status"] == "completed"] == 300).all()  # 3 reports of 100 full-batch steps
    pairs = first.pivot_table(index=["config.dataset", "config.seed"], columns="config.impl", values="metric.test_acc")
    assert np.allclose(pairs["numpy"], pairs["torch"], atol=0.011)  # same weights, same data: same training
    assert (r.path / "figures" / "decision_boundaries.png").is_file()
    from studies.toy_mlp_analysis import boundaries_figure

    drawn = [ax for ax in boundaries_figure(r.trials, r.manifest).axes if ax.axison]
    assert (
        len(drawn) == 2 * 4
    )  # datasets x (NumPy, PyTorch) x (hand-run lr: a search seed, tuned lr: a confirmation seed)
    assert (r.path / "figures" / "accuracy_per_dataset.png").is_file()
    assert "hand-written forward and backward" in (r.path / "report.md").read_text()
