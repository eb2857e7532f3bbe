"""Arithmetic expressions of three integers joined by + and - ("12+47-30"), generated vectorised on
the device: pure functions of (n, operand range, generator) that return token and label tensors.

An expression is tokenised by character (PAD, the digits, '+', '-') and left-padded to `MAX_LEN`
characters, so that its last character is the last step whatever its length: a recurrent classifier
that reads the last hidden state reads the whole expression. The label is the result's class,
`result + OFFSET`, over every result that operands 0..99 can give (-198 .. 297: `NUM_CLASSES`).

The training sets of docs/references.md#arithmetic_shift, at `scale` 1.0: A = 50k expressions of single-digit
operands (0-9) + 50k of two-digit operands (10-99); B = 1M of two-digit operands. The test sets:
single-digit, two-digit and mixed (each operand 0-99). Operands and operators are drawn uniformly and
independently; no set excludes another's expressions (there are only 1,000 single-digit ones).
"""

from __future__ import annotations

import torch

from datasets import palindrome
from datasets.palindrome import generator

PAD, PLUS, MINUS = 0, 11, 12  # tokens; digit d is d + 1
CHARS = "_0123456789+-"  # the character of each token ('_' for PAD)
VOCAB = len(CHARS)
MAX_LEN = 8  # "99+99-99"
OFFSET = 198  # the smallest result, 0 - 99 - 99, is class 0
NUM_CLASSES = 3 * 99 + OFFSET + 1  # up to 99 + 99 + 99
RANGES = {"single": (0, 9), "two": (10, 99), "mixed": (0, 99)}  # operand ranges of the test sets
TRAIN_SETS = {"A": {"single": 50_000, "two": 50_000}, "B": {"two": 1_000_000}}  # expressions at scale 1.0
CLASSES = tuple(str(r - OFFSET) for r in range(NUM_CLASSES))  # each class named by its result


def expressions(n: int, low: int, high: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n expressions with operands uniform in [low, high]: tokens (n, MAX_LEN) uint8 and labels (n,)
    long, on the generator's device."""
    dev = generator.device
    ops = torch.randint(low, high + 1, (n, 3), generator=generator, device=dev)  # (n, 3) operands
    plus = torch.randint(0, 2, (n, 2), generator=generator, device=dev).bool()  # (n, 2): '+' or '-'
    y = ops[:, 0] + torch.where(plus[:, 0], ops[:, 1], -ops[:, 1]) + torch.where(plus[:, 1], ops[:, 2], -ops[:, 2])
    sign = torch.where(plus, PLUS, MINUS)
    # eight slots: tens, units of each operand with the operators between; a tens digit only from 10
    tens, units = ops // 10 + 1, ops % 10 + 1
    slots = torch.stack(
        [tens[:, 0], units[:, 0], sign[:, 0], tens[:, 1], units[:, 1], sign[:, 1], tens[:, 2], units[:, 2]], 1
    )
    used = torch.ones_like(slots, dtype=torch.bool)
    used[:, [0, 3, 6]] = ops >= 10
    order = torch.sort(used.to(torch.uint8), dim=1, stable=True).indices  # unused slots first: left padding
    x = torch.where(used.gather(1, order), slots.gather(1, order), PAD)
    return x.to(torch.uint8), y + OFFSET


def mixture(parts: dict[str, int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The expressions of several operand ranges, {"single": n1, "two": n2}, shuffled together."""
    xs, ys = zip(*(expressions(n, *RANGES[k], generator) for k, n in parts.items() if n))
    x, y = torch.cat(xs), torch.cat(ys)
    perm = torch.randperm(len(y), generator=generator, device=generator.device)
    return x[perm], y[perm]


def training_parts(name: str, scale: float = 1.0) -> dict[str, int]:
    """The sizes of training set A or B at `scale` (1.0: the hand-run sizes), same proportions."""
    return {k: max(1, round(n * scale)) for k, n in TRAIN_SETS[name].items()}


def held_out_parts(name: str, n: int) -> dict[str, int]:
    """n expressions in the proportions of training set `name` (a validation set of its distribution)."""
    parts = TRAIN_SETS[name]
    total = sum(parts.values())
    sizes = {k: n * v // total for k, v in parts.items()}
    first = next(iter(sizes))
    sizes[first] += n - sum(sizes.values())
    return sizes


def sets(train_set: str, scale: float, n_eval: int, seed: int, device: torch.device | str = "cpu") -> dict:
    """One seed's data, a pure function of its arguments: the training set ("train": `train_set` at
    `scale`), validation and test sets of n_eval expressions from the training set's distribution
    ("val", "test"), and n_eval expressions of each operand range of RANGES ("single", "two",
    "mixed"); each (tokens, labels) on `device`. The held-out sets do not depend on the training set's
    size, and the test sets of RANGES not on the training set at all: every trial of a seed is tested
    on the same expressions."""
    out = {"train": mixture(training_parts(train_set, scale), generator(seed, 0, device))}
    for stream, name in ((1, "val"), (2, "test")):
        out[name] = mixture(held_out_parts(train_set, n_eval), generator(seed, stream, device))
    for stream, (name, (low, high)) in enumerate(RANGES.items(), start=3):
        out[name] = expressions(n_eval, low, high, generator(seed, stream, device))
    return out


def decode(x: torch.Tensor) -> list[str]:
    """Tokens (n, MAX_LEN) back to text, padding dropped: the inverse of the tokenisation (tests)."""
    return ["".join(CHARS[t] for t in row if t != PAD) for row in x.tolist()]


STRIDE = palindrome.STRIDE  # seeds of one seed's streams: STRIDE * seed + stream (palindrome.generator)
ORDER = 6  # the stream of the training order (0 draws the training set, 1 and 2 validation and test, 3-5 RANGES)
