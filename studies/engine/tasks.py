"""The built-in tasks, each a plain `Task` (studies.engine.task): `image` (CIFAR-10, Fashion-MNIST,
digits), `palindrome` (generated afresh every step), `toy` (2-D points, a sample per seed),
`arithmetic` (expressions read by character, a training set per seed) and `lm` (word-level Penn
Treebank, TBPTT). They share the model builder (`build_model`: cnn, mlp, split_mlp, rnn) and one
set of hyperparameters (`DEFAULTS`, checked by `CHECKS` and `rules`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

import datasets
from datasets import arithmetic as arith
from datasets import ptb
from datasets.palindrome import generator as stream_generator
from models import CELLS, IMPLS, MLP, VGG, RecurrentClassifier, SplitMLP
from models.lm import RECURRENT, RecurrentLM, TransformerLM
from models.numpy_mlp import MLP_IMPLS, NumpyMLP
from studies.engine.task import POSITIVE, WHOLE, WHOLE_OR_NONE, Data, Task, epochs, in_batches, loss_fn

DEFAULTS = dict(  # every key the built-in tasks read, with its default (config key = model kwarg = column)
    model="cnn",  # cnn | mlp | split_mlp (models.split_mlp: an MLP along the rows and one along the columns) | rnn
    dataset="digits",
    data_dir="data",
    n_train=None,  # images; n_train caps the training set
    augment=False,  # random flips and shifts, on the device
    image_size=None,  # images: downsample to image_size x image_size (area average) if larger; None keeps them
    width=1.0,  # cnn: channels x width (1.0: the hand-run 64..512); mlp, split_mlp: hidden sizes x width
    hidden=(128, 64),
    dropout=0.0,  # mlp sizes (or text: "128-64"); dropout in mlp and cnn head
    axis_hidden=(128,),  # split_mlp: sizes of its row MLP and of its column MLP (then `hidden` after them)
    # impl: rnn scratch | fused (see models.rnn); mlp torch (torch.nn layers) | numpy (models.numpy_mlp)
    cell="lstm",
    impl="fused",
    seq_len=5,
    hidden_size=128,
    steps_per_report=100,  # palindrome
    forget_bias=None,  # lstm forget gate, gru update gate: None keeps torch's init; 1.0 sets its bias to 1
    # arithmetic (datasets.arithmetic): training set A | B at train_scale x the hand-run sizes (A 50k + 50k, B 1M),
    # an embedding of `embed` numbers per character; an iteration trains on samples_per_report expressions (None:
    # one epoch), so that training sets of different sizes can get the same steps
    train_set="A",
    train_scale=1.0,
    embed=32,
    samples_per_report=None,
    # lm (word-level Penn Treebank, datasets.ptb; dataset="ptb"): cell lstm | gru | transformer of `layers` layers
    # (`heads` attention heads) and width hidden_size; TBPTT over batch_size streams in windows of seq_len words;
    # an iteration is an epoch over the first n_train words; n_eval words of valid and test; the `vocab` most
    # frequent words (None: all 10k)
    layers=1,
    heads=2,
    vocab=None,
    n_eval=None,  # held-out set size (palindromes and arithmetic: 4096 if None; images and text: all)
    n_val=None,  # images: the validation set's size where it differs from the test set's (None: n_eval)
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


CHECKS = {  # config key -> (valid?, what is valid)
    "layers": WHOLE,
    "heads": WHOLE,
    "embed": WHOLE,
    "seq_len": WHOLE,
    "hidden_size": WHOLE,
    "steps_per_report": WHOLE,
    "vocab": (lambda v: v is None or (isinstance(v, int) and v >= 2), "a whole number >= 2, or None"),
    "train_set": (lambda v: v in arith.TRAIN_SETS, " or ".join(arith.TRAIN_SETS)),
    "train_scale": POSITIVE,
    "width": POSITIVE,
    "samples_per_report": WHOLE_OR_NONE,
    "image_size": WHOLE_OR_NONE,
    "n_eval": WHOLE_OR_NONE,
    "n_val": WHOLE_OR_NONE,
    "model": (lambda v: v in ("cnn", "mlp", "split_mlp", "rnn"), "cnn, mlp, split_mlp or rnn"),
    "hidden": (lambda v: _sizes_ok(v), "layer sizes: whole numbers >= 1, such as (128, 64) or 128-64"),
    "axis_hidden": (lambda v: _sizes_ok(v) and len(sizes(v)) > 0, "layer sizes: whole numbers >= 1, such as (128,)"),
    "cell": (lambda v: v in (*CELLS, "transformer"), ", ".join(CELLS) + ", or transformer (task lm)"),
    "impl": (lambda v: v in IMPLS + MLP_IMPLS, ", ".join(IMPLS + MLP_IMPLS)),
    "dropout": (lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "a number in [0, 1)"),
    "forget_bias": (lambda v: v is None or isinstance(v, (int, float)), "a number, or None for torch's init"),
}
LM_CELLS = (*RECURRENT, "transformer")


def rules(c: dict) -> str | None:
    """The rules that tie the built-in keys together, on the values a trial will see."""
    if c["cell"] == "transformer" and c["task"] != "lm":
        return "cell='transformer': only a language model (task='lm') has one"
    if c["task"] == "lm" and c["cell"] not in LM_CELLS:
        return f"cell={c['cell']!r}: a language model's cell is {', '.join(LM_CELLS)}"
    if c["task"] == "lm" and c["cell"] == "transformer" and c["hidden_size"] % c["heads"]:
        return f"hidden_size={c['hidden_size']}: not divisible by heads={c['heads']}; change either"
    if c["model"] == "mlp" and c["impl"] == "numpy" and c["dropout"]:
        return f"dropout={c['dropout']!r}: impl='numpy' has no dropout; use impl='torch', or dropout=0"
    return None


def build_model(c: dict, shape: tuple[int, ...], num_classes: int, vocab: int | None = None) -> torch.nn.Module:
    """The model of `c["model"]` for inputs of `shape` (tokens of `vocab` kinds: an embedding first)."""
    if c["model"] == "cnn":
        return VGG(in_channels=shape[0], num_classes=num_classes, dropout=c["dropout"], width=c["width"])
    if c["model"] == "mlp" and c["impl"] == "numpy":  # forward and backward in NumPy; no dropout
        if c["dropout"]:
            raise ValueError("impl=numpy has no dropout: use impl=torch, or dropout=0")
        return NumpyMLP(math.prod(shape), hidden=sizes(c["hidden"], c["width"]), num_classes=num_classes)
    if c["model"] == "mlp":
        return MLP(
            math.prod(shape), hidden=sizes(c["hidden"], c["width"]), num_classes=num_classes, dropout=c["dropout"]
        )
    if c["model"] == "split_mlp":
        return SplitMLP(
            shape,
            axis_hidden=sizes(c["axis_hidden"], c["width"]),
            hidden=sizes(c["hidden"], c["width"]),
            num_classes=num_classes,
            dropout=c["dropout"],
        )
    if c["model"] == "rnn":
        return RecurrentClassifier(
            c["cell"],
            c["impl"],
            1,
            c["hidden_size"],
            num_classes,
            forget_bias=c["forget_bias"],
            vocab=vocab,
            embed=c["embed"],
        )
    raise ValueError(f"unknown model {c['model']!r}")


def classifier(c: dict, d: Data) -> torch.nn.Module:
    return build_model(c, d.shape, len(d.classes))


def builtin(name: str, load, **fields) -> Task:
    """A built-in task: the shared model builder, keys and rules unless given."""
    return Task(
        name=name, load=load, **{"model": classifier, "defaults": DEFAULTS, "checks": CHECKS, "rules": rules, **fields}
    )


# ---- image: one dataset shared by the seeds, an epoch per iteration ---------------------------------


def load_images(c: dict, dev: torch.device) -> Data:
    data = datasets.load_images(c["dataset"], c["data_dir"], c["n_train"])
    n_val = c["n_val"] or c["n_eval"]
    if n_val:  # the first n of the fixed validation set
        data.val_x, data.val_y = data.val_x[:n_val], data.val_y[:n_val]
    if c["n_eval"]:  # and of the fixed test set
        data.test_x, data.test_y = data.test_x[: c["n_eval"]], data.test_y[: c["n_eval"]]
    if c["image_size"] and c["image_size"] < data.shape[-1]:  # only ever smaller
        size = (c["image_size"],) * 2
        for k in ("train_x", "val_x", "test_x"):
            setattr(data, k, F.interpolate(getattr(data, k), size=size, mode="area"))
    d = data.to(dev)
    return Data((d.train_x, d.train_y), (d.val_x, d.val_y), (d.test_x, d.test_y), d.classes)


def image_batches(c: dict, d: Data, gen: torch.Generator):
    """An epoch, each batch randomly flipped and shifted with `augment`."""
    for x, y in epochs(c, d, gen):
        yield (datasets.augment(x, gen) if c["augment"] else x), y


IMAGE = builtin("image", load_images, batches=image_batches)


# ---- palindrome: fresh samples every step, fixed held-out sets per seed ------------------------------


def palindrome_sets(c: dict, loaded, seed: int, dev: torch.device) -> Data:
    n = c["n_eval"] or 4096
    val = datasets.palindromes(n, c["seq_len"], stream_generator(seed, 1, dev))
    test = datasets.palindromes(n, c["seq_len"], stream_generator(seed, 2, dev))
    return Data(None, val, test, tuple(str(i) for i in range(10)), shape=(c["seq_len"],))


def palindrome_batches(c: dict, d: Data, gen: torch.Generator):
    for _ in range(c["steps_per_report"]):
        yield datasets.palindromes(c["batch_size"], c["seq_len"], gen)


PALINDROME = builtin(
    "palindrome",
    lambda c, dev: None,
    for_seed=palindrome_sets,
    batches=palindrome_batches,
    generator=lambda c, seed, dev: stream_generator(seed, 0, dev),
)


# ---- toy: each seed its own sample of a 2-D dataset, trained full batch ------------------------------


def toy_sample(c: dict, loaded, seed: int, dev: torch.device) -> Data:
    d = datasets.toy(c["dataset"], seed).to(dev)  # a pure function of the seed
    return Data((d.train_x, d.train_y), (d.val_x, d.val_y), (d.test_x, d.test_y), datasets.TOY_CLASSES)


def full_batches(c: dict, d: Data, gen: torch.Generator):
    for _ in range(c["steps_per_report"]):
        yield d.train


TOY = builtin("toy", lambda c, dev: None, for_seed=toy_sample, batches=full_batches)


# ---- arithmetic: each seed its own training set and test distributions --------------------------------


def arithmetic_sets(c: dict, loaded, seed: int, dev: torch.device) -> Data:
    """The seed's sets (datasets.arithmetic.sets, the same in every trial); training accuracy on as many
    training expressions as validation has."""
    s = arith.sets(c["train_set"], c["train_scale"], c["n_eval"] or 4096, seed, dev)
    n = len(s["val"][1])
    return Data(
        s["train"],
        s["val"],
        s["test"],
        arith.CLASSES,
        train_eval=(s["train"][0][:n], s["train"][1][:n]),
        tests={k: s[k] for k in arith.RANGES},
        shape=(arith.MAX_LEN,),
    )


def arithmetic_batches(c: dict, d: Data, gen: torch.Generator):
    """samples_per_report of the seed's training set in a new random order (each expression at most once
    per report where it is smaller than the set, whole passes where it is larger)."""
    x, y = d.train
    n = c["samples_per_report"] or len(y)
    perm = torch.cat([torch.randperm(len(y), generator=gen, device=gen.device) for _ in range(-(-n // len(y)))])
    yield from in_batches(x, y, perm[:n], c["batch_size"])


ARITHMETIC = builtin(
    "arithmetic",
    lambda c, dev: None,
    for_seed=arithmetic_sets,
    batches=arithmetic_batches,
    model=lambda c, d: build_model(c, d.shape, len(d.classes), vocab=arith.VOCAB),
    generator=lambda c, seed, dev: arith.generator(seed, arith.ORDER, dev),
)


# ---- lm: Penn Treebank as parallel streams, truncated BPTT --------------------------------------------

LM_EVAL_STREAMS = 10  # validation and test texts are read as 10 parallel streams


def load_text(c: dict, dev: torch.device) -> Data:
    """The first n_train words of the training text in batch_size streams, the first n_eval words of
    valid and test (all if None) in LM_EVAL_STREAMS; each as (inputs, targets), the targets one word
    ahead (B, L). The classes are the vocabulary."""
    corpus = ptb.load(str(c["data_dir"])).limit(c["vocab"])

    def pairs(ids: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = ptb.streams(ids, n).to(dev)
        return s[:, :-1], s[:, 1:]

    return Data(
        pairs(corpus.train[: c["n_train"]], c["batch_size"]),
        pairs(corpus.valid[: c["n_eval"]], LM_EVAL_STREAMS),
        pairs(corpus.test[: c["n_eval"]], LM_EVAL_STREAMS),
        corpus.words,
        shape=(c["seq_len"],),
    )


def windows(x: torch.Tensor, y: torch.Tensor, length: int):
    """Truncated BPTT: consecutive windows of `length` columns of the streams (B, L), in order."""
    for i in range(0, x.shape[1], length):
        yield x[:, i : i + length], y[:, i : i + length]


def text_batches(c: dict, d: Data, gen: torch.Generator):
    """An epoch of TBPTT windows over the training streams; targets flat, as the logits."""
    for x, y in windows(*d.train, c["seq_len"]):
        yield x, y.flatten()


def language_model(c: dict, d: Data) -> torch.nn.Module:
    n = len(d.classes)  # the vocabulary
    if c["cell"] == "transformer":
        return TransformerLM(n, c["hidden_size"], c["layers"], c["heads"], c["dropout"], c["seq_len"])
    return RecurrentLM(c["cell"], n, c["hidden_size"], c["layers"], c["dropout"], c["forget_bias"])


@torch.inference_mode()
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


def unigram_ppl(d: Data) -> float:
    """The test text's perplexity under the training text's word frequencies (add-one): what a model that
    learned only how often each word occurs reaches, the level a language model must beat to have learned."""
    counts = torch.bincount(d.train[1].flatten(), minlength=len(d.classes)).double() + 1
    logp = (counts / counts.sum()).log()
    return math.exp(-logp[d.test[1].flatten()].mean().item())  # on the data's device: one sync


def measure_lm(model, c: dict, d: Data, train_loss: float, batch_acc: float, amp) -> dict:
    """A language model's metrics: loss, next-word accuracy and perplexity (e^loss) on the epoch's
    training windows (as trained, dropout on), the validation and the test text, inf where it diverged;
    and `unigram_ppl`, the test perplexity of the word frequencies alone."""
    sets = ("train", "val") if d.test is None else ("train", "val", "test")  # test: see config `test_every`
    m = {"train_loss": train_loss, "train_acc": batch_acc}
    m.update({k: v for s in sets[1:] for k, v in ((f"{s}_loss", math.nan), (f"{s}_acc", 0.0))})
    if math.isfinite(train_loss):
        for s in sets[1:]:
            m[f"{s}_loss"], m[f"{s}_acc"] = evaluate_lm(model, *getattr(d, s), c, amp)
    for k in sets:
        loss = m[f"{k}_loss"]
        m[f"{k}_ppl"] = math.exp(min(loss, 700.0)) if math.isfinite(loss) else math.inf
    if d.test is not None:
        m["unigram_ppl"] = unigram_ppl(d)
    return m


LM = builtin("lm", load_text, model=language_model, batches=text_batches, measure=measure_lm)

BUILTIN = {t.name: t for t in (IMAGE, PALINDROME, TOY, ARITHMETIC, LM)}
