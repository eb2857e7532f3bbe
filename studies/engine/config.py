"""A trial's config: the keys the loop itself reads (`DEFAULTS`, what each accepts in `CHECKS`), the
optimizers by name, and `check_config`, which checks a config against these and the task's own keys
before Ray starts. The config is flat: config key = model kwarg = table column `config.<key>`.
"""

from __future__ import annotations

import torch

from studies.engine.task import WHOLE, WHOLE_OR_NONE, Task, resolve_task


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
    "sgd": lambda p, c: _fused(torch.optim.SGD, p, lr=c["lr"], momentum=c["momentum"], weight_decay=c["weight_decay"]),
}
DEFAULTS = dict(  # every key the loop reads, with its default; a task adds its own (Task.defaults)
    task="image",  # a built-in task (image, palindrome, toy, arithmetic, lm), a Task, or module:NAME
    optimizer="adam",
    lr=1e-3,
    momentum=0.9,
    weight_decay=0.0,
    batch_size=128,
    l2=0.0,  # lambda of the penalty lambda * sum of parameter 2-norms, added to the loss
    clip=None,  # max gradient norm (of each seed's gradient); None: no clipping
    lr_schedule="none",  # none | step (lr x lr_gamma every lr_step_size iterations) | cosine (to 0 at the end)
    lr_step_size=10,
    lr_gamma=0.7,  # StepLR, counted in iterations (report blocks)
    pack="auto",  # train the seeds as one batched model (models.packed): auto (see loop.packs) | on | off
    compile="auto",  # the training step through torch.compile: auto (see loop.compiles) | on | off
    double_softmax=False,  # the hand-run flaw: softmax before CrossEntropyLoss
    precision="auto",  # matmuls and convolutions: auto (bf16 autocast on a GPU, fp32 on the CPU) | bf16 | fp32
    iterations=10,  # reports per trial: epochs, or blocks of steps
    checkpoint_every=2,  # a checkpoint with every k-th report (and the last): the CNN's is ~110 MB per seed
    eval_batch=1024,  # evaluation batch
    test_every=1,  # the test sets are measured every k-th report and the last; None: the last only
    fault_rate=0.0,  # fault injection: the probability that a trial crashes once (tests)
    seeds=(0,),  # the seeds this trial trains, one replica each
)

PRECISIONS = ("auto", "bf16", "fp32")
SCHEDULES = ("none", "step", "cosine")
CHECKS = {  # config key -> (valid?, what is valid)
    "optimizer": (lambda v: v in OPTIMIZERS, ", ".join(OPTIMIZERS)),
    "lr": (lambda v: isinstance(v, (int, float)) and v > 0, "a positive number"),
    "momentum": (lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "a number in [0, 1)"),
    "l2": (lambda v: isinstance(v, (int, float)) and v >= 0, "0 or more"),
    "weight_decay": (lambda v: isinstance(v, (int, float)) and v >= 0, "0 or more"),
    "batch_size": WHOLE,
    "iterations": WHOLE,
    "lr_step_size": WHOLE,
    "eval_batch": WHOLE,
    "test_every": WHOLE_OR_NONE,
    "checkpoint_every": WHOLE,
    "precision": (lambda v: v in PRECISIONS, ", ".join(PRECISIONS)),
    "lr_schedule": (lambda v: v in SCHEDULES, ", ".join(SCHEDULES)),
    "lr_gamma": (lambda v: isinstance(v, (int, float)) and 0 < v <= 1, "a number in (0, 1]"),
    "pack": (lambda v: v in ("auto", "on", "off"), "auto, on or off"),
    "compile": (lambda v: v in ("auto", "on", "off"), "auto, on or off"),
    "clip": (lambda v: v is None or (isinstance(v, (int, float)) and v > 0), "a positive number"),
    "fault_rate": (lambda v: isinstance(v, (int, float)) and 0 <= v <= 1, "a probability in [0, 1]"),
    "seeds": (
        lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(s, int) for s in v),
        "a non-empty list of whole numbers",
    ),
}


def full_config(config: dict, task: Task | None = None) -> dict:
    """`config` over the defaults of the engine and of its task."""
    task = task or resolve_task(config.get("task", DEFAULTS["task"]))
    return {**DEFAULTS, **task.defaults, **config}


def check_config(config: dict, task: Task | None = None) -> str | None:
    """The first problem of a config, as 'key=value: expected ...', or None if it is valid: every key
    is the engine's or its task's, each value is one its check accepts, and the task's rules hold."""
    if task is None:
        try:
            task = resolve_task(config.get("task", DEFAULTS["task"]))
        except ValueError as e:
            return str(e)
    checks = {**CHECKS, **task.checks}
    for k, v in config.items():
        if k not in DEFAULTS and k not in task.defaults:
            return f"unknown hyperparameter {k!r}: neither the loop's nor task {task.name!r}'s"
        if k in checks and k != "task" and not checks[k][0](v):
            return f"{k}={v!r}: expected {checks[k][1]}"
    return task.rules({**DEFAULTS, **task.defaults, **config}) if task.rules else None
