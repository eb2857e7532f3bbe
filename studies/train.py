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

The parts are module-level functions that the benchmarks import: `train_step`, `train_block`,
`measure`, `save_state` / `load_state` here, and through here the config (studies.config: DEFAULTS,
check_config) and the tasks (studies.tasks: load_task, build_model, make_replica, batches).
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
from ray import tune

from datasets import arithmetic
from models.packed import Packed, pack, packable
from studies.config import DEFAULTS, OPTIMIZERS, check_config, sizes  # noqa: F401 (imported from here too)
from studies.tasks import (  # noqa: F401 (imported from here too)
    Replica,
    Task,
    batches,
    build_model,
    load_task,
    loss_fn,
    make_replica,
    measure_lm,
)


def autocast_for(device: torch.device, precision: str):
    """The autocast context of a trial: bf16 on a GPU unless precision="fp32", and on the CPU only
    when asked (precision="bf16": worth it where the CPU has bf16 units, avx512_bf16 or AMX)."""
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext


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


@torch.no_grad()
def clip_per_seed(params: list[torch.Tensor], max_norm: float) -> None:
    """`clip_grad_norm_` for each seed of packed parameters (leading seed axis) on its own."""
    norms = sum(p.grad.flatten(1).pow(2).sum(1) for p in params).sqrt()
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)  # the formula of clip_grad_norm_
    torch._foreach_mul_([p.grad for p in params], [coef.view(-1, *[1] * (p.dim() - 1)) for p in params])


