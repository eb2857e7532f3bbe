"""Analysis of the arithmetic distribution-shift study (studies/arithmetic_shift.py): per cell, the
final test accuracy of each training set (A, B) on each test set (single-digit, two-digit, mixed),
each at its tuned lr (chosen on validation by `analysis.selection`); the heat map of it, one panel
per cell; and the claims of the hand-run reports."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.data import spread
from analysis.selection import seeds_said, tuned_trials
from analysis.style import fmt_sci
from analysis.verdicts import Claim, Verdict, about_equal, at_least, ended, every, greater, learned, sample

REFERENCES = "docs/references.md#arithmetic_shift"  # where every claim's reference is told in full
HEADLINE = "accuracy_heatmap"
# What the hand-run reports measured (docs/references.md#arithmetic_shift; single runs, LSTM, the full training sets).
REFERENCE = (
    "LSTM test accuracy trained on A: single-digit 0.988, two-digit 0.169, mixed 0.122; trained on B: "
    "single-digit 0.003, two-digit 0.846, mixed 0.615; GRU similar to LSTM, vanilla RNN poor."
)
CAPTIONS = {
    "accuracy_heatmap": "Final test accuracy of each training set (rows) on each test set (columns), one panel per "
    "cell, each at its tuned lr: mean over seeds, with the hand-run LSTM's in brackets.",
}
CURVE_HUE = "cell"  # the learning curves of all trials are coloured by cell

TESTS = {"single": "single-digit", "two": "two-digit", "mixed": "mixed 0-99"}  # test_acc_<key>: what it holds
CELLS = ("rnn", "gru", "lstm")
HAND_RUN = {
    ("A", "single"): 0.988,
    ("A", "two"): 0.169,
    ("A", "mixed"): 0.122,
    ("B", "single"): 0.003,
    ("B", "two"): 0.846,
    ("B", "mixed"): 0.615,
}  # LSTM, full sets
# a comparison of what the models learned holds only where each compared model learned its own operands:
# exact-match accuracy at least this (chance, a guess of the answer's digits, is below 0.01)
LEARNED = 0.5
ALL_TWO = 0.9**3  # the share of mixed expressions whose three operands all have two digits


def tuned(trials: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    """The seeds of each (training set, cell) at its tuned lr (`analysis.selection`: chosen on validation
    among the lrs whose seeds all ran to the end), the ones that ran to the end."""
    return ended(tuned_trials(trials, manifest, by=["train_set", "cell"]))


def heatmap_data(trials: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    """Per cell, training set and test set (and `test_acc`, the training set's own distribution):
    mean, spread over seeds and n of the final accuracy at the tuned lr, and that lr."""
    rows = []
    for (train, cell), g in tuned(trials, manifest).groupby(["config.train_set", "config.cell"]):
        for test in [*TESTS, "own"]:
            s = spread(g["metric.test_acc" if test == "own" else f"metric.test_acc_{test}"])
            rows.append(
                {
                    "cell": cell,
                    "train_set": train,
                    "test_set": test,
                    "mean": s.mean,
                    "lo": s.lo,
                    "hi": s.hi,
                    "n": s.n,
                    "lr": float(g["config.lr"].iloc[0]),
                }
            )
    return pd.DataFrame(rows, columns=["cell", "train_set", "test_set", "mean", "lo", "hi", "n", "lr"])


def heatmap_figure(trials: pd.DataFrame, manifest: dict) -> Figure:
    """One panel per cell: rows the training sets, columns the test sets, colour the mean final test
    accuracy at the tuned lr (annotated with its spread over seeds and, for the LSTM, the hand-run value)."""
    d, seeds = heatmap_data(trials, manifest), seeds_said(tuned(trials, manifest))
    d = d[d["test_set"] != "own"]
    cells = [c for c in CELLS if c in set(d["cell"])]
    trains = sorted(d["train_set"].unique())
    fig, axes = plt.subplots(
        1,
        max(len(cells), 1),
        figsize=(4.2 * max(len(cells), 1) + 1.2, 2.2 + 1.1 * len(trains)),
        squeeze=False,
        layout="constrained",
    )
    image = None
    for ax, cell in zip(axes[0], cells):
        g = d[d["cell"] == cell].set_index(["train_set", "test_set"])
        grid = np.array([[g.loc[(tr, te), "mean"] if (tr, te) in g.index else np.nan for te in TESTS] for tr in trains])
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for i, tr in enumerate(trains):
            for j, te in enumerate(TESTS):
                if (tr, te) not in g.index:
                    continue
                r = g.loc[(tr, te)]
                text = f"{r['mean']:.3f}\n±{(r['hi'] - r['lo']) / 2:.3f}" if r["n"] > 1 else f"{r['mean']:.3f}"
                if cell == "lstm" and (tr, te) in HAND_RUN:
                    text += f"\n({HAND_RUN[(tr, te)]:.3f})"
                ax.text(j, i, text, ha="center", va="center", fontsize=9, color="black" if r["mean"] > 0.6 else "white")
        lrs = ", ".join(f"{tr} {fmt_sci(g.loc[(tr, 'single'), 'lr'])}" for tr in trains if (tr, "single") in g.index)
        ax.set_xticks(range(len(TESTS)), list(TESTS.values()))
        ax.set_yticks(range(len(trains)), trains if ax is axes[0][0] else [])
        ax.set(
            xlabel="test set", ylabel="training set" if ax is axes[0][0] else "", title=f"{cell.upper()} (lr: {lrs})"
        )
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), label="test accuracy (fraction correct)")
    n = sorted(set(d["n"])) if len(d) else [0]
    what = "mean ± 95% CI over seeds" if n[0] >= 3 else "mean ± half the min-max over seeds"
    fig.suptitle(
        f"Arithmetic: test accuracy by training set and test set, each at its tuned lr\n{what} "
        f"(n={n[0]}{'–' + str(n[-1]) if len(n) > 1 else ''}; {seeds}); in brackets the hand-run LSTM",
        fontsize=11,
    )
    return fig


def figures(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> dict[str, Figure]:
    return {"accuracy_heatmap": heatmap_figure(trials, manifest)}


def findings(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> list[str]:
    d = heatmap_data(trials, manifest)
    out = []
    for cell in [c for c in CELLS if c in set(d["cell"])]:
        parts = []
        for train, g in d[d["cell"] == cell].groupby("train_set"):
            acc = g.set_index("test_set")["mean"]
            parts.append(
                f"trained on {train} (lr {fmt_sci(g['lr'].iloc[0])}): "
                + ", ".join(f"{TESTS[k]} {acc[k]:.3f}" for k in TESTS if k in acc)
                + f" (its own distribution {acc['own']:.3f})"
            )
        out.append(f"{cell.upper()}: " + "; ".join(parts) + ".")
    b = d[(d["train_set"] == "B") & (d["cell"] == "lstm")].set_index("test_set")["mean"]
    if {"two", "mixed"} <= set(b.index):
        out.append(
            f"Mixed expressions have three two-digit operands with probability 0.9³ = {ALL_TWO:.3f}: a model "
            f"that knows only two-digit expressions gets about {ALL_TWO:.3f} x its two-digit accuracy on them. "
            f"LSTM trained on B: mixed {b['mixed']:.3f} against {ALL_TWO:.3f} x {b['two']:.3f} = "
            f"{ALL_TWO * b['two']:.3f} (hand-run: 0.615 against {ALL_TWO * 0.846:.3f})."
        )
    return out


def reference_table(trials: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    """The LSTM's test accuracy per training set and test set: this run (at its tuned lr, the seeds
    that ran to the end) beside the hand-run reports' single runs."""
    rows = []
    t = tuned(trials, manifest)
    for (train, test), hand in HAND_RUN.items():
        g = t[(t["config.train_set"] == train) & (t["config.cell"] == "lstm")]
        rows.append(
            {
                "training set": train,
                "test set": TESTS[test],
                "this run": spread(g[f"metric.test_acc_{test}"]).text(3) if len(g) else "–",
                "hand-run": f"{hand:.3f}",
            }
        )
    return pd.DataFrame(rows)


