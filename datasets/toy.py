"""Two-class toy datasets of 2-D points from scikit-learn (docs/references.md#toy_mlp), as tensors: a pure
function of (name, seed), so every seed of a study gets its own sample and its own fixed held-out sets.

- `moons`: make_moons, noise 0.05; `circles`: make_circles, noise 0.05 (factor 0.8, the default);
- `iris`: Fisher's iris, setosa (class 0) against the rest, on its first two features (sepal
  length and width: 2-D, so that a 2-20-2 MLP reads it and its decision boundary can be drawn);
- `blobs`: make_blobs, 2 centres (random in the box (-10, 10)^2 per seed), std 3: overlapping classes;
- `quantiles`: make_gaussian_quantiles, 2 classes (inside and outside a circle of a 2-D Gaussian).

The hand-run split is 80/20 train/test of 1,000 points. The study also needs a validation set
(Optuna and ASHA judge lrs on it, never on the test set): the generators draw 200 more points in
the same call, so that train and test stay the hand-run 800 / 200; iris has only 150 flowers, so its
80/20 split (120 / 30) gives a fifth of its training part to validation (96 / 24 / 30). Features are
used as scikit-learn gives them (not standardised), as the hand-run reports did.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

TOY_DATASETS = ("moons", "circles", "iris", "blobs", "quantiles")
TOY_CLASSES = ("0", "1")
N_POINTS = 1000  # the hand-run size: 800 train / 200 test
N_VAL = 200  # drawn besides, for validation


@dataclass
class ToyData:
    train_x: torch.Tensor  # (N, 2) float
    train_y: torch.Tensor  # (N,) long, 0 or 1
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def to(self, device) -> ToyData:
        return ToyData(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def points(name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` points (n, 2) and their labels (n,) of dataset `name` (iris: all 150 flowers)."""
    from sklearn import datasets as sk

    if name == "moons":
        return sk.make_moons(n, noise=0.05, random_state=seed)
    if name == "circles":
        return sk.make_circles(n, noise=0.05, random_state=seed)
    if name == "blobs":
        return sk.make_blobs(n, centers=2, cluster_std=3.0, random_state=seed)
    if name == "quantiles":
        return sk.make_gaussian_quantiles(n_samples=n, n_features=2, n_classes=2, random_state=seed)
    if name == "iris":
        d = sk.load_iris()
        return d.data[:, :2], (d.target != 0).astype(int)
    raise ValueError(f"unknown toy dataset {name!r}: one of {', '.join(TOY_DATASETS)}")


def toy(name: str, seed: int) -> ToyData:
    """Seed `seed`'s sample of dataset `name`, split into train / validation / test (see the module docstring)."""
    x, y = points(name, N_POINTS + N_VAL, seed)
    perm = np.random.default_rng(seed).permutation(len(x))
    if name == "iris":
        n_test = len(x) // 5
        n_val = (len(x) - n_test) // 5
    else:
        n_test, n_val = N_POINTS // 5, N_VAL
    test, val, train = np.split(perm, [n_test, n_test + n_val])
    t = lambda idx: (torch.tensor(x[idx], dtype=torch.float32), torch.tensor(y[idx], dtype=torch.long))
    return ToyData(*t(train), *t(val), *t(test))
