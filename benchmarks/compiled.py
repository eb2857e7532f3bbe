"""The compiled training step (`--compile on`, `studies.engine.loop.compiled`) against the eager one.

For the palindrome cells (RNN, LSTM, GRU, hidden 128, batch 128) at T=5 and T=20 and the regularization
study's MLPs, at K = 1 seed (one model: torch's fused RNN/LSTM/GRU kernels) and K = 5 (one packed model,
`models.packed`: the cell written out step by step, where inductor can fuse the gates), each a fresh unit
of the trainable's own `make_unit` and `train_block`:
- samples/s of all K seeds and % of the fp32 matmul peak, eager and compiled, interleaved round by round
  with the peak measured beside them;
- the compile time: a unit's first block less an eager block, cold (an empty inductor cache, what the
  first trial of a shape pays) and warm (Dynamo's memory cleared, inductor's FX graph cache on disk kept:
  what every later trial of the shape pays);
- the break-even steps: cold compile time over the time the compiled step saves per step.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import pandas as pd
import torch

from benchmarks.packed import small_models
from benchmarks.throughput import (
    BATCH,
    Speed,
    interleave,
    matmul_peak,
)
from studies.engine.loop import make_replicas, make_unit, train_block

CPU = torch.device("cpu")


def _unit(c: dict, task, loaded, K: int, compile: str):
    c = {**c, "seeds": list(range(K)), "compile": compile}
    return make_unit(c, make_replicas(c, task, loaded, CPU), K > 1), c


def _block(u, c, task) -> Speed:
    t = time.perf_counter()
    loss = train_block(u, c, task)[0]
    dt = time.perf_counter() - t
    n = len(u.replicas) * c["steps_per_report"] * BATCH
    return Speed(n / dt, float(torch.tensor(loss).nanmean()), dt, n)


def case(c: dict, task, loaded, K: int, rounds: int) -> dict:
    """One model at K seeds: eager and compiled samples/s (medians over rounds), the peak beside them,
    and the cold and warm compile times."""
    eager, ce = _unit(c, task, loaded, K, "off")
    _block(eager, ce, task)  # warm-up
    one = _block(eager, ce, task).seconds
    fused, cf = _unit(c, task, loaded, K, "on")
    cold = _block(fused, cf, task).seconds - one
    torch._dynamo.reset()  # a later trial: a new process's Dynamo, the same inductor cache on disk
    fused, cf = _unit(c, task, loaded, K, "on")
    warm = _block(fused, cf, task).seconds - one
    t = interleave(
        {
            "eager": lambda: _block(eager, ce, task),
            "compiled": lambda: _block(fused, cf, task),
            "peak": lambda: matmul_peak(seconds=0.3, device=CPU),
        },
        rounds,
    )
    med = {k: statistics.median(s.samples_per_s for s in t[k]) for k in ("eager", "compiled")}
    return {"sps": med, "peaks": t["peak"], "cold": cold, "warm": warm, "steps": c["steps_per_report"]}


def throughput(quick: bool, threads: int) -> tuple[pd.DataFrame, list[float]]:
    torch.set_num_threads(threads)
    rounds, steps = (1, 4) if quick else (3, 12)
    cases = small_models(steps, CPU)
    rows, peaks = [], []
    for model, T, c, task, loaded, flops in cases:
        c = {**c, "steps_per_report": steps}
        for K in (1, 5):
            r = case(c, task, loaded, K, rounds)
            peaks += r["peaks"]
            pct = {k: 100 * v * flops / 1e9 / statistics.median(r["peaks"]) for k, v in r["sps"].items()}
            saved = K * BATCH * (1 / r["sps"]["eager"] - 1 / r["sps"]["compiled"])  # seconds per step
            rows.append(
                {
                    "model": model,
                    "T": T or "-",
                    "K": K,
                    "eager samples/s": r["sps"]["eager"],
                    "compiled samples/s": r["sps"]["compiled"],
                    "compiled / eager": r["sps"]["compiled"] / r["sps"]["eager"],
                    "eager % peak": pct["eager"],
                    "compiled % peak": pct["compiled"],
                    "compile s (cold)": r["cold"],
                    "compile s (warm)": r["warm"],
                    "break-even steps": r["cold"] / saved if saved > 0 else float("inf"),
                }
            )
            print(
                f"  {model} T={T} K={K}: x{rows[-1]['compiled / eager']:.2f}, {pct['compiled']:.0f}% of peak "
                f"compiled, compile {r['cold']:.1f} s cold / {r['warm']:.1f} s warm",
                flush=True,
            )
    return pd.DataFrame(rows), peaks


def run(quick: bool = False, threads: int = 1):
    """On the CPU (a GPU's compiled step is the `gpu` benchmark's)."""
    with tempfile.TemporaryDirectory() as cache:  # an empty inductor cache: the cold compile times are cold
        before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        try:
            table, peaks = throughput(quick, threads)
        finally:
            if before is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR")
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = before
    notes = [
        f"torch threads {threads}; fp32 matmul peak {min(peaks):.0f} .. {max(peaks):.0f} GFLOP/s, measured in "
        "every round beside the others; medians over rounds. K=1 is one model (torch's fused recurrent "
        "kernels, which inductor calls as they are); K=5 is one packed unit (the cell's gates as elementwise "
        "ops, which inductor fuses). The compiled part is the forward, the loss and their backward; clipping "
        "and the optimizer's foreach update stay eager."
    ]
    return [("Compiled against eager training step (CPU): samples/s of all K seeds", table)], notes