# ---- claims (docs/references.md#arithmetic_shift) ------------------------------------------------


def _acc(trials, manifest, train, test, cell="lstm"):
    """The seeds of (train, cell) at its tuned lr: their final accuracy on `test` ('own': test_acc)."""
    t = tuned(trials, manifest)
    metric = "metric.test_acc" if test == "own" else f"metric.test_acc_{test}"
    return sample(
        t, f"{cell.upper()} {train}->{TESTS.get(test, 'own distribution')}", metric, train_set=train, cell=cell
    )


def _own_learned(trials, manifest, pairs) -> Verdict:
    """Each (train, test) pair's first side above its second, where each model learned its own operands
    (A single-digit, B two-digit, at least LEARNED)."""
    v = every([greater(_acc(trials, manifest, *a), _acc(trials, manifest, *b)) for a, b in pairs])
    return learned(v, LEARNED, _acc(trials, manifest, "A", "single"), _acc(trials, manifest, "B", "two"))


FULL = ("full",)  # the hand-run levels need the hand-run training sets and steps
# What B's model learned needs the full budget: at the quick size (hidden 64, 10% of the sets) the LSTM trained on
# B reached 0.16 on two-digit expressions in the quick 2,800 steps, and 0.22 in three times as many (8,400 steps,
# lr 1e-2, VALIDITY.md): the floor of 0.5 is out of reach within the quick wall-time limit.
LEARNS_B = ("full",)
# "GRU ≈ LSTM" is about trained models: within the quick budget's 2,800 steps the cells still learn at different
# speeds, and which of the two is ahead depends on the lr (at lr 3e-3 the GRU led on A, at 1e-2 the LSTM)
TRAINED = ("full",)

