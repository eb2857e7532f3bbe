"""MLP depth and width, and the split-axis MLP (docs/references.md#mlp_architecture): which architecture generalises?

Scientific: the architecture, as model and hidden sizes: the baseline MLP 128-64, the wide 512-64,
the deep 2048-1024-256-128-64 (on CIFAR-10: 3072-...-10), and the split-axis MLP (models.split_mlp:
an MLP of 128 along the rows and one along the columns of the stacked colour planes, concatenated,
then 128-64). Nuisance: lr, by Optuna per architecture, log-uniform 1e-4 .. 1e-2, tried first at the
hand-run 1e-3 (which always runs to the end: the hand-run view, one lr for all). Fixed: Adam, ReLU,
no regularisation, and a cosine lr schedule (to 0 at the last epoch) where the hand-run reports kept
the lr constant: the final accuracies are then those of an annealed model, not of wherever Adam's
noise left the weights in the last epoch (on Fashion-MNIST that narrows the spread of the seeds' final
test accuracies, which at a constant lr was as large as the differences between architectures). The
quick budget keeps every architecture at a quarter of its width (`width`).

    python -m studies.mlp_architecture                              # quick: Fashion-MNIST (or digits), CPU
    python -m studies.mlp_architecture --budget full --gpus-per-trial 0.25
"""

from ray import tune

from studies import Budget, Study, cross, run

BASELINE, WIDE, DEEP = (128, 64), (512, 64), (2048, 1024, 256, 128, 64)

STUDY = Study(
    name="mlp_architecture",
    doc=__doc__,
    grid=cross(model=["mlp"], hidden=[BASELINE, WIDE, DEEP]) + cross(model=["split_mlp"], hidden=[BASELINE]),
    search={"lr": tune.loguniform(1e-4, 1e-2)},  # nuisance: tuned per architecture
    search_first={"lr": 1e-3},  # the hand-run lr: its view, from the same run
    fixed=dict(
        task="image", axis_hidden=(128,), optimizer="adam", lr_schedule="cosine", batch_size=128, test_every=None
    ),  # test: at the end (the curves show validation)
    datasets=("fashion_mnist", "digits", "cifar10"),
    budgets={  # iterations are epochs; samples are Optuna lrs per architecture
        "smoke": Budget(
            iterations=2,
            samples=2,
            seeds=2,
            grace=1,
            reduction=2,
            grid=cross(model=["mlp", "split_mlp"], hidden=[BASELINE]),
            fixed=dict(dataset="digits", n_train=256, width=0.25),
        ),
        # 4,000 Fashion-MNIST images, 40 epochs, every architecture at a quarter of its width: the wide and
        # deep MLPs fit the training set (train ~0.98) where the baseline does not, as on CIFAR-10; validation on
        # 2,000 images, half an epoch's, so that measuring stays about a fifth of a trial (test: 5,000)
        "quick": Budget(
            iterations=40,
            samples=5,
            seeds=3,
            grace=10,
            reduction=2,
            fixed=dict(dataset="fashion_mnist", n_train=4000, width=0.25, n_eval=5000, n_val=2000),
        ),
        # the hand-run setup: Adam, batch 32, 150 epochs
        "full": Budget(
            iterations=150, samples=8, seeds=3, grace=15, reduction=3, fixed=dict(dataset="cifar10", batch_size=32)
        ),
    },
)


def main(argv: list[str] | None = None) -> int:
    return run(STUDY, argv)


if __name__ == "__main__":
    raise SystemExit(main())
