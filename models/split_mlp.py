"""The hand-run "split-axis" MLP (docs/references.md#mlp_architecture): one MLP along the rows and one along the
columns of the stacked colour planes, concatenated, then a fully connected stack.

The image's C colour planes are stacked one above the other into a (C*H) x W matrix (CIFAR-10:
96 x 32; Fashion-MNIST: 28 x 28). The row MLP maps each of the C*H rows (W pixels) with the same
weights, the column MLP each of the W columns (C*H pixels); so each sees one axis of the image
whole and shares its weights along the other, where a plain MLP learns every pixel's weight apart.
Their outputs, flattened and concatenated (C*H*a + W*a features for `axis_hidden` ending in a), go
through the fully connected stack `hidden` to the classes. On CIFAR-10 with `axis_hidden=(128,)`
and `hidden=(128, 64)`: 3072 pixels -> 96x128 + 32x128 = 16384 features -> 128 -> 64 -> 10 (2.1M
parameters, most of them in the first fully connected layer).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _stack(d: int, sizes: Sequence[int], dropout: float) -> tuple[list[nn.Module], int]:
    """Linear + ReLU (+ dropout) layers from d inputs through `sizes`; the layers and their output size."""
    layers: list[nn.Module] = []
    for h in sizes:
        layers += [nn.Linear(d, h), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = h
    return layers, d


class SplitMLP(nn.Module):
    def __init__(
        self,
        shape: Sequence[int],
        axis_hidden: Sequence[int] = (128,),
        hidden: Sequence[int] = (128, 64),
        num_classes: int = 10,
        dropout: float = 0.0,
    ):
        super().__init__()
        c, h, w = shape  # (C, H, W) of one image
        self.rows, self.cols = c * h, w
        row, a = _stack(w, axis_hidden, dropout)
        col, _ = _stack(c * h, axis_hidden, dropout)
        self.row_mlp, self.col_mlp = nn.Sequential(*row), nn.Sequential(*col)
        fc, d = _stack((c * h + w) * a, hidden, dropout)
        self.head = nn.Sequential(*fc, nn.Linear(d, num_classes))

    def forward(self, x):  # x: (B, C, H, W) -> (B, num_classes)
        x = x.reshape(len(x), self.rows, self.cols)  # colour planes stacked: (B, C*H, W)
        r = self.row_mlp(x).flatten(1)  # each row: (B, C*H, a) -> (B, C*H*a)
        c = self.col_mlp(x.transpose(1, 2)).flatten(1)  # each column: (B, W, a) -> (B, W*a)
        return self.head(torch.cat([r, c], dim=1))
