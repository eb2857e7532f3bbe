"""Packed trials: all seeds of a configuration as one batched model (`models.packed`, a trial's
`--pack on`) against one model per seed (`--pack off`: the replicas trained in turn).

1. Throughput of the trainable's own step (`studies.engine.loop.train_block` of one packed `Unit`,
   or of each replica's own unit in turn) for the palindrome cells (RNN, LSTM, GRU, hidden 128, batch 128) at T=5 and
   T=20 and the regularization study's MLPs at its quick shape (784 inputs, Fashion-MNIST-shaped
   random images: the deep MLP 512-256-128-64-32 and the baseline 128-64), at K = 1, 2, 3, 5, 8
   seeds, interleaved round by round with the fp32 matmul peak measured beside them. samples/s
   counts all K seeds; % peak = training FLOPs per sample (torch's FLOP counter) x samples/s / peak.
2. The quick studies' wall time, palindrome and regularization, `--pack on` against `--pack off`,
   with their claims verdicts side by side (the same seeds, so the verdicts must agree).
"""

from __future__ import annotations

import statistics
import time

import pandas as pd
import torch

import datasets
from benchmarks.study_runs import study_run
from benchmarks.throughput import (
    BATCH,
    Speed,
    flops_per_sample,
    interleave,
    matmul_peak,
    palindrome_config,
    train_flops,
)
from studies.engine.config import full_config
from studies.engine.loop import autocast_for, make_replicas, make_unit, train_block
from studies.engine.task import Data, Task, resolve_task
from studies.engine.tasks import IMAGE
from studies.regularization import STUDY as REGULARIZATION

CPU = torch.device("cpu")
KS = (1, 2, 3, 5, 8)
MLPS = {"MLP 784-512-256-128-64-32-10": REGULARIZATION.fixed["hidden"], "MLP 784-128-64-10": (128, 64)}


def mlp_config(hidden: tuple[int, ...]) -> dict:
    return full_config({**REGULARIZATION.fixed, "hidden": hidden, "batch_size": BATCH})


