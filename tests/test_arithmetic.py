"""The arithmetic task (datasets/arithmetic.py) and what the training loop does with it: expressions that
evaluate to their labels, the training sets' proportions, held-out sets fixed per seed, the embedding
of the recurrent classifier, and the step-to-step loss variance. No Ray here."""

from __future__ import annotations

import re

import pytest
import torch

from datasets import arithmetic as A
from models import RecurrentClassifier

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


def _operands(text: str) -> list[int]:
    return [int(v) for v in re.split(r"[+-]", text)]


@pytest.mark.parametrize("name", list(A.RANGES))
def test_expressions_evaluate_to_their_labels_within_their_operand_range(name):
    low, high = A.RANGES[name]
    x, y = A.expressions(2000, low, high, A.generator(0, 3))
    assert x.shape == (2000, A.MAX_LEN) and x.dtype == torch.uint8 and y.dtype == torch.long
    texts = A.decode(x)
    for text, label in zip(texts, y.tolist()):
        assert re.fullmatch(r"\d{1,2}[+-]\d{1,2}[+-]\d{1,2}", text), text
        assert eval(text) == label - A.OFFSET  # noqa: S307 (digits and + - only, checked above)
        assert all(low <= v <= high for v in _operands(text))
    assert 0 <= y.min() and y.max() < A.NUM_CLASSES
    ops = torch.tensor([_operands(t) for t in texts])
    assert ops.min() == low and ops.max() == high  # the whole range is drawn
    assert {t[i] for t in texts for i in range(len(t)) if t[i] in "+-"} == {"+", "-"}


def test_expressions_are_left_padded_so_the_last_step_is_the_last_digit():
    x, _ = A.expressions(500, 0, 99, A.generator(1, 5))
    for row in x.tolist():
        pads = [t == A.PAD for t in row]
        assert pads == sorted(pads, reverse=True)  # every PAD before every character
        assert 1 <= row[-1] <= 10  # a digit
    lengths = (x != A.PAD).sum(1)
    assert set(lengths.tolist()) == {6, 7, 8}  # mixed: "1+23-4" .. "12+34-56" (all three single-digit: 1 in 1000)
    assert ((A.expressions(50, 0, 9, A.generator(1, 3))[0] != A.PAD).sum(1) == 5).all()  # "1+2-3"


def test_extreme_results_have_the_first_and_last_class():
    ops = {"0-99-99": 0, "99+99+99": A.NUM_CLASSES - 1}
    assert A.CLASSES[0] == "-198" and A.CLASSES[-1] == "297" and len(A.CLASSES) == A.NUM_CLASSES
    for text, cls in ops.items():
        assert eval(text) == int(A.CLASSES[cls])  # noqa: S307


def test_training_sets_have_the_hand_run_proportions():
    assert A.training_parts("A") == {"single": 50_000, "two": 50_000}
    assert A.training_parts("B") == {"two": 1_000_000}
    assert A.training_parts("A", 0.1) == {"single": 5_000, "two": 5_000}
    assert A.training_parts("B", 0.1) == {"two": 100_000}
    a = A.sets("A", 0.02, 256, seed=0)["train"]
    b = A.sets("B", 0.002, 256, seed=0)["train"]
    ops_a = torch.tensor([_operands(t) for t in A.decode(a[0])])
    ops_b = torch.tensor([_operands(t) for t in A.decode(b[0])])
    single = (ops_a <= 9).all(1)
    assert len(ops_a) == 2000 and single.sum() == 1000 and (ops_a[~single] >= 10).all()  # half and half
    assert not single[:1000].all()  # shuffled together, not in blocks
    assert len(ops_b) == 2000 and (ops_b >= 10).all()


