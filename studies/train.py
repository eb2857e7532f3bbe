"""The one training loop, shared by every study: a Ray Tune function trainable.

`train(config)` trains every seed of one configuration (`config["seeds"]`) in one trial: each seed
is a `Replica` with its own initialisation, data order and random streams, trained in turn block
by block. So ASHA and Optuna judge a configuration by the mean over its seeds and can never split
them. The config is flat (one name per hyperparameter: config key = model kwarg = table column);
`tune.report` goes once per iteration (an epoch of images, or `steps_per_report` palindrome steps)
with the mean over seeds under the plain metric names and each seed's values under `seed<k>/<m>`.
A checkpoint (every replica's model, optimizer and generator, the iteration, step and RNG states)
goes with every `checkpoint_every`-th report and the last one, so ASHA pauses, crashes and restores
resume where they left off. Runs on the GPU that Ray assigns (bf16 autocast, cudnn.benchmark,
channels_last) and on the CPU otherwise (fp32, or bf16 autocast with precision="bf16").

The parts are module-level functions that the benchmarks import: `build_model`, `batches`,
`train_step`, `train_block`, `measure`, `save_state` / `load_state`.
"""

from __future__ import annotations

import logging
import math
import os
import random
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from ray import tune

import datasets
from datasets.palindrome import generator as palindrome_generator
from models import CELLS, IMPLS, MLP, VGG, RecurrentClassifier


def _fused(cls, params, **kwargs) -> torch.optim.Optimizer:
    """`cls` with fused=True (one kernel per step instead of ~10 per parameter: what a small model's
    step is made of) where this torch has it for the parameters' device, else the default."""
    params = list(params)
    try:
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, TypeError):  # no fused kernel for this optimizer, device or torch version
        return cls(params, **kwargs)


