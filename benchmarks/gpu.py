"""GPU: CIFAR-10-shaped epoch time of the VGG CNN (45,000 random 3x32x32 images, 10 classes,
batch 128, Adam), step by step from the hand-run path to ours:

1. naive: torchvision-style Dataset (uint8 -> PIL -> RandomCrop, flip, ToTensor, Normalize) in a
   DataLoader with 2 workers, batches copied to the GPU, fp32, softmax + CrossEntropyLoss,
   loss.item() every step;
2. resident: the whole training set in GPU memory, batches sliced from a randperm and augmented
   on the GPU (datasets.augment), cross_entropy on logits, one sync per epoch;
3. + channels_last; 4. + bf16 autocast (= studies.train on CUDA, with cudnn.benchmark);
5. + torch.compile (with --compile: compiling takes a minute or more).

Each variant trains `steps` steps after a warm-up; the epoch time is 45,000 / samples per
second (a whole epoch without --quick). Prints "skipped: no CUDA" where there is no GPU.
"""

from __future__ import annotations

import pandas as pd
import torch

from benchmarks.throughput import BATCH, cnn_fast, cnn_naive

N_TRAIN = 45_000  # CIFAR-10's training split in the studies (5,000 more are validation)
NAIVE_WORKERS = 2  # what the hand-run reports' DataLoaders used, at most


def variants(compile: bool = False) -> list[tuple[str, dict]]:
    v = [("resident fp32", {}), ("+ channels_last", {"channels_last": True}),
         ("+ bf16 autocast (studies.train)", {"channels_last": True, "bf16": True})]
    if compile:
        v.append(("+ torch.compile", {"channels_last": True, "bf16": True, "compile": True}))
    return v


def epochs(device: str = "cuda", n_train: int = N_TRAIN, steps: int | None = None, warmup: int = 10,
           compile: bool = False, workers: int = NAIVE_WORKERS) -> pd.DataFrame:
    """One row per variant: samples/s, epoch seconds (n_train / samples/s) and speed-up over naive.
    `steps` defaults to a whole epoch; runs on any device (the tests use the CPU)."""
    steps = steps or n_train // BATCH
    cuda = torch.device(device).type == "cuda"
    rows = []
    if cuda:
        torch.backends.cudnn.benchmark = False  # the hand-run scripts left it off
    s = cnn_naive(steps, warmup, device=device, n_images=n_train, workers=workers)
    rows.append({"variant": f"naive DataLoader ({workers} workers), fp32", "samples/s": s.samples_per_s,
                 "loss": s.loss})
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
    notes = [f"{torch.cuda.get_device_name(0)}; {N_TRAIN} CIFAR-shaped images, batch {BATCH}; "
             + ("50 timed steps per variant, epoch time extrapolated" if quick else "one whole epoch per variant")
             + " after 10 warm-up steps.",
             "naive loss is CrossEntropyLoss of softmax probabilities (floor ~1.46): not comparable in value."]
    return [("VGG epoch on CUDA", df)], notes
