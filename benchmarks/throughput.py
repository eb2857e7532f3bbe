"""Trainable throughput (samples/s): our training step against the loop of the hand-run reports.

Ours is the training loop of `studies.engine.loop.train` itself, not a copy: a replica made by its
`make_replicas` from the study's trial config, stepped as a unit of its `make_unit` by its
`train_block` (the task's `batches`, the loop's `train_step`): palindromes generated vectorised by
`datasets.palindromes`, fused torch.nn cells, logits straight into cross_entropy, loss and accuracy
summed on the device with one host sync per block; images resident in memory as one tensor, batches
sliced from a `randperm`, flips and shifts by `datasets.augment`. A block of n steps is a palindrome
report block of n steps, or an epoch over n batches' worth of the resident images.

Naive is how the hand-run reports wrote it: a torch `Dataset` that makes each sample
with numpy (palindromes) or turns a uint8 array into a PIL image and runs torchvision's
transforms on it (CIFAR-10, as `torchvision.datasets.CIFAR10` does), a `DataLoader` (batch 128,
no workers), python-loop cells (`RecurrentClassifier(impl="scratch")`), softmax followed by
`CrossEntropyLoss`, and `loss.item()` plus an accuracy `.item()` every step.

Both sides: batch 128, the same model sizes, Adam at the same lr (and clip 1.0 for palindromes),
the same number of steps after the same warm-up, the same torch thread count, in one process,
interleaved round by round so that other load on the machine affects both alike. The ratio is
the median over rounds of ours / naive.

How close to the hardware: `% peak` is the training FLOPs per sample (torch's FLOP counter)
times samples/s, over the fp32 matmul GFLOP/s measured in the same run at the same thread count;
a ratio of 3 needs the naive side below a third of what ours reaches. `ours+bf16` is our step
under CPU bf16 autocast: the trainable's `precision="bf16"` (`--precision bf16`), off by default
on the CPU.

`trainable` runs the real `studies.engine.loop.train` outside Ray (with a stand-in for `ray.tune`)
for two report blocks, and times the second: training plus what a report costs (held-out
evaluation, the last checkpoint): what a report adds to `ours`, which is the same train_block.
"""

from __future__ import annotations

import itertools
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pandas as pd
import torch
from torch import nn

import datasets
from models import CELLS, VGG, RecurrentClassifier
from studies.engine import loop as train_mod
from studies.engine.config import full_config
from studies.engine.loop import Unit, autocast_for, make_replicas, make_unit, train_block
from studies.engine.task import Data, Task, resolve_task
from studies.engine.tasks import IMAGE, build_model
from studies.lr_scan import STUDY as LR_SCAN
from studies.palindrome import STUDY as PALINDROME

BATCH = 128
CPU = torch.device("cpu")
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
SEQ_LENS = (5, 20)
TRAINABLE_N_EVAL = (512, 4096)  # held-out sequences per set in the `trainable` row: --quick, full (the trainable's
# default for palindromes, n_eval=None)
TARGET = 3.0  # ours / naive, on a 2-core CPU


@dataclass
class Speed:
    samples_per_s: float
    loss: float  # mean training loss over the timed steps
    seconds: float
    samples: int


def _timed_blocks(block, warmup: int, steps: int) -> Speed:
    """Run `block(warmup)`, then time `block(steps)`; block(n) trains n steps, returns the mean loss."""
    if warmup:
        block(warmup)
    t = time.perf_counter()
    loss = block(steps)
    dt = time.perf_counter() - t
    return Speed(steps * BATCH / dt, loss, dt, steps * BATCH)


# ---- ours: studies.engine.loop's own loop -------------------------------------------------------


def first_images(d: Data, n: int) -> Data:
    """The data with its first `n` training images only (a view: no copy), so that an epoch of
    `studies.engine.loop.train_block` is n // batch_size steps."""
    x, y = d.train
    if len(x) < n:
        raise ValueError(f"{n} training images asked for, the data holds {len(x)}")
    return replace(d, train=(x[:n], y[:n]))


def our_block(u: Unit, c: dict, task: Task, amp=nullcontext):
    """block(n) for `_timed_blocks`: n steps of unit `u` by `studies.engine.loop.train_block`, which
    returns the mean loss (one host sync): a palindrome report block of n steps (data generated
    afresh: no training set), or an epoch over the first n batches' worth of the images."""

    def block(n: int) -> float:
        if u.replicas[0].data.train is None:
            loss, _, steps = train_block(u, {**c, "steps_per_report": n}, task, amp)
        else:
            first = replace(task, batches=lambda c, d, gen: task.batches(c, first_images(d, n * c["batch_size"]), gen))
            loss, _, steps = train_block(u, c, first, amp)
        assert steps == n, (steps, n)
        return loss

    return block