OPTIMIZERS = {
    "adam": lambda p, c: _fused(torch.optim.Adam, p, lr=c["lr"], weight_decay=c["weight_decay"]),
    "nadam": lambda p, c: torch.optim.NAdam(p, lr=c["lr"], weight_decay=c["weight_decay"]),
    "rmsprop": lambda p, c: torch.optim.RMSprop(p, lr=c["lr"], weight_decay=c["weight_decay"]),
    "sgd": lambda p, c: _fused(torch.optim.SGD, p, lr=c["lr"], momentum=c["momentum"],
                               weight_decay=c["weight_decay"]),
}
DEFAULTS = dict(  # every key a config may set, with its default
    task="image",  # image | palindrome
    model="cnn",  # cnn | mlp | rnn
    dataset="digits", data_dir="data", n_train=None,  # images; n_train caps the training set
    augment=False,  # random flips and shifts, on the device
    image_size=None,  # images: downsample to image_size x image_size (area average) if larger; None keeps them
    width=1.0,  # cnn: channels x width (1.0: the hand-run 64..512)
    hidden=(128, 64), dropout=0.0,  # mlp sizes; dropout in mlp and cnn head
    cell="lstm", impl="fused", seq_len=5, hidden_size=128, steps_per_report=100,  # palindrome
    forget_bias=None,  # lstm: None keeps torch's init; 1.0 sets the forget gate's bias to 1 (Jozefowicz 2015)
    optimizer="adam", lr=1e-3, momentum=0.9, weight_decay=0.0, batch_size=128,
    l2=0.0,  # lambda of the penalty lambda * sum of parameter 2-norms, added to the loss
    clip=None,  # max gradient norm; None: no clipping
    double_softmax=False,  # the hand-run flaw: softmax before CrossEntropyLoss
    precision="auto",  # matmuls and convolutions: auto (bf16 autocast on a GPU, fp32 on the CPU) | bf16 | fp32
    iterations=10,  # reports per trial: epochs, or blocks of steps_per_report steps
    checkpoint_every=2,  # a checkpoint with every k-th report (and the last): the CNN's is ~110 MB per seed
    eval_batch=1024, n_eval=None,  # evaluation batch; held-out set size (palindromes: 4096 if None; images: all)
    fault_rate=0.0,  # fault injection: the probability that a trial crashes once (tests)
    seeds=(0,),  # the seeds this trial trains, one replica each
)
PRECISIONS = ("auto", "bf16", "fp32")
CHECKS = {  # config key -> (valid?, what is valid)
    "task": (lambda v: v in ("image", "palindrome"), "image or palindrome"),
    "model": (lambda v: v in ("cnn", "mlp", "rnn"), "cnn, mlp or rnn"),
    "optimizer": (lambda v: v in OPTIMIZERS, ", ".join(OPTIMIZERS)),
    "cell": (lambda v: v in CELLS, ", ".join(CELLS)),
    "impl": (lambda v: v in IMPLS, ", ".join(IMPLS)),
    "lr": (lambda v: isinstance(v, (int, float)) and v > 0, "a positive number"),
    "momentum": (lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "a number in [0, 1)"),
    "dropout": (lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "a number in [0, 1)"),
    "l2": (lambda v: isinstance(v, (int, float)) and v >= 0, "0 or more"),
    "weight_decay": (lambda v: isinstance(v, (int, float)) and v >= 0, "0 or more"),
    "width": (lambda v: isinstance(v, (int, float)) and v > 0, "a positive number"),
    "forget_bias": (lambda v: v is None or isinstance(v, (int, float)), "a number, or None for torch's init"),
    "seq_len": (lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1"),
    "image_size": (lambda v: v is None or (isinstance(v, int) and v >= 1), "a whole number >= 1, or None"),
    "n_eval": (lambda v: v is None or (isinstance(v, int) and v >= 1), "a whole number >= 1, or None"),
    "hidden_size": (lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1"),
    "batch_size": (lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1"),
    "iterations": (lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1"),
    "steps_per_report": (lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1"),
    "precision": (lambda v: v in PRECISIONS, ", ".join(PRECISIONS)),
    "clip": (lambda v: v is None or (isinstance(v, (int, float)) and v > 0), "a positive number"),
    "fault_rate": (lambda v: isinstance(v, (int, float)) and 0 <= v <= 1, "a probability in [0, 1]"),
    "seeds": (lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(s, int) for s in v),
              "a non-empty list of whole numbers"),
}


def check_config(config: dict) -> str | None:
    """The first problem of a config, as 'key=value: expected ...', or None if it is valid."""
    for k, v in config.items():
        if k not in DEFAULTS:
            return f"unknown hyperparameter {k!r}"
        if k in CHECKS and not CHECKS[k][0](v):
            return f"{k}={v!r}: expected {CHECKS[k][1]}"
    return None


def autocast_for(device: torch.device, precision: str):
    """The autocast context of a trial: bf16 on a GPU unless precision="fp32", and on the CPU only
    when asked (precision="bf16": worth it where the CPU has bf16 units, avx512_bf16 or AMX)."""
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext


N_TRAIN_EVAL = 10_000  # train accuracy is measured in eval mode on at most this many images
N_BN = 2048  # training images whose batch statistics BatchNorm uses at evaluation (see refresh_bn)
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")


def device_for_trial() -> torch.device:
    """The GPU Ray assigned to this trial, or the CPU."""
    try:
        import ray

        gpus = ray.get_gpu_ids() if ray.is_initialized() else []
    except Exception:
        gpus = []
    return torch.device("cuda") if gpus and torch.cuda.is_available() else torch.device("cpu")


def build_model(c: dict, shape: tuple[int, ...], num_classes: int) -> torch.nn.Module:
    if c["model"] == "cnn":
        return VGG(in_channels=shape[0], num_classes=num_classes, dropout=c["dropout"], width=c["width"])
    if c["model"] == "mlp":
        return MLP(math.prod(shape), hidden=tuple(c["hidden"]), num_classes=num_classes, dropout=c["dropout"])
    if c["model"] == "rnn":
        return RecurrentClassifier(c["cell"], c["impl"], 1, c["hidden_size"], num_classes,
                                   forget_bias=c["forget_bias"])
    raise ValueError(f"unknown model {c['model']!r}")


def loss_fn(logits: torch.Tensor, y: torch.Tensor, c: dict) -> torch.Tensor:
    if c["double_softmax"]:  # what the hand-run models did: CE of probabilities, not logits
        logits = logits.softmax(-1)
    return F.cross_entropy(logits.float(), y)


@torch.no_grad()
def refresh_bn(model: torch.nn.Module, x: torch.Tensor, batch_size: int, amp=nullcontext) -> None:
    """Set BatchNorm's running statistics to the average batch statistics of the current weights
    over `x` ("precise BN"). The running averages lag the weights by ~1/momentum steps: with a few
    steps per epoch, eval-mode accuracy sits at chance while the training loss falls."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    model.train()
    for i in range(0, len(x), batch_size):
        with amp():
            model(x[i : i + batch_size])
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum


@torch.no_grad()
def evaluate(model, x, y, c, amp) -> tuple[float, float, torch.Tensor]:
    """Mean loss, accuracy, and the predictions over (x, y), in eval mode."""
    model.eval()
    loss, preds = x.new_zeros((), dtype=torch.float32), []
    for i in range(0, len(x), c["eval_batch"]):
        with amp():
            logits = model(x[i : i + c["eval_batch"]])
        loss += loss_fn(logits, y[i : i + c["eval_batch"]], c) * len(logits)
        preds.append(logits.argmax(-1))
    model.train()
    pred = torch.cat(preds)
    return (loss / len(x)).item(), (pred == y).float().mean().item(), pred


def train_step(model, opt, params, x, y, c, amp=nullcontext) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on batch (x, y); returns the loss and logits, still on the device."""
    with amp():
        logits = model(x)
    loss = loss_fn(logits, y, c)
    objective = loss + c["l2"] * sum(p.norm(2) for p in params) if c["l2"] else loss
    opt.zero_grad(set_to_none=True)
    objective.backward()
    if c["clip"]:
        torch.nn.utils.clip_grad_norm_(params, c["clip"])
    opt.step()
    return loss, logits


def fault_iteration(c: dict) -> int | None:
    """Fault injection: the iteration at which this trial crashes (once), or None. Drawn from
    the config (so a test can tell which trials crash), and always after a checkpoint, so the
    retry resumes instead of starting over."""
    first = c["checkpoint_every"] + 1
    if not c["fault_rate"] or c["iterations"] < first:
        return None
    rng = random.Random(repr(sorted((k, v) for k, v in c.items() if k != "data_dir")))
    return rng.randint(first, c["iterations"]) if rng.random() < c["fault_rate"] else None


@dataclass
class Task:
    """What one trial trains on, shared by its seeds: images resident on the device (or None for
    palindromes), the input shape and the class names."""

    shape: tuple[int, ...]
    classes: tuple[str, ...]
    images: datasets.ImageData | None = None


def load_task(c: dict, dev: torch.device) -> Task:
    if c["task"] == "image":
        data = datasets.load_images(c["dataset"], c["data_dir"], c["n_train"])
        if c["n_eval"]:  # the first n of the fixed validation and test sets
            data.val_x, data.val_y = data.val_x[: c["n_eval"]], data.val_y[: c["n_eval"]]
            data.test_x, data.test_y = data.test_x[: c["n_eval"]], data.test_y[: c["n_eval"]]
        if c["image_size"] and c["image_size"] < data.shape[-1]:  # only ever smaller
            size = (c["image_size"],) * 2
            for k in ("train_x", "val_x", "test_x"):
                setattr(data, k, F.interpolate(getattr(data, k), size=size, mode="area"))
        data = data.to(dev)
        return Task(data.shape, data.classes, data)
    return Task((c["seq_len"],), tuple(str(i) for i in range(10)))


@dataclass
class Replica:
    """One seed of a configuration: its model, optimizer, training-data generator and held-out
    sets (the task's for images; per seed for palindromes)."""

    seed: int
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    gen: torch.Generator
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    train_eval: tuple[torch.Tensor, torch.Tensor] | None
    diverged_at: int | None = None  # the iteration whose loss was NaN or inf
    params: list = field(default_factory=list)

    def __post_init__(self):
        self.params = list(self.model.parameters())


def make_replica(c: dict, task: Task, seed: int, dev: torch.device) -> Replica:
    torch.manual_seed(seed)  # the model's initialisation
    model = build_model(c, task.shape, len(task.classes)).to(dev)
    if dev.type == "cuda" and c["model"] == "cnn":
        model = model.to(memory_format=torch.channels_last)
    opt = OPTIMIZERS[c["optimizer"]](model.parameters(), c)
    if task.images is not None:
        gen = torch.Generator(device=dev)
        gen.manual_seed(seed)
        d = task.images
        return Replica(seed, model, opt, gen, (d.val_x, d.val_y), (d.test_x, d.test_y),
                       (d.train_x[:N_TRAIN_EVAL], d.train_y[:N_TRAIN_EVAL]))
    n = c["n_eval"] or 4096
    val = datasets.palindromes(n, c["seq_len"], palindrome_generator(seed, 1, dev))
    test = datasets.palindromes(n, c["seq_len"], palindrome_generator(seed, 2, dev))
    return Replica(seed, model, opt, palindrome_generator(seed, 0, dev), val, test, None)


def batches(c: dict, task: Task, gen: torch.Generator):
    """One iteration's batches: an epoch over a permutation of the images (the last partial batch
    dropped), or `steps_per_report` batches of fresh palindromes."""
    if task.images is None:
        for _ in range(c["steps_per_report"]):
            yield datasets.palindromes(c["batch_size"], c["seq_len"], gen)
        return
    d = task.images
    perm = torch.randperm(len(d.train_x), generator=gen, device=gen.device)
    stop = max(len(perm) - c["batch_size"], 0) + 1
    for i in range(0, stop, c["batch_size"]):
        idx = perm[i : i + c["batch_size"]]
        x = d.train_x[idx]
        yield (datasets.augment(x, gen) if c["augment"] else x), d.train_y[idx]


def train_block(r: Replica, c: dict, task: Task, amp=nullcontext) -> tuple[float, float, int]:
    """One iteration of one replica: (mean training loss, training accuracy on its batches, steps).
    Sums stay on the device: one host sync, at the end."""
    dev = r.gen.device
    loss_sum, correct, seen, steps = torch.zeros((), device=dev), torch.zeros((), device=dev), 0, 0
    channels_last = dev.type == "cuda" and c["model"] == "cnn"
    for x, y in batches(c, task, r.gen):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss, logits = train_step(r.model, r.opt, r.params, x, y, c, amp)
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(-1) == y).sum()
        seen += len(y)
        steps += 1
    return (loss_sum / seen).item(), (correct / seen).item(), steps


def measure(r: Replica, c: dict, task: Task, train_loss: float, batch_acc: float, amp=nullcontext) -> dict:
    """One replica's metrics after an iteration: losses and accuracies on train (eval mode, or the
    fresh batches' accuracy for palindromes), validation and test, and test accuracy per class."""
    n = len(task.classes)
    if not math.isfinite(train_loss):
        return {"train_loss": train_loss, "train_acc": 0.0, "val_loss": math.nan, "val_acc": 0.0,
                "test_loss": math.nan, "test_acc": 0.0, **{f"test_acc_{k}": 0.0 for k in range(n)}}
    if task.images is not None:
        refresh_bn(r.model, task.images.train_x[:N_BN], c["eval_batch"], amp)
    m = {"train_loss": train_loss}
    m["train_acc"] = batch_acc if r.train_eval is None else evaluate(r.model, *r.train_eval, c, amp)[1]
    m["val_loss"], m["val_acc"], _ = evaluate(r.model, *r.val, c, amp)
    m["test_loss"], m["test_acc"], pred = evaluate(r.model, *r.test, c, amp)
    y = r.test[1]
    hits = torch.zeros(n, device=y.device).index_add_(0, y, (pred == y).float())
    counts = torch.bincount(y, minlength=n).clamp_min(1)
    m.update({f"test_acc_{k}": v for k, v in enumerate((hits / counts).tolist())})
    return m


def save_state(path: str, replicas: list[Replica], **counters) -> None:
    """Every replica's model, optimizer and generator, the counters, and the global RNG states."""
    torch.save({"replicas": [{"seed": r.seed, "model": r.model.state_dict(), "optimizer": r.opt.state_dict(),
                              "gen": r.gen.get_state(), "diverged_at": r.diverged_at} for r in replicas],
                "torch_rng": torch.get_rng_state(), "py_rng": random.getstate(), **counters},
               os.path.join(path, "state.pt"))


def load_state(path: str, replicas: list[Replica], dev: torch.device) -> dict:
    """Restore what `save_state` wrote into `replicas`; returns the counters."""
    state = torch.load(os.path.join(path, "state.pt"), map_location=dev, weights_only=False)
    for r, s in zip(replicas, state.pop("replicas"), strict=True):
        r.model.load_state_dict(s["model"])
        r.opt.load_state_dict(s["optimizer"])
        r.gen.set_state(s["gen"].to(r.gen.get_state().device))
        r.diverged_at = s["diverged_at"]
    torch.set_rng_state(state.pop("torch_rng"))
    random.setstate(state.pop("py_rng"))
    return state


def mean_over_seeds(per_seed: list[dict]) -> dict:
    """The configuration's metrics: the mean over its seeds (a diverged seed counts with accuracy 0,
    so a configuration that diverges for some seeds ranks below one that never does)."""
    out = {}
    for k in per_seed[0]:  # losses: the mean over the seeds whose loss is finite
        vals = [m[k] for m in per_seed if "acc" in k or math.isfinite(m[k])]
        out[k] = sum(vals) / len(vals) if vals else math.nan
    return out


def train(config: dict) -> None:
    """Ray Tune trainable: see the module docstring."""
    c = {**DEFAULTS, **config}
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)  # one line per checkpoint
    dev = device_for_trial()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or 1)
    random.seed(c["seeds"][0])
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp = autocast_for(dev, c["precision"])
    task = load_task(c, dev)
    replicas = [make_replica(c, task, seed, dev) for seed in c["seeds"]]
    iteration, step, restarts = 0, 0, 0
    last: dict[int, dict] = {}

    ckpt = tune.get_checkpoint()
    if ckpt:  # resume after a crash, or in a restored study
        with ckpt.as_directory() as d:
            state = load_state(d, replicas, dev)
        iteration, step, restarts, last = state["iteration"], state["step"], state["restarts"] + 1, state["last"]
    crash_at = fault_iteration(c) if not ckpt else None

    while iteration < c["iterations"]:
        iteration += 1
        steps = 0
        for r in replicas:
            if r.diverged_at is None:
                loss, acc, steps = train_block(r, c, task, amp)
                last[r.seed] = measure(r, c, task, loss, acc, amp)
                if not math.isfinite(loss):
                    r.diverged_at = iteration
        step += steps  # every live seed takes the same steps
        if iteration == crash_at:  # after the work, before the report: as a real crash would
            raise RuntimeError(f"injected fault at iteration {iteration} (fault_rate={c['fault_rate']})")
        per_seed = [last[r.seed] for r in replicas]
        metrics = {**mean_over_seeds(per_seed), "step": step, "samples": step * c["batch_size"],
                   "restarts": restarts, "diverged": all(r.diverged_at is not None for r in replicas)}
        for r, m in zip(replicas, per_seed):  # a diverged seed repeats its last report: its table row ends there
            metrics.update({f"seed{r.seed}/{k}": v for k, v in m.items()})
            metrics[f"seed{r.seed}/diverged_at"] = r.diverged_at or 0
        if metrics["diverged"]:  # every seed diverged: stop at once; the study goes on
            tune.report(metrics)
            return
        if iteration % c["checkpoint_every"] == 0 or iteration == c["iterations"]:
            with tempfile.TemporaryDirectory() as d:
                save_state(d, replicas, iteration=iteration, step=step, restarts=restarts, last=last)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        else:
            tune.report(metrics)