def test_validation_follows_the_training_set_and_the_test_sets_do_not_depend_on_it():
    a, b = A.sets("A", 0.01, 512, seed=4), A.sets("B", 0.05, 512, seed=4)
    val_a = torch.tensor([_operands(t) for t in A.decode(a["val"][0])])
    assert (val_a <= 9).all(1).sum() == 256  # A's proportions
    assert all(min(_operands(t)) >= 10 for t in A.decode(b["val"][0]))  # B: two-digit only
    for k in A.RANGES:  # the same expressions whatever the training set and its size
        assert torch.equal(a[k][0], b[k][0]) and torch.equal(a[k][1], b[k][1])


def test_held_out_sets_are_fixed_per_seed():
    first, again, other = (A.sets("A", 0.01, 256, seed=s) for s in (2, 2, 3))
    for k in ("train", "val", "test", *A.RANGES):
        assert torch.equal(first[k][0], again[k][0]) and torch.equal(first[k][1], again[k][1])
        assert not torch.equal(first[k][0], other[k][0])
    assert not torch.equal(first["val"][0], first["test"][0])  # separate streams


def test_classifier_with_a_vocabulary_embeds_tokens_and_the_plain_one_is_unchanged():
    x, _ = A.expressions(16, 0, 99, A.generator(0, 0))
    m = RecurrentClassifier("gru", "fused", hidden_size=24, num_classes=A.NUM_CLASSES, vocab=A.VOCAB, embed=8)
    assert m(x).shape == (16, A.NUM_CLASSES) and m.embed.weight.shape == (A.VOCAB, 8)
    plain = RecurrentClassifier("lstm", "fused", hidden_size=16)
    assert plain.embed is None and "embed.weight" not in plain.state_dict()
    torch.manual_seed(0)
    a = RecurrentClassifier("lstm", "fused", hidden_size=16)
    torch.manual_seed(0)
    b = RecurrentClassifier("lstm", "fused", hidden_size=16, vocab=None, embed=99)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def _trial(**config):
    """A trial's config over every default, the arithmetic task, and the replica of its first seed."""
    from studies.engine.config import full_config
    from studies.engine.loop import make_replicas
    from studies.engine.tasks import ARITHMETIC

    c = full_config(
        {
            "task": "arithmetic",
            "model": "rnn",
            "hidden_size": 16,
            "embed": 8,
            "train_scale": 0.01,
            "n_eval": 128,
            "seeds": (0,),
            **config,
        },
        ARITHMETIC,
    )
    cpu = torch.device("cpu")
    return c, ARITHMETIC, make_replicas(c, ARITHMETIC, ARITHMETIC.load(c, cpu), cpu)[0]


def test_an_iteration_trains_on_samples_per_report_expressions_and_measures_each_test_set():
    from studies.engine import loop

    c, task, r = _trial(samples_per_report=640, batch_size=64)
    assert sum(len(y) for _, y in task.batches(c, r.data, r.gen)) == 640
    c2, _, _ = _trial(samples_per_report=None, batch_size=100)
    assert sum(len(y) for _, y in task.batches(c2, r.data, r.gen)) == 1000  # one epoch of A at scale 0.01
    loss, acc, steps = loop.train_block(loop.make_unit(c, [r], False), c, task)
    assert steps == 10 and r.step_loss_var > 0
    m = loop.measure(r, c, task, loss, acc)
    assert {"test_acc_single", "test_acc_two", "test_acc_mixed", "train_loss_var"} <= set(m)
    assert not any(k.startswith("test_acc_") and k.split("_")[-1].isdigit() for k in m)  # no per-result classes
    assert all(0 <= m[k] <= 1 for k in m if "acc" in k)


def test_step_loss_variance_is_the_sampling_noise_of_a_batch_mean():
    """With the weights held still (lr ~ 0), the loss of a batch of b expressions varies from step to step
    like a mean of b losses: about 16 times more at batch 8 than at batch 128."""
    from studies.engine import loop

    var = {}
    for bs in (8, 128):
        c, task, r = _trial(batch_size=bs, lr=1e-12, samples_per_report=128 * 24)
        loop.train_block(loop.make_unit(c, [r], False), c, task)
        var[bs] = r.step_loss_var
    assert 8 < var[8] / var[128] < 32


