"""The task protocol: what a trial trains on, in five small functions. The loop
(`studies.engine.loop`) knows this protocol and nothing of the tasks themselves; the built-in tasks
(`studies.engine.tasks`: image, palindrome, toy, arithmetic, lm) are plain instances of it, and so is
a user's own.

    TASK = Task(name="signals", load=load_signals, model=build_cnn,
                defaults=dict(kernel=5), checks={"kernel": (lambda v: v % 2 == 1, "an odd whole number")})

- `load(config, device)`: the data, once per trial, shared by its seeds: a `Data` (train, validation
  and test tensors resident on the device), or anything `for_seed` turns into one;
- `for_seed(config, loaded, seed, device)`: one seed's `Data` (default: the shared one);
- `model(config, data)`: one seed's model, built after `torch.manual_seed(seed)`;
- `batches(config, data, generator)`: one iteration's (inputs, targets) batches (default: an epoch
  over a random permutation of the training set, drawn from the seed's generator);
- `measure(model, config, data, train_loss, batch_acc, amp)`: the metrics after an iteration
  (default: loss and accuracy on train, validation and test, and test accuracy per class or per
  extra test set).

`defaults` are the task's own hyperparameters with their defaults (config key = column
`config.<key>`), `checks` what each accepts, and `rules` a check across keys; all of them run
before Ray starts, with the same one-line errors as the engine's keys.
"""

from __future__ import annotations

import copy
import importlib
import math
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

N_BN = 512  # training samples whose batch statistics BatchNorm uses at evaluation (see refresh_bn)
N_TRAIN_EVAL = N_BN  # train accuracy is measured in eval mode on the first this many training samples
Pair = tuple[torch.Tensor, torch.Tensor]  # (inputs, targets)


@dataclass
class Data:
    """One seed's data, resident on the device: what the default `batches` and `measure` read.
    `train` is None where every batch is generated afresh (palindromes); `train_eval` is what the
    training accuracy is measured on (default: the first N_TRAIN_EVAL training samples; None: the
    accuracy on the iteration's own batches); `tests` are extra test sets, each measured as
    `test_acc_<name>` in place of the per-class accuracies."""

    train: Pair | None
    val: Pair
    test: Pair | None  # None on a report between the test reports (config `test_every`)
    classes: tuple[str, ...]
    train_eval: Pair | None = None
    tests: dict[str, Pair] = field(default_factory=dict)
    shape: tuple[int, ...] | None = None  # one input's shape (default: the training inputs')

    def __post_init__(self):
        if self.train_eval is None and self.train is not None:
            self.train_eval = (self.train[0][:N_TRAIN_EVAL], self.train[1][:N_TRAIN_EVAL])
        if self.shape is None:
            self.shape = tuple((self.train or self.val)[0].shape[1:])


def shared(c: dict, loaded: Data, seed: int, dev: torch.device) -> Data:
    """The default `for_seed`: every seed trains on the data `load` gave."""
    return loaded


def seeded(c: dict, seed: int, dev: torch.device) -> torch.Generator:
    """The default generator of a seed's data order."""
    return torch.Generator(device=dev).manual_seed(seed)


def in_batches(x: torch.Tensor, y: torch.Tensor, order: torch.Tensor, batch_size: int) -> Iterator[Pair]:
    """(x, y) in the order of the indices `order`, `batch_size` at a time (the last partial batch dropped)."""
    for i in range(0, max(len(order) - batch_size, 0) + 1, batch_size):
        idx = order[i : i + batch_size]
        yield x[idx], y[idx]


def epochs(c: dict, d: Data, gen: torch.Generator) -> Iterator[Pair]:
    """The default `batches`: an epoch over a random permutation of the training set, in batches of
    `batch_size` (the last partial batch dropped)."""
    x, y = d.train
    yield from in_batches(x, y, torch.randperm(len(y), generator=gen, device=gen.device), c["batch_size"])


def loss_fn(logits: torch.Tensor, y: torch.Tensor, c: dict, per_seed: bool = False) -> torch.Tensor:
    """The mean cross-entropy over the batch; with `per_seed`, logits (K, B, C) and targets (K, B)
    of K packed seeds give K means."""
    if c["double_softmax"]:  # what the hand-run models did: CE of probabilities, not logits
        logits = logits.softmax(-1)
    if per_seed:
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none").view(y.shape).mean(1)
    return F.cross_entropy(logits.float(), y)


def in_layout(x: torch.Tensor) -> torch.Tensor:
    """An image batch channels_last, the layout of the loop's convolutions (`loop.make_replicas`)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


@torch.inference_mode()
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
            model(in_layout(x[i : i + batch_size]))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum


def folded(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` in which each BatchNorm that follows a convolution in an
    `nn.Sequential` is folded into the convolution's weights (`fuse_conv_bn_eval`): the same function
    up to float rounding, with one pass less over every feature map. `model` itself is left as it is;
    a model without such a pair is returned unchanged."""
    if not any(conv_bn_pairs(model)):
        return model
    out = copy.deepcopy(model).eval()
    with torch.no_grad():
        for seq, i in list(conv_bn_pairs(out)):
            seq[i], seq[i + 1] = fuse_conv_bn_eval(seq[i], seq[i + 1]), nn.Identity()
    return out


def conv_bn_pairs(model: nn.Module) -> Iterator[tuple[nn.Sequential, int]]:
    """(sequential, i) for each convolution at `i` followed by a foldable BatchNorm (see tracked_bn)."""
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            for i in range(len(seq) - 1):
                if type(seq[i]) in (nn.Conv1d, nn.Conv2d, nn.Conv3d) and tracked_bn(seq[i + 1]):
                    yield seq, i