def palindrome_config(cell: str, seq_len: int, seed: int = 0) -> dict:
    """The palindrome study's trial config for one (cell, T): the grid's first point of the cell (the
    corrected setup) at length T, with one seed."""
    point = next(p for p in PALINDROME.grid if p["cell"] == cell)
    return full_config({**PALINDROME.fixed, **point, "seq_len": seq_len, "batch_size": BATCH, "seeds": [seed]})


def palindrome_fast(
    cell: str, seq_len: int, steps: int, warmup: int = 5, seed: int = 0, bf16: bool = False, fused_adam: bool = True
) -> Speed:
    """Our step; `fused_adam=False`: with torch.optim.Adam's default (per-parameter) update instead."""
    c = palindrome_config(cell, seq_len, seed)
    task = resolve_task(c["task"])
    [r] = make_replicas(c, task, task.load(c, CPU), CPU)
    u = make_unit(c, [r], False)
    if not fused_adam:
        u.opt = torch.optim.Adam(u.model.parameters(), lr=c["lr"])
    amp = autocast_for(CPU, "bf16" if bf16 else "fp32")
    return _timed_blocks(our_block(u, c, task, amp), warmup, steps)


# ---- naive: the hand-run reports' loop ----------------------------------------------------------


class NumpyPalindromes(torch.utils.data.Dataset):
    """One palindrome per __getitem__, made with numpy."""

    def __init__(self, n: int, seq_len: int):
        self.n, self.seq_len = n, seq_len

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        N = self.seq_len + 1
        half = np.random.randint(0, 10, (N + 1) // 2)
        seq = np.concatenate([half, half[: N // 2][::-1]])
        return torch.tensor(seq[:-1], dtype=torch.float32), torch.tensor(seq[-1], dtype=torch.long)


class PILImages(torch.utils.data.Dataset):
    """Images held as uint8 HWC arrays and made PIL images on access, as torchvision's CIFAR10 does."""

    def __init__(self, data: np.ndarray, targets: np.ndarray, transform):
        self.data, self.targets, self.transform = data, targets, transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[i])), int(self.targets[i])


def naive_transform():
    import torchvision.transforms as T

    return T.Compose(
        [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)]
    )


def naive_steps(model: nn.Module, opt, batches, clip: float | None = None, device="cpu") -> float:
    """The hand-run loop: softmax then CrossEntropyLoss, and two host syncs every step."""
    criterion = nn.CrossEntropyLoss()
    total, correct, n = 0.0, 0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        out = model(x)
        loss = criterion(torch.softmax(out, dim=1), y)
        opt.zero_grad()
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        total += loss.item()
        correct += (out.argmax(1) == y).sum().item()
        n += 1
    return total / n


def palindrome_naive(cell: str, seq_len: int, steps: int, warmup: int = 5, seed: int = 0) -> Speed:
    c = palindrome_config(cell, seq_len, seed)
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = RecurrentClassifier(cell, "scratch", 1, c["hidden_size"], 10)
    opt = torch.optim.Adam(model.parameters(), lr=c["lr"])
    loader = torch.utils.data.DataLoader(NumpyPalindromes((warmup + steps) * BATCH, seq_len), batch_size=BATCH)
    it = iter(loader)
    return _timed_blocks(lambda n: naive_steps(model, opt, itertools.islice(it, n), c["clip"]), warmup, steps)


# ---- images --------------------------------------------------------------------------------------


def cifar_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n random CIFAR-10-shaped images: uint8 (n, 32, 32, 3) and labels in 0..9."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)


def resident(images: np.ndarray, labels: np.ndarray, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The images as datasets.images holds them: one normalised float tensor (N, 3, 32, 32)."""
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(CIFAR_MEAN, device=device), torch.tensor(CIFAR_STD, device=device)
    return ((x - mean[:, None, None]) / std[:, None, None]).contiguous(), torch.from_numpy(labels).long().to(device)


def image_data(images: np.ndarray, labels: np.ndarray, device="cpu") -> Data:
    """The images as the image task's `load` gives a trial its data: resident on the device, normalised.
    The held-out sets are the first batch (only trained on here, never evaluated)."""
    x, y = resident(images, labels, device)
    return Data((x, y), (x[:BATCH], y[:BATCH]), (x[:BATCH], y[:BATCH]), datasets.class_names("cifar10"))


def image_config(seed: int = 0) -> dict:
    """The lr_scan study's trial config (VGG, Adam 1e-3, batch 128), with augmentation as in its full budget."""
    return full_config({**LR_SCAN.fixed, "augment": True, "batch_size": BATCH, "seeds": [seed]})


def cnn_fast(
    steps: int,
    warmup: int = 1,
    seed: int = 0,
    channels_last: bool = False,
    bf16: bool = False,
    device: str = "cpu",
    n_images: int | None = None,
    compile: bool = False,
) -> Speed:
    """Our image path: a studies.engine.loop replica on resident CIFAR-shaped images (randperm slices,
    datasets.augment, VGG), `n_images` in memory (default: just enough for the longest block).
    On CUDA the trainable runs the CNN channels_last; `channels_last` asks for it on the CPU too."""
    c = image_config(seed)
    dev = torch.device(device)
    data = image_data(*cifar_like(n_images or max(warmup, steps) * BATCH, seed), dev)
    [r] = make_replicas(c, IMAGE, data, dev)
    if channels_last:  # the weights' layout decides the convolutions'; the trainable does this on CUDA
        r.model = r.model.to(memory_format=torch.channels_last)
    if compile:
        r.model = torch.compile(r.model)
    amp = autocast_for(dev, "bf16" if bf16 else "fp32")
    return _timed_blocks(our_block(make_unit(c, [r], False), c, IMAGE, amp), warmup, steps)


def cnn_naive(
    steps: int, warmup: int = 1, seed: int = 0, device: str = "cpu", n_images: int | None = None, workers: int = 0
) -> Speed:
    """The hand-run image path: PIL + torchvision transforms in a DataLoader, batches copied to `device`."""
    c = image_config(seed)
    torch.manual_seed(seed)
    ds = PILImages(*cifar_like(n_images or (warmup + steps) * BATCH, seed), naive_transform())
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, drop_last=True, num_workers=workers)
    model = VGG(3, 10).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=c["lr"])
    it = _endless(loader)
    return _timed_blocks(lambda n: naive_steps(model, opt, itertools.islice(it, n), device=device), warmup, steps)


