"""The one training loop, shared by every study: a Ray Tune function trainable.

`train(config)` trains every seed of one configuration (`config["seeds"]`) in one trial: each seed
is a `Replica` with its own initialisation, data, data order and random streams. So ASHA and Optuna
judge a configuration by the mean over its seeds and can never split them. What the trial trains on
is its task (`studies.engine.task`: load, for_seed, model, batches, measure); the loop knows nothing
else of it. What an optimizer steps is a `Unit`: one seed's model, or all seeds packed into one
batched model (models.packed) where the model packs. `tune.report` goes once per iteration (an
epoch, or a block of steps) in the form of `studies.engine.seeds`. A checkpoint (every replica's
model and generator, each unit's optimizer and lr schedule, the counters and RNG states) goes with
every `checkpoint_every`-th report and the last one, so ASHA pauses, crashes and restores resume
where they left off. A checkpoint is written to a temporary file and renamed, with its size and
CRC-32 beside it; one that is not whole is never loaded: the trial falls back to the one before
(`studies.engine.checkpoint`). Runs on the GPU that Ray assigns (bf16 autocast, cudnn.benchmark) and on the
CPU otherwise (fp32, or bf16 autocast with precision="bf16"); convolutions channels_last on both. The test
sets are measured every `test_every`-th report and the last (None: the last only).

The parts are module-level functions that the benchmarks import: `make_replicas`, `make_units`,
`train_step`, `train_block`, `measure`, `save_state` / `load_state`.
"""

from __future__ import annotations

import logging
import math
import os
import random
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace

import torch

from models.packed import Packed, pack, packable
from studies.engine.checkpoint import load_state, restore, save_state  # noqa: F401 (imported from here too)
from studies.engine.config import OPTIMIZERS, full_config
from studies.engine.seeds import mean_over_seeds, seed_metrics  # noqa: F401 (imported from here too)
from studies.engine.task import Data, Task, loss_fn, resolve_task


def autocast_for(device: torch.device, precision: str):
    """The autocast context of a trial: bf16 on a GPU unless precision="fp32", and on the CPU only
    when asked (precision="bf16": worth it where the CPU has bf16 units, avx512_bf16 or AMX)."""
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext


def device_for_trial() -> torch.device:
    """The GPU Ray assigned to this trial, or the CPU."""
    try:
        import ray

        gpus = ray.get_gpu_ids() if ray.is_initialized() else []
    except Exception:
        gpus = []
    return torch.device("cuda") if gpus and torch.cuda.is_available() else torch.device("cpu")