def tracked_bn(m: nn.Module) -> bool:
    """A BatchNorm whose eval mode uses running statistics (not batch ones): one that can be folded."""
    return isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None


@torch.inference_mode()
def evaluate(model, x, y, c, amp=nullcontext) -> tuple[float, float, torch.Tensor]:
    """Mean loss, accuracy, and the predictions over (x, y), in eval mode, `eval_batch` at a time."""
    model.eval()
    loss, preds = x.new_zeros((), dtype=torch.float32), []
    for i in range(0, len(x), c["eval_batch"]):
        with amp():
            logits = model(in_layout(x[i : i + c["eval_batch"]]))
        loss += loss_fn(logits, y[i : i + c["eval_batch"]], c) * len(logits)
        preds.append(logits.argmax(-1))
    model.train()
    pred = torch.cat(preds)
    return (loss / len(x)).item(), (pred == y).float().mean().item(), pred


def diverged_metrics(d: Data, train_loss: float) -> dict:
    """What a seed whose loss is NaN or inf reports: accuracy 0 and no held-out loss."""
    tests = list(d.tests) or range(len(d.classes))
    return {
        "train_loss": train_loss,
        "train_acc": 0.0,
        "val_loss": math.nan,
        "val_acc": 0.0,
        "test_loss": math.nan,
        "test_acc": 0.0,
        **{f"test_acc_{k}": 0.0 for k in tests},
        "train_loss_var": math.nan,
    }


def classify(model, c: dict, d: Data, train_loss: float, batch_acc: float, amp=nullcontext) -> dict:
    """The default `measure`: loss and accuracy on the training set (in eval mode, on `train_eval`;
    else the iteration's batches' accuracy), validation and test; test accuracy on each extra test
    set (`test_acc_<name>`), else per class (`test_acc_<k>`). A model with BatchNorm first gets its
    statistics from the current weights (see refresh_bn), and is measured with them folded into its
    convolutions (see folded)."""
    if not math.isfinite(train_loss):
        return diverged_metrics(d, train_loss)
    if d.train is not None:
        refresh_bn(model, d.train[0][:N_BN], c["eval_batch"], amp)
    model = folded(model)
    m = {"train_loss": train_loss}
    m["train_acc"] = batch_acc if d.train_eval is None else evaluate(model, *d.train_eval, c, amp)[1]
    m["val_loss"], m["val_acc"], _ = evaluate(model, *d.val, c, amp)
    if d.test is None:  # a report between the test reports (`test_every`)
        return m
    m["test_loss"], m["test_acc"], pred = evaluate(model, *d.test, c, amp)
    if d.tests:
        m.update({f"test_acc_{k}": evaluate(model, *t, c, amp)[1] for k, t in d.tests.items()})
        return m
    y, n = d.test[1], len(d.classes)
    hits = torch.zeros(n, device=y.device).index_add_(0, y, (pred == y).float())
    counts = torch.bincount(y, minlength=n).clamp_min(1)
    m.update({f"test_acc_{k}": v for k, v in enumerate((hits / counts).tolist())})
    return m


Check = tuple[Callable[[Any], bool], str]  # (valid?, what is valid)
WHOLE: Check = (lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1")
WHOLE_OR_NONE: Check = (lambda v: v is None or (isinstance(v, int) and v >= 1), "a whole number >= 1, or None")
POSITIVE: Check = (lambda v: isinstance(v, (int, float)) and v > 0, "a positive number")


@dataclass(frozen=True)
class Task:
    """What a trial trains on: see the module docstring."""

    name: str
    load: Callable[[dict, torch.device], Any]
    model: Callable[[dict, Data], torch.nn.Module]
    for_seed: Callable[[dict, Any, int, torch.device], Data] = shared
    batches: Callable[[dict, Data, torch.Generator], Iterator[Pair]] = epochs
    measure: Callable[..., dict] = classify
    generator: Callable[[dict, int, torch.device], torch.Generator] = seeded
    defaults: dict = field(default_factory=dict)  # the task's own hyperparameters and their defaults
    checks: dict[str, Check] = field(default_factory=dict)  # key -> (valid?, what is valid)
    rules: Callable[[dict], str | None] | None = None  # across keys: the first problem, or None


def import_ref(ref: str, what: str, hint: str) -> Any:
    """The object an importable name `package.module:NAME` (or `package.module.NAME`) names; ValueError
    with `what` and `hint` where it names none."""
    module, sep, attr = ref.rpartition(":") if ":" in ref else ref.rpartition(".")
    if not sep or not module:
        raise ValueError(f"{what}={ref!r}: {hint}")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{what}={ref!r}: cannot import it ({e}); check the module and the name") from None


def resolve_task(ref: Task | str) -> Task:
    """A task given as an object, a built-in name (`image`, `palindrome`, `toy`, `arithmetic`,
    `lm`) or an importable name (`package.module:TASK` or `package.module.TASK`); ValueError with
    what to give where it is none of these."""
    if isinstance(ref, Task):
        return ref
    from studies.engine.tasks import BUILTIN

    if not isinstance(ref, str):
        raise ValueError(f"task={ref!r}: expected a Task, a built-in name ({', '.join(BUILTIN)}) or module:NAME")
    if ref in BUILTIN:
        return BUILTIN[ref]
    task = import_ref(ref, "task", f"not a built-in task ({', '.join(BUILTIN)}); give a Task or module:NAME")
    if not isinstance(task, Task):
        raise ValueError(f"task={ref!r} is a {type(task).__name__}, not a studies.Task")
    return task