def _endless(loader):
    while True:
        yield from loader


def pipeline_speed(path: str, batches: int, seed: int = 0) -> float:
    """Images/s of the input pipeline alone (no model): 'naive' DataLoader + PIL transforms, or
    'ours' resident tensor + randperm slices + datasets.augment."""
    images, labels = cifar_like(batches * BATCH, seed)
    if path == "naive":
        loader = torch.utils.data.DataLoader(
            PILImages(images, labels, naive_transform()), batch_size=BATCH, shuffle=True, drop_last=True
        )
        it = iter(loader)
    else:  # one epoch of the image task's batches over `batches` batches' worth of images
        it = IMAGE.batches(image_config(seed), image_data(images, labels), torch.Generator().manual_seed(seed))
    t = time.perf_counter()
    n = sum(len(yb) for _, yb in itertools.islice(it, batches))
    return n / (time.perf_counter() - t)


# ---- the real trainable, outside Ray --------------------------------------------------------------


def trainable_palindrome(cell: str, seq_len: int, steps: int, n_eval: int | None = None, seed: int = 0) -> Speed:
    """`studies.engine.loop.train` for two report blocks of `steps` steps; the second is timed. The loop
    imports `ray.tune` when it runs: the stand-in replaces that attribute of `ray` meanwhile."""
    import ray
    import ray.tune  # noqa: F401  (the attribute that `from ray import tune` reads)

    reports = []
    fake_tune = SimpleNamespace(
        report=lambda metrics, checkpoint=None: reports.append((time.perf_counter(), metrics)),
        get_checkpoint=lambda: None,
        Checkpoint=SimpleNamespace(from_directory=lambda d: d),
        get_context=lambda: SimpleNamespace(get_trial_id=lambda: "benchmark"),
    )
    config = {**palindrome_config(cell, seq_len, seed), "steps_per_report": steps, "iterations": 2, "n_eval": n_eval}
    threads = str(torch.get_num_threads())  # the trainable sets its threads from OMP_NUM_THREADS, as Ray does
    with mock.patch.object(ray, "tune", fake_tune), mock.patch.dict(os.environ, {"OMP_NUM_THREADS": threads}):
        train_mod.train(config)
    (t1, _), (t2, m) = reports[-2:]
    return Speed(steps * BATCH / (t2 - t1), m["train_loss"], t2 - t1, steps * BATCH)


# ---- how close to the hardware ----------------------------------------------------------------------


