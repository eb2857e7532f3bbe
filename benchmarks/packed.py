"""Packed trials: K configs of one MLP architecture (a different lr and init each) trained in one
process at once with torch.func (stack_module_state + vmap over functional_call, Adam written
out with a per-config lr), against the same K trainings one after the other with torch.optim.Adam.

Same data (scikit-learn digits, resident), same per-config batches (batch 128), same steps, same
threads. Both sides compute the same function: the table gives the largest difference of the
final losses between a packed config and its separate twin. Packing pays where a step is
dominated by per-op overhead (small models), not where the matmuls already fill the cores.
"""

from __future__ import annotations

import copy
import math
import time

import pandas as pd
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

import datasets
from models import MLP

BATCH = 128
BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults


def _models(K: int, in_features: int, hidden: tuple[int, ...]) -> list[MLP]:
    out = []
    for k in range(K):
        torch.manual_seed(k)
        out.append(MLP(in_features, hidden, 10))
    return out


def _batches(n: int, K: int, steps: int, seed: int = 0) -> torch.Tensor:
    """(steps, K, BATCH) indices: config k's batches are slices of its own randperm."""
    g = torch.Generator().manual_seed(seed)
    per_epoch = n // BATCH
    epochs = math.ceil(steps / per_epoch)
    idx = torch.stack([torch.cat([torch.randperm(n, generator=g)[: per_epoch * BATCH] for _ in range(epochs)])
                       for _ in range(K)])  # (K, epochs * per_epoch * BATCH)
    return idx[:, : steps * BATCH].reshape(K, steps, BATCH).transpose(0, 1)


def separate(x, y, idx, lrs, hidden) -> tuple[float, list[float]]:
    """K trainings one after another; returns seconds and the final losses."""
    models = _models(len(lrs), x[0].numel(), hidden)
    t = time.perf_counter()
    losses = []
    for k, (model, lr) in enumerate(zip(models, lrs)):
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        for s in range(len(idx)):
            loss = F.cross_entropy(model(x[idx[s, k]]), y[idx[s, k]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        losses.append(loss.item())
    return time.perf_counter() - t, losses


def packed(x, y, idx, lrs, hidden) -> tuple[float, list[float]]:
    """The K trainings as one: parameters stacked (K, ...), one vmapped step for all configs."""
    K = len(lrs)
    models = _models(K, x[0].numel(), hidden)
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def loss_one(p, b, xb, yb):
        return F.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    step_fn = vmap(grad_and_value(loss_one))
    lr = torch.tensor(lrs)
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    v2 = {k: torch.zeros_like(v) for k, v in params.items()}
    t = time.perf_counter()
    for s in range(len(idx)):
        grads, loss = step_fn(params, buffers, x[idx[s]], y[idx[s]])  # x[idx[s]]: (K, BATCH, ...)
        with torch.no_grad():
            c1, c2 = 1 - BETAS[0] ** (s + 1), 1 - BETAS[1] ** (s + 1)
            for k, p in params.items():  # torch.optim.Adam's update, with lr per config
                g = grads[k]
                m[k].lerp_(g, 1 - BETAS[0])
                v2[k].mul_(BETAS[1]).addcmul_(g, g, value=1 - BETAS[1])
                denom = (v2[k].sqrt() / math.sqrt(c2)).add_(EPS)
                p.sub_((lr / c1).view(-1, *[1] * (p.dim() - 1)) * m[k] / denom)
    return time.perf_counter() - t, loss.tolist()


def compare(K: int, steps: int, hidden: tuple[int, ...], threads: int = 1) -> dict:
    torch.set_num_threads(threads)
    data = datasets.load_images("digits")
    x, y = data.train_x, data.train_y
    idx = _batches(len(x), K, steps)
    lrs = [10 ** (-4 + 2 * k / max(K - 1, 1)) for k in range(K)]  # 1e-4 .. 1e-2
    packed(x, y, idx[:2], lrs, hidden)  # warm-up
    separate(x, y, idx[:2], lrs, hidden)
    ts, ls = separate(x, y, idx, lrs, hidden)
    tp, lp = packed(x, y, idx, lrs, hidden)
    n = K * steps * BATCH
    return {"model": f"MLP {'-'.join(map(str, (64, *hidden, 10)))}", "K": K, "steps": steps,
            "separate samples/s": n / ts, "packed samples/s": n / tp, "packed/separate": ts / tp,
            "max |loss diff|": max(abs(a - b) for a, b in zip(ls, lp))}


def run(quick: bool = False, threads: int = 1):
    steps = 20 if quick else 100
    rows = [compare(K, steps, hidden, threads) for hidden in ((128, 64), (2048, 1024, 256, 128, 64))
            for K in ((4,) if quick else (4, 16))]
    notes = [f"torch threads {threads}; digits (1078 training images), batch {BATCH}, Adam with lr 1e-4..1e-2 "
             "across the K configs; the second MLP is the regularization study's deep one.",
             "packed = torch.func.stack_module_state + vmap(grad_and_value(functional_call)) and Adam written "
             "out with a per-config lr; max |loss diff| compares each config's final loss with its separate twin."]
    return [("Packed trials vs separate trainings", pd.DataFrame(rows))], notes
