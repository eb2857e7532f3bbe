"""How quantities look in every figure, finding and report of a run: their names and units, their
colours, number formats, and the style of the HTML pages. Nothing here reads a run's tables.

Conventions: accuracies are fractions on a [0, 1.02] axis (`ACC_LIM`); a value has the same colour in
every figure of a run (`colors`); a learning rate is written as '1e-4' (`fmt_sci`, `fmt_key`)."""

from __future__ import annotations

import base64
import html

import matplotlib
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

# What a quantity is called in legends, and on axes (with its unit).
NAMES = {
    "lr": "learning rate",
    "optimizer": "optimizer",
    "dropout": "dropout p",
    "l2": "L2 penalty λ",
    "weight_decay": "weight decay",
    "seq_len": "sequence length T",
    "cell": "cell",
    "setting": "regulariser",
    "val_acc": "validation accuracy",
    "test_acc": "test accuracy",
    "train_acc": "train accuracy",
    "gap": "train − test gap",
    "train_loss": "train loss",
    "val_loss": "validation loss",
    "test_loss": "test loss",
    "iteration": "iteration",
    "epoch": "epoch",
    "step": "optimizer step",
    "train_ppl": "train perplexity",
    "val_ppl": "validation perplexity",
    "test_ppl": "test perplexity",
    "layers": "layers",
    "heads": "attention heads",
    "clip": "gradient clipping",
    "samples": "training samples",
    "batch_size": "batch size",
    "train_set": "training set",
}
UNITS = {
    "dropout": "probability of zeroing a unit",
    "l2": "× Σ‖θ‖₂ added to the loss",
    "weight_decay": "Adam's L2 coefficient",
    "seq_len": "digits",
    "val_acc": "fraction correct",
    "test_acc": "fraction correct",
    "train_acc": "fraction correct",
    "gap": "fraction",
    "train_loss": "cross-entropy, nats",
    "val_loss": "cross-entropy, nats",
    "test_loss": "cross-entropy, nats",
    "iteration": "report",
    "epoch": "passes over the training set",
    "step": "batches",
    "train_ppl": "e^cross-entropy",
    "val_ppl": "e^cross-entropy",
    "test_ppl": "e^cross-entropy",
    "layers": "stacked",
    "clip": "max gradient norm",
    "samples": "expressions seen",
    "batch_size": "examples per step",
}
SCI_KEYS = ("lr",)  # hyperparameters written in scientific notation ('1e-4')
DERIVED = ("setting",)  # keys whose values are labels already ('dropout p=0.5'): legends show them as they are
DIVERGED = dict(marker="x", color="red", s=50, linewidths=2, zorder=6, clip_on=False, label="diverged")
CHANCE = 0.1  # ten classes, where a run does not say how many it has
NEUTRAL = "0.3"  # dark grey: points that stand for no particular value (no palette colour)
ACC_LIM = (0.0, 1.02)
FADED = 0.4  # opacity of the curves of trials that ASHA stopped
LEGEND = dict(fontsize=9, title_fontsize=9, framealpha=0.9)


def key(column: str) -> str:
    """'config.lr' -> 'lr', 'metric.test_acc' -> 'test_acc'."""
    return column.split(".")[-1]


def name(column: str) -> str:
    return NAMES.get(key(column), key(column))


def label(column: str) -> str:
    """An axis label with its unit: 'metric.test_acc' -> 'test accuracy (fraction correct)'."""
    k = key(column)
    return f"{name(k)} ({UNITS[k]})" if k in UNITS else name(k)


def legend_label(column: str) -> str:
    """'best.val_acc' -> 'best validation accuracy'; 'metric.test_acc' -> 'final test accuracy'."""
    return {"best": "best ", "metric": "final "}.get(column.split(".")[0], "") + name(column)


def is_acc(column: str) -> bool:
    """An accuracy (a fraction in [0, 1]); the gap is a difference of two, in [-1, 1]."""
    k = key(column)
    return k.endswith("acc") or k.startswith("test_acc_")


def bounds(column: str) -> tuple[float, float] | None:
    """Where a quantity's values and error bars can lie."""
    return (0.0, 1.0) if is_acc(column) else (-1.0, 1.0) if key(column) == "gap" else None


