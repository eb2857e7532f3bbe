"""Dropout and L2 regularisation (docs/references.md#regularization): the generalisation gap against strength.

Scientific: dropout p, L2 lambda (penalty lambda * sum of parameter 2-norms) and weight_decay
(the optimizer-native form), each scanned with the others at 0. Nuisance: none. Fixed: the deep
MLP 2048-1024-256-128-64, Adam lr 1e-3, batch 128. Every setting runs to the end (ASHA compares a
trial only with trials of the same scientific values, and there is no nuisance search).

    python -m studies.regularization                             # quick: Fashion-MNIST (or digits), CPU
    python -m studies.regularization --budget full --dataset cifar10
"""

from studies import Budget, Study, cross, run

STUDY = Study(
    name="regularization",
    doc=__doc__,
    grid=cross(dropout=[0.0, 0.2, 0.5], l2=[0.0], weight_decay=[0.0])
    + cross(dropout=[0.0], l2=[1e-3, 1e-2, 1e-1], weight_decay=[0.0])
    + cross(dropout=[0.0], l2=[0.0], weight_decay=[1e-3, 1e-2]),
    # test: at the end (the curves show validation)
    fixed=dict(
        task="image",
        model="mlp",
        hidden=(2048, 1024, 256, 128, 64),
        optimizer="adam",
        lr=1e-3,
        batch_size=128,
        test_every=None,
    ),
    datasets=("fashion_mnist", "digits", "cifar10"),
    # ASHA groups trials by the scientific values, and this study has no nuisance search: one configuration
    # per group, nothing for ASHA to stop, so the grace is the whole run (no rung is drawn)
    budgets={  # iterations are epochs
        "smoke": Budget(
            iterations=4,
            grace=1,
            reduction=2,
            grid=cross(dropout=[0.0, 0.5], l2=[0.0], weight_decay=[0.0])
            + cross(dropout=[0.0], l2=[1e-2], weight_decay=[0.0]),
            fixed=dict(dataset="digits", n_train=256, hidden=(256, 64)),
        ),
        # 4,000 Fashion-MNIST images and the deep MLP at a quarter of its width (five hidden layers kept):
        # it overfits (train ~0.97, test ~0.83), so there is a gap for the regularisers to close
        "quick": Budget(
            iterations=30,
            seeds=3,
            grace=30,
            reduction=2,
            fixed=dict(dataset="fashion_mnist", n_train=4000, hidden=(512, 256, 128, 64, 32), n_eval=2000),
        ),
        "full": Budget(iterations=100, seeds=3, grace=100, reduction=2, fixed=dict(dataset="cifar10")),
    },
)


def main(argv: list[str] | None = None) -> int:
    return run(STUDY, argv)


if __name__ == "__main__":
    raise SystemExit(main())
