"""Batch size and learning rate together (docs/references.md#batch_size), on the arithmetic LSTM of section 8
(Embedding -> LSTM -> Linear over the results of "12+47-30"-style expressions, training set A).

Scientific: batch size (8, 32, 128) x lr (log grid around the hand-run 1e-4): both are what the
study compares, so ASHA groups by both and stops nothing. Nuisance: none. Fixed: Adam, embedding 32,
training set A (50k single-digit + 50k two-digit expressions at `train_scale` 1.0). Every trial
trains on the same number of expressions (equal epochs, equal samples); the curves also hold the
steps, for the equal-steps view. Measured beside the accuracies: `train_loss_var`, the step-to-step
variance of the training loss within an iteration (how much a batch size makes the loss oscillate).

    python -m studies.batch_size                                   # quick: 10k expressions, CPU
    python -m studies.batch_size --budget full --gpus-per-trial 0.25
"""

from studies import Budget, Study, cross, run

LRS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]  # log grid from the hand-run 1e-4, factor ~3

STUDY = Study(
    name="batch_size",
    doc=__doc__,
    grid=cross(batch_size=[8, 32, 128], lr=LRS),
    select=("lr",),  # each batch size's best lr, chosen on validation, is confirmed on fresh seeds
    fixed=dict(
        task="arithmetic",
        model="rnn",
        cell="lstm",
        impl="fused",
        embed=32,
        hidden_size=128,
        optimizer="adam",
        train_set="A",
    ),
    datasets=("arithmetic",),
    # ASHA groups trials by both scientific values: one trial per group, nothing to stop, so the grace is the whole
    # run; an iteration is samples_per_report expressions (half an epoch), the same for every batch size
    budgets={
        "smoke": Budget(
            iterations=3,
            grace=3,
            reduction=2,
            grid=cross(batch_size=[8, 64], lr=[1e-4, 1e-2]),
            fixed=dict(train_scale=0.01, samples_per_report=500, hidden_size=32, n_eval=256),
        ),
        # 8 epochs of 10k expressions: 10k steps at batch 8, 625 at batch 128
        "quick": Budget(
            iterations=16,
            seeds=3,
            grace=16,
            reduction=2,
            fixed=dict(train_scale=0.1, samples_per_report=5_000, hidden_size=64, n_eval=512),
        ),
        "full": Budget(
            iterations=40, seeds=3, grace=40, reduction=2, fixed=dict(train_scale=1.0, samples_per_report=50_000)
        ),
    },
)


def main(argv: list[str] | None = None) -> int:
    return run(STUDY, argv)


if __name__ == "__main__":
    raise SystemExit(main())