def is_log(values: ArrayLike) -> bool:
    """A scan is logarithmic when its positive values span a decade or more."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    v = v[v > 0]
    return len(v) > 1 and v.max() / v.min() >= 10


def numeric(values: ArrayLike) -> bool:
    """Numbers (not booleans): drawn on a numeric axis; anything else is a category."""
    s = pd.Series(values)
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def colors(values: ArrayLike) -> dict:
    """The same colour for the same value in every figure of a run: ordered numbers on viridis
    (dark = small), categories on tab10 in sorted order."""
    vals = sorted(pd.Series(values).dropna().unique().tolist(), key=lambda x: (isinstance(x, str), x))
    if all(isinstance(v, (int, float, np.number)) for v in vals) and len(vals) > 1:
        cmap = matplotlib.colormaps["viridis"]
        return {v: cmap(i / (len(vals) - 1) * 0.85) for i, v in enumerate(vals)}
    cmap = matplotlib.colormaps["tab10"]
    return {v: cmap(i % 10) for i, v in enumerate(vals)}


def fmt(v: object) -> str:
    """A value for a label: floats to 3 significant digits, anything else as it is."""
    return f"{v:.3g}" if isinstance(v, (float, np.floating)) else str(v)


def fmt_sci(v: object) -> str:
    """A learning rate for a label: 0.0001 -> '1e-4', 0.0015677 -> '1.6e-3'."""
    if not isinstance(v, (float, np.floating, int, np.integer)) or v == 0 or 1e-2 <= abs(v) < 1e3:
        return fmt(v)
    m, e = f"{float(v):.1e}".split("e")
    return f"{float(m):g}e{int(e)}"


def fmt_key(column: str, v: object) -> str:
    """A hyperparameter's value as text: scientific for the learning rate, else `fmt`."""
    return fmt_sci(v) if key(column) in SCI_KEYS else fmt(v)


def config_text(row: pd.Series | dict, columns: list[str]) -> str:
    """'optimizer=adam, lr=1e-3': the values of `columns` (config.<key>) in a row."""
    return ", ".join(f"{c.removeprefix('config.')}={fmt_key(c, row[c])}" for c in columns)


def hue_label(hue: str, v: object) -> str:
    """A legend entry for one value of `hue`: 'lr=0.001', or a derived label as it is."""
    return str(v) if hue in DERIVED else f"{hue}={fmt(v)}"


def chain(items: list[tuple[float, str]], digits: int = 3) -> str:
    """'a 0.91 > b 0.86 ≈ c 0.86': items in decreasing order, '≈' where the rounded values tie."""
    out = items[0][1] if items else ""
    for (prev, _), (v, text) in zip(items, items[1:]):
        out += (" ≈ " if round(prev, digits) == round(v, digits) else " > ") + text
    return out


def range_phrase(values: list, all_values: list, what: str) -> str:
    """'lr >= 3e-3' when `values` are the top of `all_values`, 'lr <= ...' when the bottom, else a list."""
    vs, alls = sorted(values), sorted(all_values)
    if vs and vs == alls[-len(vs) :] and len(vs) < len(alls):
        return f"{what} >= {fmt_sci(vs[0])}"
    if vs and vs == alls[: len(vs)] and len(vs) < len(alls):
        return f"{what} <= {fmt_sci(vs[-1])}"
    return f"{what} in {{{', '.join(fmt_sci(v) for v in vs)}}}"


def cell(v: object, digits: int = 4) -> str:
    """A table cell: floats to `digits` significant digits, NaN empty."""
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else f"{v:.{digits}g}"
    return str(v)


# ---- pages ---------------------------------------------------------------------------------------

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}table.text td{text-align:left}pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:12px}
img{max-width:100%;border:1px solid #eee}figure{margin:1.5em 0}figcaption{color:#555;font-size:14px}
.card{display:inline-block;vertical-align:top;width:48%;margin:0 1% 1.5em 0}"""


def img(png: bytes, alt: str) -> str:
    """An <img> that holds its PNG (pages are self-contained)."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
