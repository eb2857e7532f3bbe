"""A multilayer perceptron whose forward and backward passes are written by hand in NumPy
(docs/references.md#toy_mlp: the hand-run reports' hand-written MLP, compared with torch.nn's).

    h_0 = x;  z_l = h_{l-1} W_l^T + b_l;  h_l = relu(z_l) for the hidden layers;  logits = z_L
    backward: dW_l = dz_l^T h_{l-1};  db_l = sum over the batch of dz_l;
              dh_{l-1} = dz_l W_l;  dz_{l-1} = dh_{l-1} * (z_{l-1} > 0)

`forward` and `backward` are plain NumPy functions. They also take K models' parameters stacked on a
leading seed axis (W_l (K, out, in), b_l (K, out)) with K batches (K, B, D): the same equations, as
batched matmuls (`models.packed` packs the seeds of a trial this way). `NumpyMLP` wraps them in one
`torch.autograd.Function` whose forward and backward are those functions, with the weights held as
torch Parameters (read as NumPy arrays, no copy on the CPU), so the shared training loop, its
optimizer (SGD) and its gradient clipping train it unchanged; torch's autograd only hands the
gradient of the loss with respect to the logits in and the parameters' gradients out. The loss
stays the loop's (cross-entropy of the logits, i.e. softmax inside); `softmax_cross_entropy` is the
same loss in NumPy, for a training step that is NumPy end to end.

Parameters have the shapes and order of `models.MLP`'s nn.Linear layers (weight (out, in), then
bias, per layer) and the same initialisation, drawn from torch's generator in the same order
(U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both, as nn.Linear): after `torch.manual_seed(s)` both models
start from the same weights, so a comparison of the two isolates their arithmetic. `hidden=()` is a
linear model (logistic regression).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

MLP_IMPLS = ("torch", "numpy")  # models.MLP (torch.nn layers) | NumpyMLP


def forward(x: np.ndarray, params: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Logits (B, C) of x (B, D) under params [W_1 (H_1, D), b_1 (H_1,), ..., W_L (C, H), b_L (C,)],
    and the pre-activations z_1..z_L that `backward` needs; with a leading seed axis on all of them,
    (K, B, C) of (K, B, D)."""
    h, zs = x, []
    for i in range(0, len(params), 2):
        z = h @ np.swapaxes(params[i], -1, -2) + params[i + 1][..., None, :]  # (..., B, out)
        zs.append(z)
        h = np.maximum(z, 0) if i + 2 < len(params) else z  # ReLU after every hidden layer
    return h, zs


def backward(
    dlogits: np.ndarray, x: np.ndarray, params: Sequence[np.ndarray], zs: Sequence[np.ndarray]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Gradients of a loss with respect to x and to each parameter, given its gradient with respect
    to the logits, dlogits (B, C) (or (K, B, C), with the parameters stacked as in `forward`)."""
    grads: list[np.ndarray] = [None] * len(params)  # type: ignore[list-item]
    dz = dlogits
    for layer in reversed(range(len(zs))):
        h_in = x if layer == 0 else np.maximum(zs[layer - 1], 0)  # (..., B, in)
        grads[2 * layer] = np.swapaxes(dz, -1, -2) @ h_in  # (..., out, in)
        grads[2 * layer + 1] = dz.sum(axis=-2)  # (..., out)
        dh = dz @ params[2 * layer]  # (..., B, in)
        dz = dh * (zs[layer - 1] > 0) if layer > 0 else dh
    return dz, grads


def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) against the labels y (B,), and its gradient with
    respect to the logits: (softmax - onehot) / B."""
    shifted = logits - logits.max(axis=1, keepdims=True)  # no overflow in exp
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    B = len(y)
    grad = np.exp(logp)
    grad[np.arange(B), y] -= 1
    return float(-logp[np.arange(B), y].mean()), grad / B


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()  # a view on the CPU; a copy from a GPU


class _NumpyPass(torch.autograd.Function):
    """Forward and backward of the MLP, in NumPy: autograd calls them, and computes nothing itself."""

    @staticmethod
    def forward(ctx, x, *params):
        xs, ps = _numpy(x), [_numpy(p) for p in params]
        logits, zs = forward(xs, ps)
        ctx.arrays, ctx.device = (xs, ps, zs), x.device
        return torch.from_numpy(logits).to(x.device)

    @staticmethod
    def backward(ctx, dlogits):
        xs, ps, zs = ctx.arrays
        dx, grads = backward(_numpy(dlogits), xs, ps, zs)
        out = [torch.from_numpy(g).to(ctx.device) for g in (dx, *grads)]
        return (out[0] if ctx.needs_input_grad[0] else None, *out[1:])


class NumpyMLP(nn.Module):
    def __init__(self, in_features: int, hidden: Sequence[int] = (20,), num_classes: int = 2):
        super().__init__()
        sizes = [in_features, *hidden, num_classes]
        self.params = nn.ParameterList()
        for d_in, d_out in zip(sizes, sizes[1:]):
            bound = 1 / math.sqrt(d_in)  # nn.Linear's init, drawn in its order: weight, then bias
            self.params.append(nn.Parameter(torch.empty(d_out, d_in).uniform_(-bound, bound)))
            self.params.append(nn.Parameter(torch.empty(d_out).uniform_(-bound, bound)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, ...) -> (B, num_classes)
        return numpy_pass(x.flatten(1), self.params)


def numpy_pass(x: torch.Tensor, params) -> torch.Tensor:
    """The logits of x under params, forward and backward in NumPy (with or without a seed axis)."""
    return _NumpyPass.apply(x.float(), *params)
