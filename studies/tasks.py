"""What a trial trains on, task by task: the data (`load_task`: images, palindromes, toy points,
arithmetic expressions, Penn Treebank), the model (`build_model`), one seed's replica with its own
initialisation, generator and held-out sets (`make_replica`), an iteration's batches (`batches`), and
the language model's evaluation. A new task kind is a branch in each of these; the loop itself
(studies.train) does not change.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

import datasets
from datasets import arithmetic, ptb
from datasets.palindrome import generator as palindrome_generator
from models import MLP, VGG, RecurrentClassifier, SplitMLP
from models.lm import RecurrentLM, TransformerLM
from models.numpy_mlp import NumpyMLP
from studies.config import OPTIMIZERS, sizes

N_TRAIN_EVAL = 10_000  # train accuracy is measured in eval mode on at most this many images


def build_model(c: dict, shape: tuple[int, ...], num_classes: int) -> torch.nn.Module:
    if c["task"] == "lm":  # num_classes: the vocabulary
        if c["cell"] == "transformer":
            return TransformerLM(num_classes, c["hidden_size"], c["layers"], c["heads"], c["dropout"], c["seq_len"])
        return RecurrentLM(c["cell"], num_classes, c["hidden_size"], c["layers"], c["dropout"], c["forget_bias"])
    if c["model"] == "cnn":
        return VGG(in_channels=shape[0], num_classes=num_classes, dropout=c["dropout"], width=c["width"])
    if c["model"] == "mlp" and c["impl"] == "numpy":  # forward and backward in NumPy; no dropout
        if c["dropout"]:
            raise ValueError("impl=numpy has no dropout: use impl=torch, or dropout=0")
        return NumpyMLP(math.prod(shape), hidden=sizes(c["hidden"], c["width"]), num_classes=num_classes)
    if c["model"] == "mlp":
        return MLP(math.prod(shape), hidden=sizes(c["hidden"], c["width"]), num_classes=num_classes,
                   dropout=c["dropout"])
    if c["model"] == "split_mlp":
        return SplitMLP(shape, axis_hidden=sizes(c["axis_hidden"], c["width"]), hidden=sizes(c["hidden"], c["width"]),
                        num_classes=num_classes, dropout=c["dropout"])
    if c["model"] == "rnn":
        vocab = arithmetic.VOCAB if c["task"] == "arithmetic" else None  # tokens in: an embedding first
        return RecurrentClassifier(c["cell"], c["impl"], 1, c["hidden_size"], num_classes,
                                   forget_bias=c["forget_bias"], vocab=vocab, embed=c["embed"])
    raise ValueError(f"unknown model {c['model']!r}")


@dataclass
class Task:
    """What one trial trains on, shared by its seeds: images resident on the device (or None for
    palindromes), the input shape and the class names."""

    shape: tuple[int, ...]
    classes: tuple[str, ...]
    images: datasets.ImageData | None = None
    toy: dict[int, datasets.ToyData] | None = None  # per seed: its own sample of a toy dataset
    arithmetic: dict[int, dict] | None = None  # per seed: its training set and held-out sets (datasets.arithmetic)
    lm: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None  # train, val, test: (inputs, targets) (B, L)


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
    if c["task"] == "toy":  # each seed its own sample, held out sets included (a pure function of the seed)
        toy = {s: datasets.toy(c["dataset"], s).to(dev) for s in c["seeds"]}
        return Task(tuple(toy[c["seeds"][0]].train_x.shape[1:]), datasets.TOY_CLASSES, toy=toy)
    if c["task"] == "arithmetic":  # each seed its own sets, the same in every trial (a pure function of the seed)
        sets = {s: arithmetic.sets(c["train_set"], c["train_scale"], c["n_eval"] or 4096, s, dev) for s in c["seeds"]}
        return Task((arithmetic.MAX_LEN,), arithmetic.CLASSES, arithmetic=sets)
    if c["task"] == "lm":
        return lm_task(c, dev)
    return Task((c["seq_len"],), tuple(str(i) for i in range(10)))


LM_EVAL_STREAMS = 10  # validation and test texts are read as 10 parallel streams


def lm_task(c: dict, dev: torch.device) -> Task:
    """Penn Treebank as parallel streams of word ids: the first n_train words of the training text
    in batch_size streams, the first n_eval words of valid and test (all if None) in LM_EVAL_STREAMS;
    each as (inputs, targets), the targets one word ahead. The classes are the vocabulary."""
    corpus = ptb.load(str(c["data_dir"])).limit(c["vocab"])

    def pairs(ids: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = ptb.streams(ids, n).to(dev)
        return s[:, :-1], s[:, 1:]

    return Task((c["seq_len"],), corpus.words, lm={
        "train": pairs(corpus.train[: c["n_train"]], c["batch_size"]),
        "val": pairs(corpus.valid[: c["n_eval"]], LM_EVAL_STREAMS),
        "test": pairs(corpus.test[: c["n_eval"]], LM_EVAL_STREAMS)})


def windows(x: torch.Tensor, y: torch.Tensor, length: int):
    """Truncated BPTT: consecutive windows of `length` columns of the streams (B, L), in order."""
    for i in range(0, x.shape[1], length):
        yield x[:, i : i + length], y[:, i : i + length]


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
    sched: torch.optim.lr_scheduler.LRScheduler | None = None
    step_loss_var: float = math.nan  # the last iteration's step-to-step variance of the training loss

    def __post_init__(self):
        self.params = list(self.model.parameters())

    @property
    def gens(self) -> list[torch.Generator]:
        return [self.gen]


def make_replica(c: dict, task: Task, seed: int, dev: torch.device) -> Replica:
    torch.manual_seed(seed)  # the model's initialisation
    model = build_model(c, task.shape, len(task.classes)).to(dev)
    if dev.type == "cuda" and c["model"] == "cnn":
        model = model.to(memory_format=torch.channels_last)
    opt = OPTIMIZERS[c["optimizer"]](model.parameters(), c)
    gen = torch.Generator(device=dev).manual_seed(seed)  # images: the data order; toy, lm: names the seed
    if task.toy is not None:  # `batches` gives the seed's whole training set
        d = task.toy[seed]
        return Replica(seed, model, opt, gen, (d.val_x, d.val_y), (d.test_x, d.test_y), (d.train_x, d.train_y))
    if task.arithmetic is not None:  # the generator of the training order names the seed (see batches)
        d = task.arithmetic[seed]
        train_eval = (d["train"][0][: len(d["val"][1])], d["train"][1][: len(d["val"][1])])  # as many as validation
        return Replica(seed, model, opt, arithmetic.generator(seed, arithmetic.ORDER, dev), d["val"], d["test"],
                       train_eval)
    if task.lm is not None:  # the windows come in the text's order
        return Replica(seed, model, opt, gen, task.lm["val"], task.lm["test"], None)
    if task.images is not None:
        d = task.images
        return Replica(seed, model, opt, gen, (d.val_x, d.val_y), (d.test_x, d.test_y),
                       (d.train_x[:N_TRAIN_EVAL], d.train_y[:N_TRAIN_EVAL]))
    n = c["n_eval"] or 4096
    val = datasets.palindromes(n, c["seq_len"], palindrome_generator(seed, 1, dev))
    test = datasets.palindromes(n, c["seq_len"], palindrome_generator(seed, 2, dev))
    return Replica(seed, model, opt, palindrome_generator(seed, 0, dev), val, test, None)


def batches(c: dict, task: Task, gen: torch.Generator):
    """One iteration's batches: an epoch over a permutation of the images (the last partial batch
    dropped), `steps_per_report` batches of fresh palindromes, `steps_per_report` full batches of
    a toy dataset: the whole training set of the seed whose generator this is (see make_replica), or
    a language model's epoch of TBPTT windows."""
    if task.toy is not None:
        d = task.toy[gen.initial_seed()]
        for _ in range(c["steps_per_report"]):
            yield d.train_x, d.train_y
        return
    if task.arithmetic is not None:  # samples_per_report of the seed's training set in a new random order (each
        # expression at most once per report where it is smaller than the set, whole passes where it is larger)
        x, y = task.arithmetic[arithmetic.seed_of(gen)]["train"]
        n = c["samples_per_report"] or len(y)
        perm = torch.cat([torch.randperm(len(y), generator=gen, device=gen.device) for _ in range(-(-n // len(y)))])
        perm = perm[:n]
        for i in range(0, max(len(perm) - c["batch_size"], 0) + 1, c["batch_size"]):
            idx = perm[i : i + c["batch_size"]]
            yield x[idx], y[idx]
        return
    if task.lm is not None:  # an epoch of TBPTT windows over the training streams; targets flat, as the logits
        for x, y in windows(*task.lm["train"], c["seq_len"]):
            yield x, y.flatten()
        return
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


def loss_fn(logits: torch.Tensor, y: torch.Tensor, c: dict, per_seed: bool = False) -> torch.Tensor:
    """The mean cross-entropy over the batch; with `per_seed`, logits (K, B, C) and targets (K, B)
    of K packed seeds give K means."""
    if c["double_softmax"]:  # what the hand-run models did: CE of probabilities, not logits
        logits = logits.softmax(-1)
    if per_seed:
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none").view(y.shape).mean(1)
    return F.cross_entropy(logits.float(), y)


@torch.no_grad()
def evaluate_lm(model, x, y, c, amp) -> tuple[float, float]:
    """Mean next-word cross-entropy (nats per word) and accuracy over a held-out text's streams, window
    by window as in training, the recurrent state carried across windows (from zeros: eval mode)."""
    model.eval()
    loss, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
    for xw, yw in windows(x, y, c["seq_len"]):
        with amp():
            logits = model(xw)
        yw = yw.flatten()
        loss += loss_fn(logits, yw, c) * len(yw)
        correct += (logits.argmax(-1) == yw).sum()
    model.train()
    return (loss / y.numel()).item(), (correct / y.numel()).item()


def measure_lm(r: Replica, c: dict, train_loss: float, batch_acc: float, amp=nullcontext) -> dict:
    """A language model's metrics: loss, next-word accuracy and perplexity (e^loss) on the epoch's
    training windows (as trained, dropout on), the validation and the test text; inf where it diverged."""
    m = {"train_loss": train_loss, "train_acc": batch_acc, "val_loss": math.nan, "val_acc": 0.0,
         "test_loss": math.nan, "test_acc": 0.0}
    if math.isfinite(train_loss):
        m["val_loss"], m["val_acc"] = evaluate_lm(r.model, *r.val, c, amp)
        m["test_loss"], m["test_acc"] = evaluate_lm(r.model, *r.test, c, amp)
    for k in ("train", "val", "test"):
        loss = m[f"{k}_loss"]
        m[f"{k}_ppl"] = math.exp(min(loss, 700.0)) if math.isfinite(loss) else math.inf
    m["train_loss_var"] = r.step_loss_var
    return m
