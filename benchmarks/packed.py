"""Packed trials: K configs of one MLP architecture (a different lr and init each) trained in one
process at once with torch.func (stack_module_state + vmap over functional_call, Adam written
out with a per-config lr), against the same K trainings one after the other as studies.train
trains the seeds of a trial: a replica each (`make_replica`: seed k's initialisation and data
order), trained epoch by epoch by `train_block`, one replica after another.

Same data (scikit-learn digits, resident, as `load_task` gives it), the same batches (both sides
draw them with studies.train's `batches` from each replica's own generator, batch 128), the same
loss (`loss_fn`), the same epochs, the same threads. Both sides compute the same function: the
table gives the largest difference of the last epoch's mean loss between a packed config and its
separate twin (the trainable's Adam is torch's fused kernel; the packed one is written out).
Packing pays where a step is dominated by per-op overhead (small models), not where the matmuls
already fill the cores.
"""

from __future__ import annotations

import copy
import math
import time

import pandas as pd
import torch
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from benchmarks.throughput import first_images
from studies.regularization import STUDY as REGULARIZATION
from studies.train import DEFAULTS, Replica, Task, batches, load_task, loss_fn, make_replica, train_block

BATCH = 128
BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults
CPU = torch.device("cpu")


def config(K: int, hidden: tuple[int, ...]) -> dict:
    """The regularization study's trial config (MLP, Adam, batch 128) on digits, with seeds 0..K-1."""
    return {**DEFAULTS, **REGULARIZATION.fixed, "dataset": "digits", "hidden": hidden, "batch_size": BATCH,
            "seeds": list(range(K))}


def _replicas(c: dict, task: Task, lrs: list[float]) -> list[tuple[dict, Replica]]:
    """Config k: lr k, and seed k's initialisation and data order."""
    return [({**c, "lr": lr}, make_replica({**c, "lr": lr}, task, k, CPU)) for k, lr in enumerate(lrs)]


def separate(c: dict, task: Task, lrs: list[float], epochs: int) -> tuple[float, list[float]]:
    """K trainings as studies.train trains a trial's seeds: every epoch, each replica's block in turn.
    Returns seconds and each config's mean loss over its last epoch."""
    reps = _replicas(c, task, lrs)
    t = time.perf_counter()
    for _ in range(epochs):
        losses = [train_block(r, ck, task)[0] for ck, r in reps]
    return time.perf_counter() - t, losses


def packed(c: dict, task: Task, lrs: list[float], epochs: int) -> tuple[float, list[float]]:
    """The K trainings as one: parameters stacked (K, ...), one vmapped step for all configs, on the
    batches studies.train draws for each replica."""
    K = len(lrs)
    reps = [r for _, r in _replicas(c, task, lrs)]
    params, buffers = stack_module_state([r.model for r in reps])
    base = copy.deepcopy(reps[0].model).to("meta")

    def loss_one(p, b, xb, yb):
        return loss_fn(functional_call(base, (p, b), (xb,)), yb, c)

    step_fn = vmap(grad_and_value(loss_one))
    lr = torch.tensor(lrs)
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    v2 = {k: torch.zeros_like(v) for k, v in params.items()}
    s = 0
    t = time.perf_counter()
    for _ in range(epochs):
        loss_sum, steps = torch.zeros(K), 0
        for step in zip(*(batches(c, task, r.gen) for r in reps)):  # K (x, y): config k's batch
            x, y = torch.stack([xb for xb, _ in step]), torch.stack([yb for _, yb in step])  # (K, BATCH, ...)
            grads, loss = step_fn(params, buffers, x, y)
            s += 1
            with torch.no_grad():
                c1, c2 = 1 - BETAS[0] ** s, 1 - BETAS[1] ** s
                for k, p in params.items():  # torch.optim.Adam's update, with lr per config
                    g = grads[k]
                    m[k].lerp_(g, 1 - BETAS[0])
                    v2[k].mul_(BETAS[1]).addcmul_(g, g, value=1 - BETAS[1])
                    denom = (v2[k].sqrt() / math.sqrt(c2)).add_(EPS)
                    p.sub_((lr / c1).view(-1, *[1] * (p.dim() - 1)) * m[k] / denom)
            loss_sum += loss.detach()
            steps += 1
    return time.perf_counter() - t, (loss_sum / steps).tolist()


def compare(K: int, epochs: int, hidden: tuple[int, ...], threads: int = 1) -> dict:
    torch.set_num_threads(threads)
    c = config(K, hidden)
    task = load_task(c, CPU)
    lrs = [10 ** (-4 + 2 * k / max(K - 1, 1)) for k in range(K)]  # 1e-4 .. 1e-2
    warm = first_images(task, 2 * BATCH)  # warm-up: an epoch of 2 steps
    packed(c, warm, lrs, 1)
    separate(c, warm, lrs, 1)
    ts, ls = separate(c, task, lrs, epochs)
    tp, lp = packed(c, task, lrs, epochs)
    steps = epochs * (len(task.images.train_x) // BATCH)
    n = K * steps * BATCH
    return {"model": f"MLP {'-'.join(map(str, (math.prod(task.shape), *hidden, 10)))}", "K": K, "epochs": epochs,
            "steps": steps, "separate samples/s": n / ts, "packed samples/s": n / tp, "packed/separate": ts / tp,
            "max |loss diff|": max(abs(a - b) for a, b in zip(ls, lp))}


def run(quick: bool = False, threads: int = 1):
    epochs = 3 if quick else 12
    rows = [compare(K, epochs, hidden, threads) for hidden in ((128, 64), REGULARIZATION.fixed["hidden"])
            for K in ((4,) if quick else (4, 16))]
    notes = [f"torch threads {threads}; digits (1078 training images: 8 batches of {BATCH} an epoch), Adam with lr "
             "1e-4..1e-2 across the K configs, seed k for config k; the second MLP is the regularization study's "
             "deep one.",
             "separate = studies.train's make_replica and train_block, replica after replica every epoch (how one "
             "trial trains its seeds); packed = torch.func.stack_module_state + vmap(grad_and_value("
             "functional_call)) and Adam written out with a per-config lr, on the same batches; max |loss diff| "
             "compares each config's last-epoch mean loss with its separate twin's."]
    return [("Packed trials vs separate trainings", pd.DataFrame(rows))], notes
