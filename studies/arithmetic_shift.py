"""Arithmetic under a distribution shift (docs/references.md#arithmetic_shift): what a recurrent model learns from
its training distribution. Expressions of three integers joined by + and - ("12+47-30"), read
character by character (Embedding -> RNN, GRU or LSTM -> Linear), classified over every possible
result (-198 .. 297); generated on the trial's device (datasets/arithmetic.py).

Scientific: training set x cell (rnn, gru, lstm). A = 50k expressions of single-digit operands
(0-9) + 50k of two-digit operands (10-99); B = 1M of two-digit operands (`train_scale` shrinks both,
same proportions). Nuisance: lr, Optuna (log-uniform 1e-4 .. 3e-2, 1e-2 first) per training set and
cell, on the validation accuracy: held-out expressions of the training set's own distribution (so
the lr is never tuned on the shifted test sets); `test_acc` is a second such set. Test sets, fixed per
seed and the same in every trial: single-digit, two-digit, mixed (each operand 0-99): `test_acc_single`,
`test_acc_two`, `test_acc_mixed`. Fixed: embedding 32, Adam, batch 128; A and B train for the same
steps (an iteration is A's epoch of expressions). ASHA prunes lrs within a training set and cell.

    python -m studies.arithmetic_shift                                   # quick: 10x smaller sets, CPU
    python -m studies.arithmetic_shift --budget full --gpus-per-trial 0.25   # the hand-run sizes
"""

from ray import tune

from studies import Budget, Study, cross, run

STUDY = Study(
    name="arithmetic_shift",
    doc=__doc__,
    grid=cross(train_set=["A", "B"], cell=["rnn", "gru", "lstm"]),
    search={"lr": tune.loguniform(1e-4, 3e-2)},  # nuisance: tuned per training set and cell
    search_first={"lr": 1e-2},  # a good lr for every cell at the quick budget: each point has one sure try
    fixed=dict(  # test: at the end (the claims read the final test sets)
        task="arithmetic",
        model="rnn",
        impl="fused",
        embed=32,
        hidden_size=128,
        optimizer="adam",
        batch_size=128,
        test_every=None,
    ),
    datasets=("arithmetic",),
    budgets={  # an iteration is samples_per_report expressions (A's epoch): the same steps for A and B
        "smoke": Budget(
            iterations=3,
            samples=2,
            grace=1,
            reduction=2,
            grid=cross(train_set=["A", "B"], cell=["lstm"]),
            fixed=dict(train_scale=0.01, samples_per_report=1000, hidden_size=32, n_eval=256),
        ),
        "quick": Budget(
            iterations=36,
            samples=3,
            seeds=3,
            grace=8,
            reduction=3,
            fixed=dict(train_scale=0.1, samples_per_report=10_000, hidden_size=64, n_eval=1024),
            # the claims checked at quick read A's LSTM alone (the others need B to learn: `--budget full`)
            confirm=[dict(train_set="A", cell="lstm")],
        ),
        # 8M expressions, 62k steps: 8 epochs of B, 80 of A
        "full": Budget(
            iterations=80,
            samples=6,
            seeds=3,
            grace=10,
            reduction=3,
            fixed=dict(train_scale=1.0, samples_per_report=100_000),
        ),
    },
)


def main(argv: list[str] | None = None) -> int:
    return run(STUDY, argv)


if __name__ == "__main__":
    raise SystemExit(main())