def train_flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """FLOPs of one training step's forward and backward (torch's FLOP counter: matmuls, convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(model(x), y).backward()
    return float(counter.get_total_flops())


def flops_per_sample(kind: str, cell: str = "lstm", seq_len: int = 5) -> float:
    """Training FLOPs per sample. Recurrent: counted on the scratch cells, whose matmuls are the fused
    cells' (the counter does not see inside the fused kernels)."""
    y = torch.zeros(BATCH, dtype=torch.long)
    if kind == "palindrome":
        return train_flops(RecurrentClassifier(cell, "scratch", 1, 128, 10), torch.rand(BATCH, seq_len), y) / BATCH
    return train_flops(build_model(image_config(), (3, 32, 32), 10), torch.rand(BATCH, 3, 32, 32), y) / BATCH


def matmul_peak(n: int = 1024, seconds: float = 1.0, dtype=torch.float32, device=None) -> float:
    """GFLOP/s of an n x n matmul at the current thread count: what the cores can do. On a GPU: an
    8192 x 8192 bf16 matmul (the trainable's autocast dtype there)."""
    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda:
        n, dtype = 8192, torch.bfloat16
    a, b = torch.rand(n, n, dtype=dtype, device=device), torch.rand(n, n, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    reps, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        a @ b
        reps += 1
        if cuda and reps % 10 == 0:
            sync()
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


# ---- the benchmark --------------------------------------------------------------------------------


def interleave(fns: dict, rounds: int) -> dict[str, list]:
    """Call every fn once per round, alternating the order between rounds, so that load on the
    machine falls on every side alike; {name: [result per round]}."""
    out = {k: [] for k in fns}
    for r in range(rounds):
        for k in list(fns) if r % 2 == 0 else list(reversed(fns)):
            out[k].append(fns[k]())
    return out


def _row(
    benchmark: str,
    config: str,
    ours: list[Speed],
    naive: list[Speed],
    bf16: list[Speed] | None,
    flops: float,
    peak: list[float],
) -> dict:
    """Medians over rounds; `peak` is the matmul GFLOP/s measured in each round, beside the others."""
    med = lambda xs: float(np.median(xs))
    sps = lambda xs: med([x.samples_per_s for x in xs])
    ratio = lambda a, b: med([x.samples_per_s / y.samples_per_s for x, y in zip(a, b)])
    pct = lambda xs: med([100 * x.samples_per_s * flops / 1e9 / p for x, p in zip(xs, peak)])
    return {
        "benchmark": benchmark,
        "config": config,
        "ours samples/s": sps(ours),
        "naive samples/s": sps(naive),
        "ours/naive": ratio(ours, naive),
        "ours % peak": pct(ours),
        "naive % peak": pct(naive),
        "ours+bf16/naive": ratio(bf16, naive) if bf16 else float("nan"),
        "ours loss": med([x.loss for x in ours]),
        "naive loss": med([x.loss for x in naive]),
    }


def run(quick: bool = False, threads: int | None = None) -> tuple[list, list[str]]:
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    rounds = 1 if quick else 3
    pal_steps, pal_warm = (10, 2) if quick else (40, 5)
    cnn_steps, cnn_warm, cnn_rounds = (1, 1, 1) if quick else (2, 1, 2)
    peak = lambda: matmul_peak(seconds=0.5)
    rows, peaks = [], []
    for cell in CELLS:
        for T in SEQ_LENS:
            t = interleave(
                {
                    "ours": lambda cell=cell, T=T: palindrome_fast(cell, T, pal_steps, pal_warm),
                    "naive": lambda cell=cell, T=T: palindrome_naive(cell, T, pal_steps, pal_warm),
                    "bf16": lambda cell=cell, T=T: palindrome_fast(cell, T, pal_steps, pal_warm, bf16=True),
                    "unfused": lambda cell=cell, T=T: palindrome_fast(cell, T, pal_steps, pal_warm, fused_adam=False),
                    "peak": peak,
                },
                rounds,
            )
            row = _row(
                "palindrome",
                f"{cell} T={T}",
                t["ours"],
                t["naive"],
                t["bf16"],
                flops_per_sample("palindrome", cell, T),
                t["peak"],
            )
            row["ours/unfused Adam"] = float(
                np.median([a.samples_per_s / b.samples_per_s for a, b in zip(t["ours"], t["unfused"])])
            )
            peaks += t["peak"]
            try:
                row["trainable samples/s"] = trainable_palindrome(
                    cell, T, pal_steps if quick else 100, n_eval=TRAINABLE_N_EVAL[not quick]
                ).samples_per_s
            except Exception as e:  # the trainable changed under us: say so, keep the rest
                print(f"trainable {cell} T={T}: {type(e).__name__}: {e}")
                row["trainable samples/s"] = float("nan")
            rows.append(row)
            print(
                f"  palindrome {cell} T={T}: {row['ours samples/s']:,.0f} vs {row['naive samples/s']:,.0f} "
                f"samples/s, x{row['ours/naive']:.2f}",
                flush=True,
            )
    # VGG: the same model on both sides; the naive side is timed once per round for all variants
    t = interleave(
        {
            "naive": lambda: cnn_naive(cnn_steps, cnn_warm),
            "ours": lambda: cnn_fast(cnn_steps, cnn_warm),
            "channels_last": lambda: cnn_fast(cnn_steps, cnn_warm, channels_last=True),
            "bf16": lambda: cnn_fast(cnn_steps, cnn_warm, bf16=True),
            "peak": peak,
        },
        cnn_rounds,
    )
    flops = flops_per_sample("vgg")
    rows.append(_row("cifar-shaped", "VGG", t["ours"], t["naive"], t["bf16"], flops, t["peak"]))
    rows.append(
        _row("cifar-shaped", "VGG, ours with channels_last", t["channels_last"], t["naive"], None, flops, t["peak"])
    )
    peaks += t["peak"]
    print(f"  VGG: {rows[-2]['ours samples/s']:,.0f} vs {rows[-2]['naive samples/s']:,.0f} samples/s", flush=True)
    nb = 5 if quick else 20
    pipe = [(pipeline_speed("ours", nb), pipeline_speed("naive", nb)) for _ in range(rounds)]
    rows.append(
        {
            "benchmark": "cifar-shaped",
            "config": "input pipeline only (images/s)",
            "ours samples/s": float(np.median([a for a, _ in pipe])),
            "naive samples/s": float(np.median([b for _, b in pipe])),
            "ours/naive": float(np.median([a / b for a, b in pipe])),
        }
    )
    df = pd.DataFrame(rows)
    pal = df[df["benchmark"] == "palindrome"]
    verdict = lambda x: "met" if x >= TARGET else "NOT met"

    def target(col: str) -> str:
        r, vgg = pal[col], df[col].iloc[len(pal)]
        return (
            f"palindrome {verdict(r.min())} (x{r.min():.2f} .. x{r.max():.2f}, met by {int((r >= TARGET).sum())} "
            f"of {len(r)}), VGG {verdict(vgg)} (x{vgg:.2f})"
        )

    notes = [
        f"target ours/naive >= {TARGET:g}x: at fp32 (the default on the CPU) {target('ours/naive')}; with "
        f"--precision bf16 {target('ours+bf16/naive')}.",
        f"torch threads: {threads} (both sides); batch {BATCH}; palindrome {pal_steps} timed steps after "
        f"{pal_warm} warm-up, {rounds} interleaved rounds; VGG {cnn_steps} timed steps after {cnn_warm}, "
        f"{cnn_rounds} rounds; ratios = median over rounds of the per-round ratio.",
        f"% peak = training FLOPs per sample (torch's FLOP counter) x samples/s / the fp32 matmul peak "
        f"measured in every round beside the others at {threads} thread(s) ({min(peaks):.0f} .. {max(peaks):.0f} "
        "GFLOP/s: other load on the machine shows here too); above 100% = faster than that matmul (oneDNN "
        "convolutions, or a round where the matmul was slowed more).",
        "ours = studies.engine.loop's own loop (make_replicas, make_unit, then train_block: fused cells, "
        "on-device data, "
        "cross_entropy on logits, one sync per block); naive = numpy/PIL Dataset + DataLoader (no workers), "
        "scratch cells, softmax + CrossEntropyLoss, loss.item() and accuracy .item() every step.",
        "ours/unfused Adam = ours against ours with torch.optim.Adam's default update (for-loop over the "
        "parameters on the CPU) instead of the fused kernel the loop asks for.",
        "ours+bf16 = ours under torch.autocast('cpu', bfloat16): the loop with --precision bf16 (the "
        "default, auto, autocasts on CUDA only); naive stays fp32.",
        "trainable = the real studies.engine.loop.train outside Ray, one report block of "
        f"{pal_steps if quick else 100} steps incl. its held-out evaluation (2 x "
        f"{TRAINABLE_N_EVAL[not quick]} sequences) and checkpoint.",
        "naive loss is CrossEntropyLoss of softmax probabilities (the double softmax): it cannot leave "
        "[1.46, 2.47] for 10 classes, so the two loss columns are not comparable in value.",
    ]
    return [("Trainable throughput", df)], notes
