"""The one training loop, shared by every study: a Ray Tune function trainable.

`train(config)` builds data, model and optimizer from a flat config (one name per
hyperparameter: config key = model kwarg = table column), trains, and calls `tune.report`
once per iteration (an epoch of images, or `steps_per_report` palindrome steps) with the same
keys every time. A checkpoint (model, optimizer, iteration, step and every RNG state) goes with
every `checkpoint_every`-th report and the last one, so ASHA pauses, crashes and restores resume
where they left off. Runs on the GPU that Ray assigns (bf16 autocast, cudnn.benchmark,
channels_last) and on the CPU otherwise (fp32, or bf16 autocast with precision="bf16").
"""

from __future__ import annotations

import logging
import math
import os
import random
import tempfile
from contextlib import nullcontext

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
    hidden=(128, 64), dropout=0.0,  # mlp sizes; dropout in mlp and cnn head
    cell="lstm", impl="fused", seq_len=5, hidden_size=128, steps_per_report=100,  # palindrome
    optimizer="adam", lr=1e-3, momentum=0.9, weight_decay=0.0, batch_size=128,
    l2=0.0,  # lambda of the penalty lambda * sum of parameter 2-norms, added to the loss
    clip=None,  # max gradient norm; None: no clipping
    double_softmax=False,  # the hand-run flaw: softmax before CrossEntropyLoss
    precision="auto",  # matmuls and convolutions: auto (bf16 autocast on a GPU, fp32 on the CPU) | bf16 | fp32
    iterations=10,  # reports per trial: epochs, or blocks of steps_per_report steps
    checkpoint_every=2,  # a checkpoint with every k-th report (and the last): the CNN's is ~110 MB
    eval_batch=1024, n_eval=4096,  # evaluation batch; palindrome held-out set size
    fault_rate=0.0,  # fault injection: the probability that a trial crashes once (tests)
    seed=0,
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
    "seq_len": (lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1"),
    "hidden_size": (lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1"),
    "batch_size": (lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1"),
    "iterations": (lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1"),
    "steps_per_report": (lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1"),
    "precision": (lambda v: v in PRECISIONS, ", ".join(PRECISIONS)),
    "clip": (lambda v: v is None or (isinstance(v, (int, float)) and v > 0), "a positive number"),
    "fault_rate": (lambda v: isinstance(v, (int, float)) and 0 <= v <= 1, "a probability in [0, 1]"),
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
        return VGG(in_channels=shape[0], num_classes=num_classes, dropout=c["dropout"])
    if c["model"] == "mlp":
        return MLP(math.prod(shape), hidden=tuple(c["hidden"]), num_classes=num_classes, dropout=c["dropout"])
    if c["model"] == "rnn":
        return RecurrentClassifier(c["cell"], c["impl"], 1, c["hidden_size"], num_classes)
    raise ValueError(f"unknown model {c['model']!r}")


def loss_fn(logits: torch.Tensor, y: torch.Tensor, c: dict) -> torch.Tensor:
    if c["double_softmax"]:  # what the hand-run models did: CE of probabilities, not logits
        logits = logits.softmax(-1)
    return F.cross_entropy(logits.float(), y)


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


def train(config: dict) -> None:
    """Ray Tune trainable: see the module docstring."""
    c = {**DEFAULTS, **config}
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)  # one line per checkpoint
    dev = device_for_trial()
    cpus = int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or 1
    torch.set_num_threads(cpus)
    torch.manual_seed(c["seed"])
    random.seed(c["seed"])
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    amp = autocast_for(dev, c["precision"])

    # Data: resident on the device; batches are slices of a permutation or freshly generated.
    gen = torch.Generator(device=dev)
    gen.manual_seed(c["seed"])
    if c["task"] == "image":
        data = datasets.load_images(c["dataset"], c["data_dir"], c["n_train"]).to(dev)
        shape, classes = data.shape, data.classes
        val, test = (data.val_x, data.val_y), (data.test_x, data.test_y)
        train_eval = (data.train_x[:N_TRAIN_EVAL], data.train_y[:N_TRAIN_EVAL])
    else:
        shape, classes = (c["seq_len"],), tuple(str(i) for i in range(10))
        gen = palindrome_generator(c["seed"], 0, dev)
        val = datasets.palindromes(c["n_eval"], c["seq_len"], palindrome_generator(c["seed"], 1, dev))
        test = datasets.palindromes(c["n_eval"], c["seq_len"], palindrome_generator(c["seed"], 2, dev))
        train_eval = None

    model = build_model(c, shape, len(classes)).to(dev)
    if cuda and c["model"] == "cnn":
        model = model.to(memory_format=torch.channels_last)
    opt = OPTIMIZERS[c["optimizer"]](model.parameters(), c)
    iteration, step, restarts = 0, 0, 0

    ckpt = tune.get_checkpoint()
    if ckpt:  # resume after a crash, or in a restored study
        with ckpt.as_directory() as d:
            state = torch.load(os.path.join(d, "state.pt"), map_location=dev, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        iteration, step, restarts = state["iteration"], state["step"], state["restarts"] + 1
        gen.set_state(state["gen"].to(gen.get_state().device))
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["py_rng"])
    crash_at = fault_iteration(c) if not ckpt else None

    def batches():
        if c["task"] == "image":
            perm = torch.randperm(len(data.train_x), generator=gen, device=dev)
            stop = max(len(perm) - c["batch_size"], 0) + 1  # drop the last partial batch
            for i in range(0, stop, c["batch_size"]):
                idx = perm[i : i + c["batch_size"]]
                x = data.train_x[idx]
                yield (datasets.augment(x, gen) if c["augment"] else x), data.train_y[idx]
        else:
            for _ in range(c["steps_per_report"]):
                yield datasets.palindromes(c["batch_size"], c["seq_len"], gen)

    params = list(model.parameters())
    while iteration < c["iterations"]:
        # Sums stay on the device: no host sync until the report.
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev)
        seen = 0
        for x, y in batches():
            if cuda and c["model"] == "cnn":
                x = x.contiguous(memory_format=torch.channels_last)
            loss, logits = train_step(model, opt, params, x, y, c, amp)
            step += 1
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(-1) == y).sum()
            seen += len(y)
        iteration += 1
        if iteration == crash_at:  # after the work, before the report: as a real crash would
            raise RuntimeError(f"injected fault at iteration {iteration} (fault_rate={c['fault_rate']})")

        train_loss = (loss_sum / seen).item()
        diverged = not math.isfinite(train_loss)
        metrics = {"train_loss": train_loss, "step": step, "samples": step * c["batch_size"],
                   "diverged": diverged, "restarts": restarts}
        if diverged:  # stop at once; the study goes on
            metrics.update(train_acc=0.0, val_loss=float("nan"), val_acc=0.0, test_loss=float("nan"),
                           test_acc=0.0, **{f"test_acc_{k}": 0.0 for k in range(len(classes))})
            tune.report(metrics)
            return
        if train_eval is None:
            metrics["train_acc"] = (correct / seen).item()  # fresh samples: an unbiased estimate
        else:
            metrics["train_acc"] = evaluate(model, *train_eval, c, amp)[1]
        metrics["val_loss"], metrics["val_acc"], _ = evaluate(model, *val, c, amp)
        metrics["test_loss"], metrics["test_acc"], pred = evaluate(model, *test, c, amp)
        hits = torch.zeros(len(classes), device=dev).index_add_(0, test[1], (pred == test[1]).float())
        counts = torch.bincount(test[1], minlength=len(classes)).clamp_min(1)
        metrics.update({f"test_acc_{k}": v for k, v in enumerate((hits / counts).tolist())})

        if iteration % c["checkpoint_every"] == 0 or iteration == c["iterations"]:
            with tempfile.TemporaryDirectory() as d:
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "iteration": iteration,
                            "step": step, "restarts": restarts, "gen": gen.get_state(),
                            "torch_rng": torch.get_rng_state(),
                            "py_rng": random.getstate()}, os.path.join(d, "state.pt"))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        else:
            tune.report(metrics)