def fashion_shaped(steps: int, dev: torch.device, seed: int = 0) -> Data:
    """`steps` batches of random 1x28x28 images (normalised), 10 classes: an epoch of `steps` steps; the
    data as the image task's `load` gives it, on `dev`."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(steps * BATCH, 1, 28, 28, generator=g), torch.randint(0, 10, (steps * BATCH,), generator=g)
    data = datasets.ImageData(x, y, x[:BATCH], y[:BATCH], x[:BATCH], y[:BATCH], tuple(map(str, range(10)))).to(dev)
    return Data((data.train_x, data.train_y), (data.val_x, data.val_y), (data.test_x, data.test_y), data.classes)


def speeds(c: dict, loaded, K: int, steps: int, dev: torch.device, task: Task | None = None) -> dict:
    """{"packed": fn, "one by one": fn}: each trains K seeds for `steps` steps of `task` (default: the one
    `c` names) on what its `load` gave (`loaded`), and returns a Speed."""
    task = task or resolve_task(c["task"])
    c = {**c, "seeds": list(range(K)), "steps_per_report": steps}
    alone = [make_unit(c, [r], False) for r in make_replicas(c, task, loaded, dev)]  # what --pack off steps
    pack = make_unit(c, make_replicas(c, task, loaded, dev), True)
    amp = autocast_for(dev, "auto")

    def timed(units):
        def fn():
            t = time.perf_counter()
            loss = [train_block(u, c, task, amp)[0] for u in units]  # one host sync per block
            dt = time.perf_counter() - t
            return Speed(K * steps * BATCH / dt, float(torch.tensor(loss).nanmean()), dt, K * steps * BATCH)

        fn()  # warm-up
        return fn

    return {"packed": timed([pack]), "one by one": timed(alone)}


def small_models(steps: int, dev: torch.device) -> list[tuple]:
    """The benchmarked models: the palindrome cells (RNN, LSTM, GRU) at T=5 and 20 and the regularization
    MLPs, each as (name, T or None, config, task, what the task's load gave, training FLOPs per sample)."""
    cases = []
    for T in (5, 20):
        for cell in ("rnn", "lstm", "gru"):
            c = palindrome_config(cell, T)
            task = resolve_task(c["task"])
            cases.append((cell.upper(), T, c, task, task.load(c, dev), flops_per_sample("palindrome", cell, T)))
    data = fashion_shaped(steps, dev)
    for name, hidden in MLPS.items():
        c = mlp_config(hidden)
        model = make_replicas({**c, "seeds": [0]}, IMAGE, data, CPU)[0].model
        x, y = data.train[0][:BATCH].cpu(), data.train[1][:BATCH].cpu()
        cases.append((name, None, c, IMAGE, data, train_flops(model, x, y) / BATCH))
    return cases


def throughput(quick: bool, threads: int, dev: torch.device = CPU) -> tuple[pd.DataFrame, list[float]]:
    torch.set_num_threads(threads)
    rounds, steps = (1, 4) if quick else (3, 12) if dev.type == "cpu" else (1, 30)
    ks = (1, 5) if quick or dev.type == "cuda" else KS  # on a GPU the study runs below are the measure
    cases = small_models(steps, dev)
    rows, peaks = [], []
    for model, T, c, _, loaded, flops in cases:
        for K in ks:
            fns = {**speeds(c, loaded, K, steps, dev), "peak": lambda: matmul_peak(seconds=0.3, device=dev)}
            t = interleave(fns, rounds)
            peaks += t["peak"]
            med = {k: statistics.median(s.samples_per_s for s in t[k]) for k in ("packed", "one by one")}
            pct = {
                k: statistics.median(100 * s.samples_per_s * flops / 1e9 / p for s, p in zip(t[k], t["peak"]))
                for k in med
            }
            rows.append(
                {
                    "model": model,
                    "T": T or "-",
                    "K": K,
                    "one by one samples/s": med["one by one"],
                    "packed samples/s": med["packed"],
                    "packed / one by one": med["packed"] / med["one by one"],
                    "one by one % peak": pct["one by one"],
                    "packed % peak": pct["packed"],
                }
            )
            print(
                f"  {model} T={T} K={K}: x{rows[-1]['packed / one by one']:.2f}, {pct['packed']:.0f}% of peak packed",
                flush=True,
            )
    return pd.DataFrame(rows), peaks


def wall_times(quick: bool, names=("palindrome", "regularization"), flags: tuple[str, ...] = ()) -> pd.DataFrame:
    """Each study's budget run with --pack on and --pack off: wall time and every claim's verdict."""
    budget = "smoke" if quick else "quick"
    rows = []
    for name in names:
        runs = {p: study_run(name, budget, arm=f"pack-{p}", flags=("--pack", p, *flags)) for p in ("off", "on")}
        verdicts = {p: " ".join(r.claims["verdict"].str[0]) for p, r in runs.items()}  # r, c, i per claim
        rows.append(
            {
                "study": f"{name} ({budget})",
                "wall s, --pack off": runs["off"].wall_s,
                "wall s, --pack on": runs["on"].wall_s,
                "on / off": runs["on"].wall_s / runs["off"].wall_s,
                "trials per hour, --pack off": 3600 * runs["off"].trials["trial"].nunique() / runs["off"].wall_s,
                "trials per hour, --pack on": 3600 * runs["on"].trials["trial"].nunique() / runs["on"].wall_s,
                "claims, --pack off": verdicts["off"],
                "claims, --pack on": verdicts["on"],
            }
        )
    return pd.DataFrame(rows)


def run(quick: bool = False, threads: int = 1, studies: bool = True):
    """On a GPU: the throughput there, and the palindrome study's first 3 iterations (600 steps a trial)
    with 8 trials sharing the GPU (--gpus-per-trial 0.125), packed and not."""
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tput, peaks = throughput(quick, threads, dev)
    where = "GPU" if dev.type == "cuda" else "CPU"
    tables = [(f"Packed against one seed at a time ({where}): samples/s of all K seeds", tput)]
    if studies:
        on_gpu = ("--gpus-per-trial", "0.125", "--iterations", "3") if dev.type == "cuda" else ()
        tables.append(
            (
                f"Study wall time ({where}), --pack on against --pack off (claims: r reproduced, "
                "c contradicted, i inconclusive, in the study's claim order)",
                wall_times(quick, ("palindrome",) if on_gpu else ("palindrome", "regularization"), on_gpu),
            )
        )
    notes = [
        f"torch threads {threads}; fp32 matmul peak {min(peaks):.0f} .. {max(peaks):.0f} GFLOP/s, measured in "
        "every round beside the others; medians over rounds. 'one by one' is what a trial with --pack off "
        "does (each seed's replica in turn, torch's fused RNN/LSTM/GRU kernels); 'packed' is one packed Unit "
        "(models.packed: grouped matmuls over the seed axis) on the same batches."
    ]
    return tables, notes
