"""MLP on 2-D toy data, NumPy against PyTorch (docs/references.md#toy_mlp): does a hand-written NumPy MLP
learn like torch.nn's, and which datasets need its hidden layer?

Scientific: dataset (scikit-learn's moons, circles, iris setosa-vs-rest, blobs, gaussian
quantiles; datasets.toy) x impl (numpy: forward and backward written in NumPy, models.numpy_mlp;
torch: torch.nn layers), hidden=(20,): the hand-run MLP 2-20-2; beside it, per dataset, the linear
model (hidden=(), torch) that shows which datasets need the hidden layer. Nuisance: lr, by Optuna per
scientific value, log-uniform 1e-2 .. 3, tried first at the hand-run 1e-2 (which always runs to the
end: the hand-run view); below 1e-2, 1,500 steps only learn less.
Fixed: plain SGD (no momentum), 1,500 full-batch steps (15 reports of 100), ReLU, softmax
cross-entropy. Both implementations start from the same weights for the same seed; each seed is its
own sample of the dataset, with its own held-out sets. The hidden width is not searched: at a tuned lr
the 20 units already separate every dataset whose classes do not overlap, and the linear model
shows where the boundary is linear anyway.

Trials take a second: a trial trains every seed of its configuration (`seeds` in the config) as one
batched model (models.packed: the NumPy MLP's seeds as batched NumPy matmuls, the torch MLP's as
grouped torch matmuls); one Ray worker per CPU serves trial after trial. The trials
are too small for a GPU: on a machine with one, `--gpus-per-trial 0` runs them on the CPUs.

    python -m studies.toy_mlp                              # quick: 4 seeds, 6 lrs per setting, CPU
    python -m studies.toy_mlp --budget full                # 8 seeds, 12 lrs
    python -m studies.toy_mlp --grid dataset=moons,circles # some of the datasets
"""

from ray import tune

from studies import Budget, Study, cross, run

DATASETS = ["moons", "circles", "iris", "blobs", "quantiles"]

STUDY = Study(
    name="toy_mlp",
    doc=__doc__,
    grid=cross(dataset=DATASETS, impl=["numpy", "torch"], hidden=[(20,)])
    + cross(dataset=DATASETS, impl=["torch"], hidden=[()]),  # the linear model
    search={"lr": tune.loguniform(1e-2, 3.0)},  # nuisance: tuned per dataset, impl and model
    search_first={"lr": 1e-2},  # the hand-run lr: its view, from the same run
    # full batch: the generated sets' 800 training points (iris: its 96) every step
    fixed=dict(
        task="toy", model="mlp", optimizer="sgd", momentum=0.0, batch_size=800, steps_per_report=100, checkpoint_every=5
    ),  # a checkpoint at ASHA's rungs and the end
    datasets=("toy",),
    budgets={  # iterations are blocks of 100 full-batch steps; samples are Optuna lrs per setting
        "smoke": Budget(
            iterations=3,
            samples=2,
            seeds=2,
            grace=1,
            reduction=2,
            grid=cross(dataset=["moons", "circles"], impl=["numpy", "torch"], hidden=[(20,)]),
        ),
        # ASHA's first rung after 500 steps: an lr that has not left chance by then is not the tuned one
        "quick": Budget(iterations=15, samples=6, seeds=4, grace=5, reduction=3),
        "full": Budget(iterations=15, samples=12, seeds=8, grace=5, reduction=3),
    },
)


def main(argv: list[str] | None = None) -> int:
    return run(STUDY, argv)


if __name__ == "__main__":
    raise SystemExit(main())