CLAIMS = [
    Claim(
        "Trained on A, the LSTM learns single-digit expressions (test accuracy at least 0.5 above its two-digit "
        "accuracy) but not two-digit or mixed ones (each at most 0.3)",
        "A: single-digit 0.988, two-digit 0.169, mixed 0.122 (hand-run LSTM; docs/references.md#arithmetic_shift)",
        lambda t, c, m: every(
            [
                greater(_acc(t, m, "A", "single"), _acc(t, m, "A", "two"), margin=0.5),
                at_least(_acc(t, m, "A", "two"), 0.3, at_most=True),
                at_least(_acc(t, m, "A", "mixed"), 0.3, at_most=True),
            ]
        ),
    ),
    Claim(
        "Trained on B (two-digit only), the LSTM fails on single-digit expressions (at most 0.05) and does better "
        "on two-digit ones than on them",
        "B: single-digit 0.003, two-digit 0.846 (hand-run LSTM)",
        lambda t, c, m: learned(
            every(
                [
                    at_least(_acc(t, m, "B", "single"), 0.05, at_most=True),
                    greater(_acc(t, m, "B", "two"), _acc(t, m, "B", "single")),
                ]
            ),
            LEARNED,
            _acc(t, m, "B", "two"),
        ),
        budgets=LEARNS_B,
    ),
    Claim(
        "No generalisation across the shift: each training set's model is best on its own operands, A on "
        "single-digit and B on two-digit expressions",
        "single-digit: A 0.988 vs B 0.003; two-digit: B 0.846 vs A 0.169 (hand-run LSTM)",
        lambda t, c, m: _own_learned(t, m, [(("A", "single"), ("B", "single")), (("B", "two"), ("A", "two"))]),
        budgets=LEARNS_B,
    ),
    Claim(
        "Mixed expressions are harder than each model's own: the mixed accuracy is below A's single-digit and "
        "below B's two-digit accuracy",
        "mixed: A 0.122 (single-digit 0.988), B 0.615 (two-digit 0.846) (hand-run LSTM)",
        lambda t, c, m: _own_learned(t, m, [(("A", "single"), ("A", "mixed")), (("B", "two"), ("B", "mixed"))]),
        budgets=LEARNS_B,
    ),
    Claim(
        "GRU ≈ LSTM: on each training set's own distribution the GRU's test accuracy is within 0.05 of the LSTM's",
        "GRU similar to LSTM on this task (hand-run)",
        lambda t, c, m: every(
            [
                about_equal(_acc(t, m, train, "own", "gru"), _acc(t, m, train, "own", "lstm"), 0.05)
                for train in ("A", "B")
            ]
        ),
        budgets=TRAINED,
    ),
    Claim(
        "The vanilla RNN is poor: on B's two-digit expressions its test accuracy is below the LSTM's and the GRU's",
        "RNN poor against GRU and LSTM on this task (hand-run)",
        lambda t, c, m: learned(
            every([greater(_acc(t, m, "B", "two", cell), _acc(t, m, "B", "two", "rnn")) for cell in ("lstm", "gru")]),
            LEARNED,
            *(_acc(t, m, "B", "two", cell) for cell in ("lstm", "gru")),
        ),
        budgets=LEARNS_B,
    ),
    Claim(
        "At the hand-run sizes the LSTM reaches the hand-run levels: A single-digit >= 0.95, B two-digit >= 0.75 "
        "and B mixed >= 0.5",
        "A single-digit 0.988; B two-digit 0.846, mixed 0.615 (hand-run LSTM, 50k + 50k and 1M expressions)",
        lambda t, c, m: every(
            [
                at_least(_acc(t, m, "A", "single"), 0.95),
                at_least(_acc(t, m, "B", "two"), 0.75),
                at_least(_acc(t, m, "B", "mixed"), 0.5),
            ]
        ),
        budgets=FULL,
    ),
]