def forward_loss(model, params, x, y, c, amp=nullcontext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The differentiable part of a step: (loss, objective, logits) of batch (x, y). A packed model takes
    K seeds' batches stacked, (K, B, ...), and gives K losses; the objective adds each seed's penalty on
    its own parameters."""
    packed = isinstance(model, Packed)
    with amp():
        logits = model(x)
    loss = loss_fn(logits, y, c, per_seed=packed)
    objective = loss
    if c["l2"]:
        objective = loss + c["l2"] * sum(p.flatten(1).norm(dim=1) if packed else p.norm(2) for p in params)
    return loss, objective, logits


@dataclass
class Replica:
    """One seed of a configuration: its model, its data and the generator of its data order."""

    seed: int
    model: torch.nn.Module
    gen: torch.Generator
    data: Data
    diverged_at: int | None = None  # the iteration whose loss was NaN or inf
    step_loss_var: float = math.nan  # the last iteration's step-to-step variance of the training loss


@dataclass
class Unit:
    """What one optimizer steps: one replica's model, or the replicas packed into one batched model
    (`packed`: parameters with a leading seed axis; `sync` writes them into the replicas' models,
    which evaluation and checkpoints read)."""

    replicas: list[Replica]
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    packed: bool = False
    sched: torch.optim.lr_scheduler.LRScheduler | None = None
    params: list = field(default_factory=list)
    forward: Callable = forward_loss  # the step's differentiable part: forward_loss, or its compiled form

    def __post_init__(self):
        self.params = list(self.model.parameters())

    def sync(self) -> None:
        if self.packed:
            self.model.unpack_into([r.model for r in self.replicas])


def has_conv(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def make_replicas(c: dict, task: Task, loaded, dev: torch.device) -> list[Replica]:
    """One replica per seed of `c["seeds"]`: its data, then its model from `torch.manual_seed(seed)`."""
    out = []
    for seed in c["seeds"]:
        data = task.for_seed(c, loaded, seed, dev)
        torch.manual_seed(seed)  # the model's initialisation
        model = task.model(c, data).to(dev)
        if has_conv(model):  # the faster layout on the GPU and on the CPU (BENCHMARKS.md, evaluation)
            model = model.to(memory_format=torch.channels_last)
        out.append(Replica(seed, model, task.generator(c, seed, dev), data))
    return out


def packs(c: dict, model: torch.nn.Module, dev: torch.device) -> bool:
    """Whether a trial packs its seeds: `pack="on"` wherever the model packs (models.packed.packable);
    "auto" too, on a GPU (each small kernel launched once for K seeds instead of K times) and on the
    CPU but for the fused LSTM, whose oneDNN kernel runs one seed faster than the grouped matmuls run
    it (BENCHMARKS.md, packed trials). A model that does not pack (a user's own) trains seed by seed."""
    if c["pack"] == "off" or len(c["seeds"]) < 2 or not packable(model):
        return False
    fused_lstm = isinstance(getattr(model, "rnn", None), torch.nn.LSTM)
    return c["pack"] == "on" or dev.type == "cuda" or not fused_lstm


def make_scheduler(opt: torch.optim.Optimizer, c: dict) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The lr schedule, stepped once per iteration (report block): StepLR multiplies the lr by
    `lr_gamma` every `lr_step_size` iterations; cosine anneals it to 0 over `iterations`."""
    if c["lr_schedule"] == "step":
        return torch.optim.lr_scheduler.StepLR(opt, c["lr_step_size"], c["lr_gamma"])
    if c["lr_schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, c["iterations"])
    return None


def compiles(c: dict, dev: torch.device) -> bool:
    """Whether a trial's training step goes through `torch.compile` (`compiled`): "on" everywhere, "off"
    never, and "auto" nowhere for now. On the 2-core CPU the compiled step gains x1.15-1.17 only for packed
    LSTM and GRU cells (x1.06 the packed deep MLP, x0.82-0.99 elsewhere), and its first compile of a shape
    (1-17 s) takes 500-2,500 steps to earn back (BENCHMARKS.md, compiled); whole quick studies run x0.78-1.02
    with it (compile_studies); on a GPU it is not measured yet."""
    return c["compile"] == "on"


def compiled(dev: torch.device):
    """`forward_loss` through torch.compile: inductor fuses the elementwise work (the gates of a packed or
    scratch recurrent cell; torch's own RNN/LSTM/GRU modules run as they are, Dynamo leaves them out) and
    AOTAutograd compiles its backward; on a GPU with CUDA graphs ("reduce-overhead"), so a step is a
    replay, not dozens of launches. Static shapes: every training batch of a trial has the same shape (the
    last partial batch is dropped). Inductor's FX graph cache (TORCHINDUCTOR_CACHE_DIR, by default one per
    machine and user) lets every trial of a shape after the first load its kernels instead of compiling."""
    mode = "reduce-overhead" if dev.type == "cuda" else "default"
    return torch.compile(forward_loss, dynamic=False, mode=mode)


def make_unit(c: dict, replicas: list[Replica], packed: bool) -> Unit:
    model = pack([r.model for r in replicas]) if packed else replicas[0].model
    opt = OPTIMIZERS[c["optimizer"]](model.parameters(), c)
    dev = replicas[0].gen.device
    forward = compiled(dev) if compiles(c, dev) else forward_loss
    return Unit(replicas, model, opt, packed, make_scheduler(opt, c), forward=forward)


def make_units(c: dict, replicas: list[Replica], dev: torch.device) -> list[Unit]:
    """All replicas as one packed unit where they pack (see `packs`), else one unit per replica."""
    if packs(c, replicas[0].model, dev):
        return [make_unit(c, replicas, True)]
    return [make_unit(c, [r], False) for r in replicas]


@torch.no_grad()
def clip_per_seed(params: list[torch.Tensor], max_norm: float) -> None:
    """`clip_grad_norm_` for each seed of packed parameters (leading seed axis) on its own."""
    norms = sum(p.grad.flatten(1).pow(2).sum(1) for p in params).sqrt()
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)  # the formula of clip_grad_norm_
    torch._foreach_mul_([p.grad for p in params], [coef.view(-1, *[1] * (p.dim() - 1)) for p in params])


def train_step(model, opt, params, x, y, c, amp=nullcontext, forward=forward_loss) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on batch (x, y); returns the loss and logits, still on the device. A packed
    model takes K seeds' batches stacked, (K, B, ...), and gives K losses: each seed's penalty and
    clipping read its own parameters and gradient only. `forward`: `forward_loss`, or its compiled form
    (`compiled`); the clipping and the optimizer's (foreach or fused) update stay eager, so a changing lr
    never recompiles."""
    packed = isinstance(model, Packed)
    loss, objective, logits = forward(model, params, x, y, c, amp)
    if forward is not forward_loss:  # a CUDA graph's outputs are overwritten by its next replay
        loss = loss.detach().clone()
    opt.zero_grad(set_to_none=True)
    objective.sum().backward()
    if c["clip"]:
        if packed:
            clip_per_seed(params, c["clip"])
        else:
            torch.nn.utils.clip_grad_norm_(params, c["clip"])
    opt.step()
    return loss, logits


def train_block(u: Unit, c: dict, task: Task, amp=nullcontext) -> tuple:
    """One iteration of a unit: (mean training loss, training accuracy on its batches, steps); of a
    packed unit, the same with a list of K losses and K accuracies, each seed on its own batches (drawn
    from its own generator, stacked). Sums stay on the device: one host sync, at the end. Each
    replica's `step_loss_var` is set to the step-to-step variance of its loss over the iteration: half the
    mean squared difference of successive steps' losses, which leaves out the loss's slow trend."""
    dev = u.replicas[0].gen.device
    shape = (len(u.replicas),) if u.packed else ()
    loss_sum, correct, seen, steps = torch.zeros(shape, device=dev), torch.zeros(shape, device=dev), 0, 0
    jumps, prev = torch.zeros(shape, device=dev), None  # sum of squared step-to-step differences of the loss
    channels_last = has_conv(u.model)
    for pairs in zip(*(task.batches(c, r.data, r.gen) for r in u.replicas)):
        x, y = (torch.stack(t) for t in zip(*pairs)) if u.packed else pairs[0]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss, logits = train_step(u.model, u.opt, u.params, x, y, c, amp, u.forward)
        loss_sum += loss.detach() * y.shape[-1]
        correct += (logits.argmax(-1) == y).sum(-1)
        seen += y.shape[-1]
        steps += 1
        if prev is not None:
            jumps += (loss.detach() - prev) ** 2
        prev = loss.detach()
    var = jumps / (2 * (steps - 1)) if steps > 1 else torch.full(shape, math.nan, device=dev)
    loss, acc, var = torch.stack([loss_sum / seen, correct / seen, var]).tolist()  # the one host sync
    for one, v in zip(u.replicas, var if u.packed else [var]):
        one.step_loss_var = v
    return loss, acc, steps


def seed_results(u: Unit, loss, acc) -> list[tuple[Replica, float, float]]:
    """(replica, its loss, its accuracy) for each seed of a unit, from `train_block`'s loss and accuracy:
    lists of K values for a packed unit, single values otherwise."""
    return list(zip(u.replicas, *((loss, acc) if u.packed else ([loss], [acc]))))


def tests_at(c: dict, iteration: int) -> bool:
    """Whether the report of `iteration` measures the test sets: every `test_every`-th and the last."""
    return iteration == c["iterations"] or (c["test_every"] is not None and iteration % c["test_every"] == 0)


def measure(
    r: Replica, c: dict, task: Task, train_loss: float, batch_acc: float, amp=nullcontext, test: bool = True
) -> dict:
    """One replica's metrics after an iteration: the task's (`Task.measure`), and the step-to-step
    variance of the training loss (`train_loss_var`), and the seconds the measurement took (`eval_s`).
    Without `test`, the task measures a `Data` whose test sets are gone (`test` None, no `tests`)."""
    data = r.data if test else replace(r.data, test=None, tests={})
    t = time.perf_counter()
    m = task.measure(r.model, c, data, train_loss, batch_acc, amp)
    m.setdefault("train_loss_var", r.step_loss_var)
    m.setdefault("eval_s", time.perf_counter() - t)
    return m


def fault_iteration(c: dict) -> int | None:
    """Fault injection: the iteration at which this trial crashes (once), or None. Drawn from
    the config (so a test can tell which trials crash), and always after a checkpoint, so the
    retry resumes instead of starting over."""
    first = c["checkpoint_every"] + 1
    if not c["fault_rate"] or c["iterations"] < first:
        return None
    rng = random.Random(repr(sorted((k, v) for k, v in c.items() if k != "data_dir")))
    return rng.randint(first, c["iterations"]) if rng.random() < c["fault_rate"] else None


def train(config: dict, task: Task | None = None) -> None:
    """Ray Tune trainable: see the module docstring. `task` (passed with `tune.with_parameters`) is
    the study's task; None: the one `config["task"]` names."""
    from ray import tune

    task = task or resolve_task(config.get("task", "image"))
    c = full_config(config, task)
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)  # one line per checkpoint
    dev = device_for_trial()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or 1)
    random.seed(c["seeds"][0])
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp = autocast_for(dev, c["precision"])
    if compiles(c, dev):  # a reused actor's earlier trials' graphs go; each unit's model is one more graph
        torch._dynamo.reset()
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 2 * len(c["seeds"]))
    replicas = make_replicas(c, task, task.load(c, dev), dev)
    units = make_units(c, replicas, dev)
    iteration, step, restarts = 0, 0, 0
    last: dict[int, dict] = {}

    ckpt = tune.get_checkpoint()
    state = restore(ckpt, units, dev) if ckpt else None  # resume after a crash, or in a restored study
    if state is not None:
        iteration, step, restarts, last = state["iteration"], state["step"], state["restarts"] + 1, state["last"]
    elif ckpt:
        restarts = 1
    crash_at = fault_iteration(c) if not ckpt else None

    while iteration < c["iterations"]:
        iteration += 1
        steps = 0
        lr = units[0].opt.param_groups[0]["lr"]  # this iteration's lr
        for u in units:  # a packed unit trains all seeds at once (a diverged seed's NaNs stay in its own slice)
            if any(r.diverged_at is None for r in u.replicas):
                loss, acc, steps = train_block(u, c, task, amp)
                u.sync()
                for r, loss_r, acc_r in seed_results(u, loss, acc):
                    if r.diverged_at is None:
                        last[r.seed] = measure(r, c, task, loss_r, acc_r, amp, tests_at(c, iteration))
                        if not math.isfinite(loss_r):
                            r.diverged_at = iteration
            if u.sched:  # every unit's schedule steps, a diverged seed's too (lr_current reads the first)
                u.sched.step()
        step += steps  # every live seed takes the same steps
        if iteration == crash_at:  # after the work, before the report: as a real crash would
            raise RuntimeError(f"injected fault at iteration {iteration} (fault_rate={c['fault_rate']})")
        metrics = seed_metrics(
            {r.seed: last[r.seed] for r in replicas},
            {r.seed: r.diverged_at for r in replicas},
            step=step,
            samples=step * c["batch_size"],
            lr_current=lr,
            restarts=restarts,
            training_iteration=iteration,  # Tune's count follows the checkpoint loaded (an earlier one too)
        )
        if metrics["diverged"]:  # every seed diverged: stop at once; the study goes on
            tune.report(metrics)
            return
        if iteration % c["checkpoint_every"] == 0 or iteration == c["iterations"]:
            with tempfile.TemporaryDirectory() as d:
                save_state(d, units, iteration=iteration, step=step, restarts=restarts, last=last)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        else:
            tune.report(metrics)
