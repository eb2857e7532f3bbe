"""Learning-rate scan (docs/references.md#lr_scan): how lr shapes convergence and generalisation.

Scientific: lr (log grid over the hand-run values 1e-4 .. 4e-2 and between). Nuisance: none.
Fixed: VGG-style CNN, Adam, batch 128. One trial trains every seed of an lr. The claims describe
the whole curve of every lr, the too-large ones included, so ASHA does not cut one lr in favour of
another: every lr runs to the end.

    python -m studies.lr_scan                                    # quick: Fashion-MNIST (or digits) on the CPU
    python -m studies.lr_scan --budget full --gpus-per-trial 0.5 # CIFAR-10, 100 epochs
"""

from studies import Budget, Study, cross, run

STUDY = Study(
    name="lr_scan",
    doc=__doc__,
    grid=cross(lr=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 4e-2]),  # lr of Adam
    select=("lr",),  # the best lr, chosen on validation, is confirmed on fresh seeds
    fixed=dict(
        task="image", model="cnn", optimizer="adam", batch_size=128, test_every=None
    ),  # test: at the end (the curves show validation)
    datasets=("fashion_mnist", "digits", "cifar10"),
    # ASHA groups trials by the scientific values, and this study has no nuisance search: one configuration
    # per group, nothing for ASHA to stop, so the grace is the whole run (no rung is drawn)
    budgets={  # iterations are epochs
        "smoke": Budget(
            iterations=3,
            grace=1,
            reduction=2,
            grid=cross(lr=[1e-5, 1e-3, 1.0]),
            fixed=dict(dataset="digits", n_train=256, batch_size=64),
        ),
        # Fashion-MNIST at 14x14, 2,000 training images, the VGG at a quarter of its channels: every lr's
        # curve in a few minutes on 2 CPU cores (digits when Fashion-MNIST is not installed); validation on
        # 1,000 images, half an epoch's, so that measuring stays about a fifth of a trial (test: 2,000)
        "quick": Budget(
            iterations=10,
            seeds=3,
            grace=10,
            reduction=3,
            fixed=dict(dataset="fashion_mnist", n_train=2000, image_size=14, width=0.25, n_eval=2000, n_val=1000),
        ),
        "full": Budget(iterations=100, seeds=3, grace=100, reduction=3, fixed=dict(dataset="cifar10", augment=True)),
    },
)


def main(argv: list[str] | None = None) -> int:
    return run(STUDY, argv)


if __name__ == "__main__":
    raise SystemExit(main())