def test_best_lr_per_batch_size_and_its_exponent_from_a_known_optimum():
    """Synthetic final accuracies peaked (a parabola in log lr) at lr* = 1e-3 x (batch / 8)^0.5: the estimate
    refines the grid's best lr to the peak and the fitted exponent is 0.5, seed by seed."""
    import numpy as np
    import pandas as pd

    from studies.batch_size_analysis import best_lr_data, exponents

    rows = []
    for bs in (8, 32, 128):
        peak = np.log10(1e-3 * (bs / 8) ** 0.5)
        for lr in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2):
            for seed in (0, 1, 2):
                acc = 0.8 - 0.1 * (np.log10(lr) - peak) ** 2 + 0.001 * seed
                rows.append(
                    {
                        "config.batch_size": bs,
                        "config.lr": lr,
                        "config.seed": seed,
                        "metric.val_acc": acc,
                        "status": "completed",
                    }
                )
    d = best_lr_data(pd.DataFrame(rows), {"metric": "val_acc", "mode": "max"})
    assert len(d) == 9 and not d["edge"].any()
    for bs, g in d.groupby("batch_size"):
        assert np.allclose(g["best_lr"], 1e-3 * (bs / 8) ** 0.5, rtol=1e-6)
    assert np.allclose(exponents(d)["exponent"], 0.5)


def test_a_best_lr_at_the_edge_of_the_grid_is_flagged_and_stays_within_it():
    import numpy as np
    import pandas as pd

    from studies.batch_size_analysis import best_lr_data

    lrs = (1e-3, 3e-3, 1e-2, 3e-2)
    rows = [
        {"config.batch_size": 128, "config.lr": lr, "config.seed": 0, "status": "completed", "metric.val_acc": acc}
        for lr, acc in zip(lrs, (0.1, 0.18, 0.31, 0.32))
    ]  # still rising at the top
    d = best_lr_data(pd.DataFrame(rows), {"metric": "val_acc", "mode": "max"}).iloc[0]
    assert d["edge"] and np.isclose(d["grid_lr"], 3e-2) and 1e-2 < d["best_lr"] <= 3e-2 * (1 + 1e-9)  # in the grid
    assert np.isclose(d["best_lr"], 0.01926, rtol=1e-3)  # the vertex through (3e-3, 0.18), (1e-2, 0.31), (3e-2, 0.32)


def test_a_claim_about_what_b_learned_needs_b_to_have_learned_its_two_digit_expressions():
    import pandas as pd

    from studies.arithmetic_shift_analysis import CLAIMS

    def trials(two: float) -> pd.DataFrame:
        rows = []
        for train, cell, seed in ((t, c, s) for t in "AB" for c in ("rnn", "gru", "lstm") for s in range(3)):
            own = {"single": 0.99 if train == "A" else 0.01, "two": two if train == "B" else 0.1, "mixed": 0.05}
            rows.append(
                {
                    "config.train_set": train,
                    "config.cell": cell,
                    "config.lr": 1e-2,
                    "config.seed": seed,
                    "status": "completed",
                    "metric.val_acc": 0.5,
                    "metric.test_acc": 0.5,
                    **{f"metric.test_acc_{k}": v + 0.001 * seed for k, v in own.items()},
                }
            )
        return pd.DataFrame(rows)

    m = {"scientific": ["train_set", "cell"], "nuisance": ["lr"], "metric": "val_acc", "budget": "quick"}
    claim = next(c for c in CLAIMS if c.text.startswith("Trained on B"))
    unlearned = claim.check(trials(0.16), None, m)  # above single-digit, but far from having learned the task
    assert unlearned.verdict == "inconclusive" and "not learned (below 0.5)" in unlearned.why
    assert claim.check(trials(0.85), None, m).verdict == "reproduced"