def train_step(model, opt, params, x, y, c, amp=nullcontext) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on batch (x, y); returns the loss and logits, still on the device. A packed
    model takes K seeds' batches stacked, (K, B, ...), and gives K losses: each seed's penalty and
    clipping read its own parameters and gradient only."""
    packed = isinstance(model, Packed)
    with amp():
        logits = model(x)
    loss = loss_fn(logits, y, c, per_seed=packed)
    objective = loss
    if c["l2"]:
        objective = loss + c["l2"] * sum(p.flatten(1).norm(dim=1) if packed else p.norm(2) for p in params)
    opt.zero_grad(set_to_none=True)
    objective.sum().backward()
    if c["clip"]:
        if packed:
            clip_per_seed(params, c["clip"])
        else:
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
class Pack:
    """The seeds of a configuration as one batched model (models.packed) with one optimizer. The
    replicas keep what is theirs (generator, held-out sets, divergence); `sync` writes the pack's
    parameters into their models, which evaluation and checkpoints read."""

    replicas: list[Replica]
    model: Packed
    opt: torch.optim.Optimizer
    params: list = field(default_factory=list)
    sched: torch.optim.lr_scheduler.LRScheduler | None = None

    def __post_init__(self):
        self.params = list(self.model.parameters())

    @property
    def gens(self) -> list[torch.Generator]:
        return [r.gen for r in self.replicas]

    def sync(self) -> None:
        self.model.unpack_into([r.model for r in self.replicas])


def packs(c: dict, model: torch.nn.Module, dev: torch.device) -> bool:
    """Whether a trial packs its seeds: `pack="on"` wherever the model packs (models.packed.packable);
    "auto" too, on a GPU (each small kernel launched once for K seeds instead of K times) and on the
    CPU but for the fused LSTM, whose oneDNN kernel runs one seed faster than the grouped matmuls run
    it (BENCHMARKS.md, packed trials)."""
    if c["pack"] == "off" or len(c["seeds"]) < 2 or not packable(model):
        return False
    fused_lstm = isinstance(getattr(model, "rnn", None), torch.nn.LSTM)
    return c["pack"] == "on" or dev.type == "cuda" or not fused_lstm


def make_pack(c: dict, replicas: list[Replica]) -> Pack:
    model = pack([r.model for r in replicas])
    return Pack(replicas, model, OPTIMIZERS[c["optimizer"]](model.parameters(), c))


def make_scheduler(opt: torch.optim.Optimizer, c: dict) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The lr schedule, stepped once per iteration (report block): StepLR multiplies the lr by
    `lr_gamma` every `lr_step_size` iterations; cosine anneals it to 0 over `iterations`."""
    if c["lr_schedule"] == "step":
        return torch.optim.lr_scheduler.StepLR(opt, c["lr_step_size"], c["lr_gamma"])
    if c["lr_schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, c["iterations"])
    return None


def train_block(r: Replica | Pack, c: dict, task: Task, amp=nullcontext) -> tuple:
    """One iteration of one replica: (mean training loss, training accuracy on its batches, steps);
    of a pack: the same with a list of K losses and K accuracies, each seed on its own batches
    (drawn from its own generator, stacked). Sums stay on the device: one host sync, at the end. Each
    replica's `step_loss_var` is set to the step-to-step variance of its loss over the iteration: half the
    mean squared difference of successive steps' losses, which leaves out the loss's slow trend."""
    packed = isinstance(r, Pack)
    dev = r.gens[0].device
    shape = (len(r.gens),) if packed else ()
    loss_sum, correct, seen, steps = torch.zeros(shape, device=dev), torch.zeros(shape, device=dev), 0, 0
    jumps, prev = torch.zeros(shape, device=dev), None  # sum of squared step-to-step differences of the loss
    channels_last = dev.type == "cuda" and c["model"] == "cnn"
    for pairs in zip(*(batches(c, task, g) for g in r.gens)):
        x, y = (torch.stack(t) for t in zip(*pairs)) if packed else pairs[0]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss, logits = train_step(r.model, r.opt, r.params, x, y, c, amp)
        loss_sum += loss.detach() * y.shape[-1]
        correct += (logits.argmax(-1) == y).sum(-1)
        seen += y.shape[-1]
        steps += 1
        if prev is not None:
            jumps += (loss.detach() - prev) ** 2
        prev = loss.detach()
    var = jumps / (2 * (steps - 1)) if steps > 1 else torch.full(shape, math.nan, device=dev)
    loss, acc, var = torch.stack([loss_sum / seen, correct / seen, var]).tolist()  # the one host sync
    for one, v in zip(r.replicas if packed else [r], var if packed else [var]):
        one.step_loss_var = v
    return loss, acc, steps


def measure(r: Replica, c: dict, task: Task, train_loss: float, batch_acc: float, amp=nullcontext) -> dict:
    """One replica's metrics after an iteration: losses and accuracies on train (eval mode, or the
    fresh batches' accuracy for palindromes), validation and test, test accuracy per class (arithmetic: on
    each test distribution, `test_acc_single`, `_two`, `_mixed`), and the step-to-step loss variance.
    A language model's: see `measure_lm`."""
    if task.lm is not None:
        return measure_lm(r, c, train_loss, batch_acc, amp)
    n = len(task.classes)
    tests = list(arithmetic.RANGES) if task.arithmetic is not None else list(range(n))  # test_acc_<k>
    if not math.isfinite(train_loss):
        return {"train_loss": train_loss, "train_acc": 0.0, "val_loss": math.nan, "val_acc": 0.0,
                "test_loss": math.nan, "test_acc": 0.0, **{f"test_acc_{k}": 0.0 for k in tests},
                "train_loss_var": math.nan}
    if task.images is not None:
        refresh_bn(r.model, task.images.train_x[:N_BN], c["eval_batch"], amp)
    m = {"train_loss": train_loss}
    m["train_acc"] = batch_acc if r.train_eval is None else evaluate(r.model, *r.train_eval, c, amp)[1]
    m["val_loss"], m["val_acc"], _ = evaluate(r.model, *r.val, c, amp)
    m["test_loss"], m["test_acc"], pred = evaluate(r.model, *r.test, c, amp)
    m["train_loss_var"] = r.step_loss_var
    if task.arithmetic is not None:
        m.update({f"test_acc_{k}": evaluate(r.model, *task.arithmetic[r.seed][k], c, amp)[1] for k in tests})
        return m
    y = r.test[1]
    hits = torch.zeros(n, device=y.device).index_add_(0, y, (pred == y).float())
    counts = torch.bincount(y, minlength=n).clamp_min(1)
    m.update({f"test_acc_{k}": v for k, v in enumerate((hits / counts).tolist())})
    return m


def _sched_state(unit: Replica | Pack) -> dict | None:
    return unit.sched.state_dict() if unit.sched else None


def save_state(path: str, replicas: list[Replica], pack: Pack | None = None, **counters) -> None:
    """Every replica's model, optimizer, lr schedule and generator (a pack's optimizer and schedule
    in place of the replicas'), the counters, and the global RNG states."""
    if pack:
        pack.sync()
    torch.save({"replicas": [{"seed": r.seed, "model": r.model.state_dict(), "optimizer": r.opt.state_dict(),
                              "sched": _sched_state(r), "gen": r.gen.get_state(), "diverged_at": r.diverged_at}
                             for r in replicas],
                "pack": {"optimizer": pack.opt.state_dict(), "sched": _sched_state(pack)} if pack else None,
                "torch_rng": torch.get_rng_state(), "py_rng": random.getstate(), **counters},
               os.path.join(path, "state.pt"))


def load_state(path: str, replicas: list[Replica], dev: torch.device, pack: Pack | None = None) -> dict:
    """Restore what `save_state` wrote into `replicas` (and `pack`); returns the counters."""
    state = torch.load(os.path.join(path, "state.pt"), map_location=dev, weights_only=False)
    for r, s in zip(replicas, state.pop("replicas"), strict=True):
        r.model.load_state_dict(s["model"])
        r.opt.load_state_dict(s["optimizer"])
        if r.sched:
            r.sched.load_state_dict(s["sched"])
        r.gen.set_state(s["gen"].to(r.gen.get_state().device))
        r.diverged_at = s["diverged_at"]
    packed = state.pop("pack")
    if pack:
        pack.model.load_from([r.model for r in replicas])
        pack.opt.load_state_dict(packed["optimizer"])
        if pack.sched:
            pack.sched.load_state_dict(packed["sched"])
    torch.set_rng_state(state.pop("torch_rng"))
    random.setstate(state.pop("py_rng"))
    return state


def mean_over_seeds(per_seed: list[dict]) -> dict:
    """The configuration's metrics: the mean over its seeds (a diverged seed counts with accuracy 0 and
    perplexity inf, so a configuration that diverges for some seeds ranks below one that never does)."""
    out = {}
    for k in per_seed[0]:  # losses: the mean over the seeds whose loss is finite
        vals = [m[k] for m in per_seed if "acc" in k or k.endswith("ppl") or math.isfinite(m[k])]
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
    pack = make_pack(c, replicas) if packs(c, replicas[0].model, dev) else None
    for unit in [pack] if pack else replicas:  # what steps an optimizer
        unit.sched = make_scheduler(unit.opt, c)
    iteration, step, restarts = 0, 0, 0
    last: dict[int, dict] = {}

    ckpt = tune.get_checkpoint()
    if ckpt:  # resume after a crash, or in a restored study
        with ckpt.as_directory() as d:
            state = load_state(d, replicas, dev, pack)
        iteration, step, restarts, last = state["iteration"], state["step"], state["restarts"] + 1, state["last"]
    crash_at = fault_iteration(c) if not ckpt else None

    while iteration < c["iterations"]:
        iteration += 1
        steps = 0
        lr = (pack or replicas[0]).opt.param_groups[0]["lr"]  # this iteration's lr
        if pack:  # all seeds at once (a diverged seed's NaNs stay in its own slice); then each is measured
            losses, accs, steps = train_block(pack, c, task, amp)
            pack.sync()
            blocks = dict(zip(c["seeds"], zip(losses, accs)))
        for r in replicas:
            if r.diverged_at is None:
                loss, acc, steps = (*blocks[r.seed], steps) if pack else train_block(r, c, task, amp)
                last[r.seed] = measure(r, c, task, loss, acc, amp)
                if not math.isfinite(loss):
                    r.diverged_at = iteration
        for unit in [pack] if pack else replicas:
            if unit.sched:
                unit.sched.step()
        step += steps  # every live seed takes the same steps
        if iteration == crash_at:  # after the work, before the report: as a real crash would
            raise RuntimeError(f"injected fault at iteration {iteration} (fault_rate={c['fault_rate']})")
        per_seed = [last[r.seed] for r in replicas]
        metrics = {**mean_over_seeds(per_seed), "step": step, "samples": step * c["batch_size"],
                   "lr_current": lr, "restarts": restarts, "diverged": all(r.diverged_at is not None for r in replicas)}
        for r, m in zip(replicas, per_seed):  # a diverged seed repeats its last report: its table row ends there
            metrics.update({f"seed{r.seed}/{k}": v for k, v in m.items()})
            metrics[f"seed{r.seed}/diverged_at"] = r.diverged_at or 0
        if metrics["diverged"]:  # every seed diverged: stop at once; the study goes on
            tune.report(metrics)
            return
        if iteration % c["checkpoint_every"] == 0 or iteration == c["iterations"]:
            with tempfile.TemporaryDirectory() as d:
                save_state(d, replicas, pack, iteration=iteration, step=step, restarts=restarts, last=last)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        else:
            tune.report(metrics)
