"""A trial's config: every key it may set with its default (`DEFAULTS`: config key = model kwarg =
table column), what each key accepts (`CHECKS`, `check_config`), and the optimizers by name. The
training loop (studies.train) and the tasks (studies.tasks) read it; the runner checks every config
against it before Ray starts.
"""

from __future__ import annotations

import torch

from datasets import arithmetic
from models import CELLS, IMPLS
from models.lm import RECURRENT
from models.numpy_mlp import MLP_IMPLS


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
    # image | palindrome | toy (2-D points, datasets.toy: moons, circles, iris, blobs, quantiles) | arithmetic
    task="image",
    model="cnn",  # cnn | mlp | split_mlp (models.split_mlp: an MLP along the rows and one along the columns) | rnn
    dataset="digits", data_dir="data", n_train=None,  # images; n_train caps the training set
    augment=False,  # random flips and shifts, on the device
    image_size=None,  # images: downsample to image_size x image_size (area average) if larger; None keeps them
    width=1.0,  # cnn: channels x width (1.0: the hand-run 64..512); mlp, split_mlp: hidden sizes x width
    hidden=(128, 64), dropout=0.0,  # mlp sizes (or text: "128-64"); dropout in mlp and cnn head
    axis_hidden=(128,),  # split_mlp: sizes of its row MLP and of its column MLP (then `hidden` after them)
    # impl: rnn scratch | fused (see models.rnn); mlp torch (torch.nn layers) | numpy (models.numpy_mlp)
    cell="lstm", impl="fused", seq_len=5, hidden_size=128, steps_per_report=100,  # palindrome
    forget_bias=None,  # lstm forget gate, gru update gate: None keeps torch's init; 1.0 sets its bias to 1
    # arithmetic (datasets.arithmetic): training set A | B at train_scale x the hand-run sizes (A 50k + 50k, B 1M),
    # an embedding of `embed` numbers per character; an iteration trains on samples_per_report expressions (None:
    # one epoch), so that training sets of different sizes can get the same steps
    train_set="A", train_scale=1.0, embed=32, samples_per_report=None,
    # lm (word-level Penn Treebank, datasets.ptb; dataset="ptb"): cell lstm | gru | transformer of `layers` layers
    # (`heads` attention heads) and width hidden_size; TBPTT over batch_size streams in windows of seq_len words;
    # an iteration is an epoch over the first n_train words; n_eval words of valid and test; the `vocab` most
    # frequent words (None: all 10k)
    layers=1, heads=2, vocab=None,
    optimizer="adam", lr=1e-3, momentum=0.9, weight_decay=0.0, batch_size=128,
    l2=0.0,  # lambda of the penalty lambda * sum of parameter 2-norms, added to the loss
    clip=None,  # max gradient norm (of each seed's gradient); None: no clipping
    lr_schedule="none",  # none | step (lr x lr_gamma every lr_step_size iterations) | cosine (to 0 at the end)
    lr_step_size=10, lr_gamma=0.7,  # StepLR, counted in iterations (report blocks)
    pack="auto",  # train the seeds as one batched model (models.packed): auto (see train.packs) | on | off
    double_softmax=False,  # the hand-run flaw: softmax before CrossEntropyLoss
    precision="auto",  # matmuls and convolutions: auto (bf16 autocast on a GPU, fp32 on the CPU) | bf16 | fp32
    iterations=10,  # reports per trial: epochs, or blocks of steps_per_report steps
    checkpoint_every=2,  # a checkpoint with every k-th report (and the last): the CNN's is ~110 MB per seed
    eval_batch=1024, n_eval=None,  # evaluation batch; held-out set size (palindromes: 4096 if None; images: all)
    fault_rate=0.0,  # fault injection: the probability that a trial crashes once (tests)
    seeds=(0,),  # the seeds this trial trains, one replica each
)


def sizes(v, width: float = 1.0) -> tuple[int, ...]:
    """Layer sizes from a tuple, or from text such as "128-64" (as the tables and `--grid` write them),
    each times `width` (at least 1)."""
    if isinstance(v, str):
        v = [int(s) for s in v.split("-") if s.strip()]
    elif isinstance(v, int):
        v = [v]
    return tuple(max(1, round(h * width)) for h in v)


