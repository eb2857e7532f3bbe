"""GPU: CIFAR-10-shaped epoch time of the VGG CNN (45,000 random 3x32x32 images, 10 classes,
batch 128, Adam), step by step from the hand-run path to ours:

1. naive: torchvision-style Dataset (uint8 -> PIL -> RandomCrop, flip, ToTensor, Normalize) in a
   DataLoader with 2 workers, batches copied to the GPU, fp32, softmax + CrossEntropyLoss,
   loss.item() every step;
2. resident: studies.engine.loop's own loop (`make_replicas`, `make_unit`, `train_block`, through
   `benchmarks.throughput.cnn_fast`) at precision fp32: the whole training set in GPU memory,
   batches sliced from a randperm and augmented on the GPU (datasets.augment), the CNN and its
   inputs channels_last (as the trainable always runs it on CUDA: no separate step for it),
   cross_entropy on logits, one sync per epoch;
3. + bf16 autocast (= studies.engine.loop on CUDA, with cudnn.benchmark);
4. + torch.compile of the replica's model (with --compile: compiling takes a minute or more).

Each variant trains `steps` steps after a warm-up; the epoch time is 45,000 / samples per
second (a whole epoch without --quick).

Then trials packed on one GPU: the palindrome study (quick budget; smoke with --quick) with
--gpus-per-trial 1, 1/2, 1/4 and 1/8 (1, 2, 4 and 8 trials per GPU), its trials per hour, and
the GPU's busy fraction (nvidia-smi's utilization, sampled twice a second during the run). A
trial is one configuration with all its seeds; iterations are summed over seeds.

Prints "skipped: no CUDA" where there is no GPU.
"""

from __future__ import annotations

import math
import os
import subprocess
import threading

import pandas as pd
import torch

from benchmarks.study_runs import study_run
from benchmarks.throughput import BATCH, cnn_fast, cnn_naive

N_TRAIN = 45_000  # CIFAR-10's training split in the studies (5,000 more are validation)
NAIVE_WORKERS = 2  # what the hand-run reports' DataLoaders used, at most
TRIALS_PER_GPU = (1, 2, 4, 8)


class BusySampler:
    """GPU 0's utilization (%) from nvidia-smi, sampled every `every` seconds while the block runs;
    `mean` is NaN where nvidia-smi is missing."""

    def __init__(self, every: float = 0.5):
        self.every, self.samples, self._stop = every, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.every):
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "--id=0"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout
                self.samples.append(float(out.strip().splitlines()[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                return

    @property
    def mean(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else math.nan

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def packing(budget: str = "quick") -> pd.DataFrame:
    """The palindrome study with 1, 2, 4 and 8 trials per GPU: trials per hour and GPU busy %."""
    rows = []
    for k in TRIALS_PER_GPU:
        cpus = min(1.0, (os.cpu_count() or 1) / k)  # k trials share the GPU and the machine's cores
        with BusySampler() as busy:
            r = study_run(
                "palindrome",
                budget,
                arm=f"{k}-per-gpu",
                flags=("--gpus-per-trial", f"{1 / k:g}", "--cpus-per-trial", f"{cpus:g}"),
            )
        rows.append(
            {
                "trials per GPU": k,
                "trials": r.n_trials,
                "iterations": r.iterations,
                "wall s": r.wall_s,
                "trials per hour": 3600 * r.n_trials / r.wall_s,
                "iterations per hour": 3600 * r.iterations / r.wall_s,
                "GPU busy %": busy.mean,
            }
        )
    df = pd.DataFrame(rows)
    df["vs 1 per GPU"] = df["iterations per hour"] / df["iterations per hour"].iloc[0]
    return df


def variants(compile: bool = False) -> list[tuple[str, dict]]:
    v = [("resident fp32 (channels_last on CUDA)", {}), ("+ bf16 autocast (studies.engine.loop)", {"bf16": True})]
    if compile:
        v.append(("+ torch.compile", {"bf16": True, "compile": True}))
    return v


def epochs(
    device: str = "cuda",
    n_train: int = N_TRAIN,
    steps: int | None = None,
    warmup: int = 10,
    compile: bool = False,
    workers: int = NAIVE_WORKERS,
) -> pd.DataFrame:
    """One row per variant: samples/s, epoch seconds (n_train / samples/s) and speed-up over naive.
    `steps` defaults to a whole epoch; runs on any device (the tests use the CPU)."""
    steps = steps or n_train // BATCH
    cuda = torch.device(device).type == "cuda"
    rows = []
    if cuda:
        torch.backends.cudnn.benchmark = False  # the hand-run scripts left it off
    s = cnn_naive(steps, warmup, device=device, n_images=n_train, workers=workers)
    rows.append(
        {"variant": f"naive DataLoader ({workers} workers), fp32", "samples/s": s.samples_per_s, "loss": s.loss}
    )
    if cuda:
        torch.backends.cudnn.benchmark = True
    for label, kw in variants(compile):
        s = cnn_fast(steps, warmup * (5 if kw.get("compile") else 1), device=device, n_images=n_train, **kw)
        rows.append({"variant": label, "samples/s": s.samples_per_s, "loss": s.loss})
        if cuda:
            torch.cuda.empty_cache()
    df = pd.DataFrame(rows)
    df["epoch s"] = n_train / df["samples/s"]
    df["speed-up"] = df["samples/s"] / df["samples/s"].iloc[0]
    return df[["variant", "samples/s", "epoch s", "speed-up", "loss"]]


def run(quick: bool = False, compile: bool = False):
    if not torch.cuda.is_available():
        print("skipped: no CUDA")
        return None
    steps = 50 if quick else None
    df = epochs("cuda", steps=steps, compile=compile)
    packed = packing("smoke" if quick else "quick")
    speedup = df["speed-up"].iloc[-1]
    notes = [
        f"target: studies.engine.loop's path >= 20x the naive DataLoader path: x{speedup:.1f} "
        f"({'met' if speedup >= 20 else 'NOT met'}).",
        f"{torch.cuda.get_device_name(0)}; {N_TRAIN} CIFAR-shaped images, batch {BATCH}; "
        + ("50 timed steps per variant, epoch time extrapolated" if quick else "one whole epoch per variant")
        + " after 10 warm-up steps.",
        "naive loss is CrossEntropyLoss of softmax probabilities (floor ~1.46): not comparable in value.",
        f"packing: python -m studies.palindrome --budget {'smoke' if quick else 'quick'} --gpus-per-trial 1/k; "
        "the same trials and ASHA each time, so iterations per hour compares the packings; GPU busy % = mean "
        "of nvidia-smi's utilization (the share of time a kernel ran), sampled every 0.5 s.",
    ]
    return [("VGG epoch on CUDA", df), ("Palindrome trials packed on one GPU", packed)], notes
