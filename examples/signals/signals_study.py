"""A study of one's own, outside the package: a 1-D CNN tells sine, square and sawtooth waves apart
in noise. Does a wider convolution kernel help, each kernel size at its own tuned lr?

Scientific: kernel (the CNN's own hyperparameter: 3 or 9 samples). Nuisance: lr (Optuna TPE, log
1e-4 .. 1e-1, per kernel; 1e-3 first). Fixed: 16 channels, Adam, batch 64, noise std 0.5, signals of
64 samples with a random period (8 to 32 samples), phase and amplitude.

    python -m studies examples/signals/signals_study.py                  # quick, ~1 minute on 2 CPUs
    python -m studies examples/signals/signals_study.py --budget smoke   # seconds
    cd examples/signals && python -m studies signals_study                # the same, by module name

The task is a `studies.Task`: it loads its data once per trial and builds each seed's model; the
engine's default batches (an epoch over a random permutation) and measure (loss and accuracy on
train, validation and test) do the rest. Its own hyperparameters (kernel, channels, noise, length,
n_train) are declared with their checks, and checked before Ray starts.
"""

import math

import torch
from ray import tune
from torch import nn

from studies import Budget, Data, Study, Task, cross, run

WAVES = ("sine", "square", "sawtooth")


def signals(n: int, length: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n signals (n, 1, length) of random period, phase and amplitude plus Gaussian noise, and their
    wave kinds (n,); a pure function of its arguments."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(len(WAVES), (n,), generator=g)
    period = 8 + 24 * torch.rand(n, 1, generator=g)  # samples per cycle
    phase = torch.rand(n, 1, generator=g)  # in cycles
    amplitude = 0.5 + torch.rand(n, 1, generator=g)
    t = (torch.arange(length).float() / period + phase) % 1.0  # (n, length): position within the cycle
    waves = torch.stack([torch.sin(2 * math.pi * t), torch.sign(0.5 - t), 2 * t - 1])  # (3, n, length)
    x = amplitude * waves[y, torch.arange(n)] + noise * torch.randn(n, length, generator=g)
    return x.unsqueeze(1), y


def load(c: dict, device: torch.device) -> Data:
    """Train, validation and test sets, the same for every trial (fixed data seeds 0, 1, 2)."""
    n_held = max(c["n_train"] // 4, 64)
    train, val, test = (signals(n, c["length"], c["noise"], s) for s, n in enumerate([c["n_train"], n_held, n_held]))
    return Data(*[tuple(t.to(device) for t in pair) for pair in (train, val, test)], classes=WAVES)


class CNN1d(nn.Module):
    """Two convolutions of `kernel` samples, ReLU and max-pooling, then global average pooling and a
    linear layer over the wave kinds."""

    def __init__(self, channels: int, kernel: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, kernel, padding=kernel // 2),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(channels, channels, kernel, padding=kernel // 2),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
        )
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, L) -> (B, classes)
        return self.head(self.features(x).flatten(1))


def model(c: dict, data: Data) -> nn.Module:
    return CNN1d(c["channels"], c["kernel"], len(data.classes))


TASK = Task(
    name="signals",
    load=load,
    model=model,
    defaults=dict(kernel=3, channels=16, noise=0.5, length=64, n_train=2000),
    checks={
        "kernel": (lambda v: isinstance(v, int) and v >= 1 and v % 2 == 1, "an odd whole number >= 1"),
        "channels": (lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1"),
        "noise": (lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0"),
        "length": (lambda v: isinstance(v, int) and v >= 8, "a whole number >= 8"),
        "n_train": (lambda v: isinstance(v, int) and v >= 64, "a whole number >= 64"),
    },
)

STUDY = Study(
    name="signals",
    doc=__doc__,
    grid=cross(kernel=[3, 9]),
    fixed=dict(task=TASK, optimizer="adam", batch_size=64),
    search={"lr": tune.loguniform(1e-4, 1e-1)},  # Adam's lr, tuned per kernel
    search_first={"lr": 1e-3},
    analysis="signals_analysis",  # figures, findings and claims: signals_analysis.py beside this file
    budgets={  # iterations are epochs
        "smoke": Budget(iterations=2, samples=2, fixed=dict(n_train=256)),
        "quick": Budget(iterations=15, seeds=3, samples=4, grace=3),
        "full": Budget(iterations=30, seeds=5, samples=12, grace=3, fixed=dict(n_train=20_000)),
    },
)


def main(argv: list[str] | None = None) -> int:
    return run(STUDY, argv)


if __name__ == "__main__":
    raise SystemExit(main())