def _sizes_ok(v) -> bool:
    try:
        return not isinstance(v, bool) and all(h >= 1 for h in sizes(v))
    except (TypeError, ValueError):
        return False


PRECISIONS = ("auto", "bf16", "fp32")
SCHEDULES = ("none", "step", "cosine")
CHECKS = {  # config key -> (valid?, what is valid)
    "task": (lambda v: v in ("image", "palindrome", "toy", "arithmetic", "lm"),
             "image, palindrome, toy, arithmetic or lm"),
    "layers": (lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1"),
    "heads": (lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1"),
    "vocab": (lambda v: v is None or (isinstance(v, int) and v >= 2), "a whole number >= 2, or None"),
    "train_set": (lambda v: v in arithmetic.TRAIN_SETS, " or ".join(arithmetic.TRAIN_SETS)),
    "train_scale": (lambda v: isinstance(v, (int, float)) and v > 0, "a positive number"),
    "embed": (lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1"),
    "samples_per_report": (lambda v: v is None or (isinstance(v, int) and v >= 1), "a whole number >= 1, or None"),
    "model": (lambda v: v in ("cnn", "mlp", "split_mlp", "rnn"), "cnn, mlp, split_mlp or rnn"),
    "hidden": (lambda v: _sizes_ok(v), "layer sizes: whole numbers >= 1, such as (128, 64) or 128-64"),
    "axis_hidden": (lambda v: _sizes_ok(v) and len(sizes(v)) > 0, "layer sizes: whole numbers >= 1, such as (128,)"),
    "optimizer": (lambda v: v in OPTIMIZERS, ", ".join(OPTIMIZERS)),
    "cell": (lambda v: v in (*CELLS, "transformer"), ", ".join(CELLS) + ", or transformer (task lm)"),
    "impl": (lambda v: v in IMPLS + MLP_IMPLS, ", ".join(IMPLS + MLP_IMPLS)),
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
    "lr_schedule": (lambda v: v in SCHEDULES, ", ".join(SCHEDULES)),
    "lr_step_size": (lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1"),
    "lr_gamma": (lambda v: isinstance(v, (int, float)) and 0 < v <= 1, "a number in (0, 1]"),
    "pack": (lambda v: v in ("auto", "on", "off"), "auto, on or off"),
    "clip": (lambda v: v is None or (isinstance(v, (int, float)) and v > 0), "a positive number"),
    "fault_rate": (lambda v: isinstance(v, (int, float)) and 0 <= v <= 1, "a probability in [0, 1]"),
    "seeds": (lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(s, int) for s in v),
              "a non-empty list of whole numbers"),
}


LM_CELLS = (*RECURRENT, "transformer")


def check_config(config: dict) -> str | None:
    """The first problem of a config, as 'key=value: expected ...', or None if it is valid."""
    for k, v in config.items():
        if k not in DEFAULTS:
            return f"unknown hyperparameter {k!r}"
        if k in CHECKS and not CHECKS[k][0](v):
            return f"{k}={v!r}: expected {CHECKS[k][1]}"
    c = {**DEFAULTS, **config}  # the rules that tie keys together, on the values a trial will see
    if c["cell"] == "transformer" and c["task"] != "lm":
        return "cell='transformer': only a language model (task='lm') has one"
    if c["task"] == "lm" and c["cell"] not in LM_CELLS:
        return f"cell={c['cell']!r}: a language model's cell is {', '.join(LM_CELLS)}"
    if c["task"] == "lm" and c["cell"] == "transformer" and c["hidden_size"] % c["heads"]:
        return f"hidden_size={c['hidden_size']}: not divisible by heads={c['heads']}; change either"
    if c["model"] == "mlp" and c["impl"] == "numpy" and c["dropout"]:
        return f"dropout={c['dropout']!r}: impl='numpy' has no dropout; use impl='torch', or dropout=0"
    return None
