"""Multilayer perceptron on flattened images (docs/references.md#regularization).

`hidden=(128, 64)` on CIFAR-10 is the baseline 3072-128-64-10; `(2048, 1024, 256, 128, 64)` is
the deep one. Dropout follows every hidden activation, so p=0.5 regularises all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


class MLP(nn.Module):
    def __init__(
        self, in_features: int, hidden: Sequence[int] = (128, 64), num_classes: int = 10, dropout: float = 0.0
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d = in_features
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = h
        layers.append(nn.Linear(d, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):  # x: (B, ...) -> (B, num_classes)
        return self.net(x)
