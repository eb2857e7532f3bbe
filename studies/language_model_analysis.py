"""Analysis of the language-model study (studies/language_model.py): test perplexity against depth
per cell, the Transformer's layers x heads, learning curves in perplexity with clipping on and off,
what (if anything) rescues the 8-layer LSTM, and the claims of the hand-run report (docs/references.md 9).

A seed's test perplexity is read at its epoch of lowest validation perplexity (`selected.test_ppl`:
model selection on the validation text, as the hand-run report kept its best epoch; the final value
where a run has no curves). Perplexities are compared on a log scale (a ratio, as a difference of
cross-entropies): "within 10%" and "more than twice" are margins of ln 1.1 and ln 2 on the seeds'
log perplexities."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis import draw
from analysis.curves import axis, panel_curves_figure
from analysis.data import not_diverged, spread, summarize
from analysis.plots import metric_vs_figure
from analysis.selection import selection, tuned_trials
from analysis.style import colors
from analysis.verdicts import (
    INCONCLUSIVE,
    Claim,
    Sample,
    Verdict,
    about_equal,
    at_least,
    ended,
    every,
    greater,
    learned,
    not_below,
    sample,
)

REFERENCES = "docs/references.md#language_model"  # where every claim's reference is told in full
HEADLINE = "ppl_vs_layers"
REFERENCE = (
    "test perplexity: LSTM 1 / 2 / 4 / 8 layers 120.9 / 116.4 / 130.3 / 965 (8 layers fails); GRU 1 layer "
    "119.7; a Transformer of 1-4 layers and 2-4 heads, with and without gradient clipping."
)
CAPTIONS = {
    "ppl_vs_layers": "Test perplexity (at each seed's best validation epoch) against depth, one line per recurrent "
    "cell and setup; lower is better.",
    "transformer_layers_heads": "The causal Transformer: test perplexity (at each seed's best validation epoch) "
    "against layers, one line per number of heads.",
    "ppl_curves": "Learning curves in perplexity (validation and training), per model, with clipping on and off "
    "(and the 8-layer LSTM's forget-gate bias at 1).",
}
SEL = "selected.test_ppl"
HAND_RUN = {("lstm", 1): 120.9, ("lstm", 2): 116.4, ("lstm", 4): 130.3, ("lstm", 8): 965.0, ("gru", 1): 119.7}
TWICE = math.log(2)


def _flag(trials: pd.DataFrame, key: str) -> pd.Series:
    """Whether each trial sets `key` (clip, forget_bias): a value there, not the default None."""
    col = f"config.{key}"
    return trials[col].notna() if col in trials else pd.Series(False, index=trials.index)


def variant(trials: pd.DataFrame) -> pd.Series:
    """What each trial adds to its plain model: 'no help', 'clip 0.25', 'forget bias 1', or both."""
    out = pd.Series("", index=trials.index, dtype=object)
    for key, name in (("clip", "clip"), ("forget_bias", "forget bias")):
        on = _flag(trials, key)
        if not on.any():
            continue
        text = trials.loc[on, f"config.{key}"].map(lambda v, name=name: f"{name} {v:g}")
        out[on] = out[on].where(out[on] == "", out[on] + ", ") + text
    return out.where(out != "", "no help")


def model_name(trials: pd.DataFrame) -> pd.Series:
    """'lstm, 2 layers', 'transformer, 1 layer, 4 heads'."""

    def one(r):
        n = int(r["config.layers"])
        heads = f", {int(r['config.heads'])} heads" if r["config.cell"] == "transformer" else ""
        return f"{r['config.cell']}, {n} layer{'s' if n > 1 else ''}{heads}"

    return trials.apply(one, axis=1) if len(trials) else pd.Series([], dtype=object)


def _labelled(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials with `config.variant`, `config.model` and `config.setting` (the cell and its variant,
    'lstm, clip 0.25': legends show a setting as it is)."""
    v = variant(trials)
    setting = trials["config.cell"] + v.map(lambda x: "" if x == "no help" else f", {x}")
    return trials.assign(**{"config.variant": v, "config.model": model_name(trials), "config.setting": setting})


def selected(trials: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """The trials with `selected.test_ppl`: each seed's test perplexity at its epoch of lowest
    validation perplexity (the final one where its curve is missing)."""
    out = trials.assign(**{"selected.test_ppl": trials.get("metric.test_ppl", np.nan)})
    if not len(curves) or not {"trial_id", "metric.val_ppl", "metric.test_ppl"} <= set(curves):
        return out
    c = curves[np.isfinite(curves["metric.val_ppl"].astype(float))]
    at_best = c.loc[c.groupby("trial_id")["metric.val_ppl"].idxmin(), ["trial_id", "metric.test_ppl"]]
    best = out["trial_id"].map(at_best.set_index("trial_id")["metric.test_ppl"])
    return out.assign(**{"selected.test_ppl": best.fillna(out["selected.test_ppl"])})


def recurrent(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[trials["config.cell"] != "transformer"]


def _log_y(fig: Figure) -> Figure:
    """Perplexities on a log axis where they span more than a factor of 3 (early curves, failed models)."""
    for ax in fig.axes:
        lo, hi = ax.get_ylim()
        if ax.has_data() and lo > 0 and hi / lo > 3:
            ax.set_yscale("log")
    return fig


def figures(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> dict[str, Figure]:
    t = _labelled(selected(tuned_trials(trials, manifest), curves))  # each setting at its tuned lr
    figs, lr = {}, "tuned lr" if manifest.get("samples") != 1 else f"lr {manifest['search_first']['lr']:g}"
    rec = recurrent(t)
    if len(rec):
        figs["ppl_vs_layers"] = metric_vs_figure(
            rec,
            "layers",
            [SEL],
            f"Word-level PTB: test perplexity (best validation epoch, {lr}) against depth, per cell and setup",
            hue="setting",
            chance=unigram(trials) if "metric.unigram_ppl" in trials else None,  # what word frequencies reach
        )
    tf = t[t["config.cell"] == "transformer"]
    if len(tf):
        tf = tf.assign(
            **{
                "config.setting": tf["config.heads"].astype(int).astype(str)
                + " heads"
                + tf["config.variant"].map(lambda v: "" if v == "no help" else f", {v}")
            }
        )
        figs["transformer_layers_heads"] = metric_vs_figure(
            tf,
            "layers",
            [SEL],
            f"Causal Transformer: test perplexity (best validation epoch, {lr}) against layers, per heads",
            hue="setting",
        )
    ax = axis(t, curves, manifest)
    if ax and "metric.val_ppl" in curves:
        several = t.groupby("config.model")["config.variant"].nunique()
        models = several[several > 1].index.tolist() or t["config.model"].unique().tolist()
        if len(models) > 4:  # the LSTM's first
            models = sorted(models, key=lambda m: (not m.startswith("lstm"), m))[:4]
        sel = t[t["config.model"].isin(models)].assign(**{"config.setting": lambda d: d["config.variant"]})
        fig = panel_curves_figure(
            curves[curves["trial_id"].isin(sel["trial_id"])],
            sel,
            "model",
            "setting",
            [m for m in ("metric.val_ppl", "metric.train_ppl") if m in curves],
            "Learning curves in perplexity, per model: clipping on and off",
            ax.x,
            ax.label,
            ax.rungs,
        )
        last = fig.axes[len(models) - 1]  # the legend's panel: every variant in it, whichever panel has it
        shown = last.get_legend_handles_labels()[1]
        draw.legend(
            last,
            [Line2D([], [], color=c, label=v) for v, c in colors(sel["config.setting"]).items() if v not in shown],
            outside=True,
        )
        figs["ppl_curves"] = _log_y(fig)
    return figs


# ---- numbers -------------------------------------------------------------------------------------


def _select(
    trials: pd.DataFrame,
    cell: str,
    layers: int,
    clip: bool = False,
    forget_bias: bool = False,
    heads: int | None = None,
) -> pd.DataFrame:
    t = trials[(trials["config.cell"] == cell) & (trials["config.layers"] == layers)]
    t = t[(_flag(t, "clip") == clip) & (_flag(t, "forget_bias") == forget_bias)]
    return t if heads is None else t[t["config.heads"] == heads]


def _label(cell: str, layers: int, clip: bool = False, forget_bias: bool = False) -> str:
    extra = (", clipped" if clip else "") + (", forget bias 1" if forget_bias else "")
    return f"{cell.upper()} {layers} layer{'s' if layers > 1 else ''}{extra}"


def ppl(trials: pd.DataFrame, manifest: dict, cell: str, layers: int, **setup) -> Sample:
    """Test perplexity (`selected.test_ppl` where the trials have it) at the setting's tuned lr (chosen on
    validation, `analysis.selection`) over the seeds that ran to the end; a seed whose perplexity is inf
    (it diverged before any finite validation) counts as inf."""
    m = SEL if SEL in trials else "metric.test_ppl"
    at = tuned_trials(_select(trials, cell, layers, **setup), manifest, by=[])
    s = sample(at, _label(cell, layers, **setup), m)
    t = ended(at)
    n_inf = int(np.isinf(t[m].astype(float)).sum()) if m in t else 0
    return replace(s, values=np.concatenate([s.values, np.full(n_inf, np.inf)]), digits=1)


def _logs(s: Sample) -> Sample:
    return replace(s, values=np.log(s.values))


def _in_ppl(v: Verdict, *samples: Sample, note: str = "") -> Verdict:
    """A verdict decided on log perplexities, shown in perplexities."""
    return replace(v, value=" vs ".join(s.text() for s in samples) + note)


def ratio_above(a: Sample, b: Sample, factor: float) -> Verdict:
    """A's perplexity more than `factor` times B's: greater on the logs, with margin ln factor."""
    return _in_ppl(greater(_logs(a), _logs(b), math.log(factor)), a, b, note=f" (> {factor:g}x claimed)")


def findings(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> list[str]:
    t = _labelled(not_diverged(ended(tuned_trials(selected(trials, curves), manifest))))
    if not len(t) or "metric.test_ppl" not in t:
        return []
    out = []
    s = summarize(t, ["config.setting", "config.layers"], [SEL])
    for setup, g in s[~s["config.setting"].str.startswith("transformer")].groupby("config.setting", sort=True):
        g = g.sort_values("config.layers")
        if len(g) > 1:
            cell, _, rest = setup.partition(", ")
            out.append(
                f"{cell.upper()}{f' with {rest}' if rest else ''}: mean test perplexity (best validation "
                "epoch) by depth "
                + ", ".join(
                    f"{int(n)} layer{'s' if n > 1 else ''}: {v:.1f}"
                    for n, v in zip(g["config.layers"], g[f"{SEL}.mean"])
                )
                + "."
            )
    out += rescue(t)
    out += clipping(t)
    tf = summarize(t[t["config.cell"] == "transformer"], ["config.model", "config.variant"], [SEL])
    pick = selection(t[t["config.cell"] == "transformer"], manifest, by=[], over=["model", "variant"])
    if len(tf) and len(pick):  # the best on validation, reported on test
        b = tf.merge(pick[["config.model", "config.variant"]]).iloc[0]
        others = (
            (f"; over its {len(tf)} settings {tf[f'{SEL}.mean'].min():.1f}-{tf[f'{SEL}.mean'].max():.1f}")
            if len(tf) > 1
            else ""
        )
        out.append(
            f"Best Transformer on validation: {b['config.model']} ({b['config.variant']}), test perplexity "
            f"{b[f'{SEL}.mean']:.1f}{others}."
        )
    return out


def rescue(t: pd.DataFrame) -> list[str]:
    """What helps the 8-layer LSTM: its test perplexity plain, clipped and with forget-gate bias 1,
    against the 1-layer LSTM's."""
    base = _select(t, "lstm", 1)[SEL]
    plain = _select(t, "lstm", 8)[SEL]
    if not len(base) or not len(plain):
        return []
    helps = [
        (name, _select(t, "lstm", 8, **kw)[SEL])
        for name, kw in (
            ("clipping", dict(clip=True)),
            ("forget-gate bias 1", dict(forget_bias=True)),
            ("both", dict(clip=True, forget_bias=True)),
        )
    ]
    helps = [(n, v) for n, v in helps if len(v)]
    if not helps:
        return []
    twice = 2 * base.mean()
    parts = [f"with {n} {spread(v).text(1)}" for n, v in helps]
    rescued = [n for n, v in helps if v.mean() < twice]
    verdict = (
        f"{' and '.join(rescued)} bring{'s' if len(rescued) == 1 else ''} it below twice the 1-layer's"
        if rescued
        else "neither brings it below twice the 1-layer's"
    )
    return [
        f"The 8-layer LSTM: test perplexity {spread(plain).text(1)} without help (1 layer: "
        f"{spread(base).text(1)}); {'; '.join(parts)}: {verdict}."
    ]


def clipping(t: pd.DataFrame) -> list[str]:
    """Test perplexity with and without clipping, for each model that ran both."""
    rows = []
    for model, g in t[_flag(t, "forget_bias") == False].groupby("config.model", sort=True):  # noqa: E712
        on, off = g.loc[_flag(g, "clip"), SEL], g.loc[~_flag(g, "clip"), SEL]
        if len(on) and len(off):
            rows.append(f"{model} {off.mean():.1f} -> {on.mean():.1f}")
    return (
        [f"Gradient clipping (max-norm 0.25), mean test perplexity without -> with: {'; '.join(rows)}."] if rows else []
    )


def reference_table(trials: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    """Test perplexity of the hand-run report's models (no help): this run's final value, mean and
    spread over seeds, beside the hand-run single runs. At quick the vocabulary and the model are
    smaller, so only the order compares."""
    rows = []
    for (cell, n), hand in HAND_RUN.items():
        s = ppl(trials.drop(columns=[SEL], errors="ignore"), manifest, cell, n)
        rows.append({"model": _label(cell, n), "this run (final)": spread(s.values).text(1), "hand-run": f"{hand:.1f}"})
    return pd.DataFrame(rows)


# ---- claims (docs/references.md#language_model) --------------------------------------------------

# At quick the CPU affords 5 epochs over 100k words: the 2-layer LSTM is still catching up with the
# 1-layer one (deeper stacks learn later), and perplexities over a 2,000-word vocabulary do not compare
# with the hand-run 10k-word numbers. Both need the hand-run setup.
FULL = ("full",)


def whole_vocabulary(manifest: dict) -> Verdict | None:
    """Inconclusive where the run kept part of the vocabulary: its perplexities are over fewer words
    than the hand-run's 10k and do not compare with its numbers (a match there would be chance)."""
    vocab = (manifest.get("fixed") or {}).get("vocab")
    if vocab is None:
        return None
    return Verdict(
        INCONCLUSIVE,
        "–",
        "",
        f"perplexity over the {vocab:,} most frequent words, not the hand-run "
        "10k: it does not compare with the hand-run number",
    )


LEARNED = 0.9  # a model has learned where its perplexity is at most this share of the unigram perplexity


def unigram(trials: pd.DataFrame) -> float:
    """The run's unigram test perplexity (what word frequencies alone reach; `metric.unigram_ppl`)."""
    return float(trials["metric.unigram_ppl"].dropna().iloc[0])


def learned_all(v: Verdict, trials: pd.DataFrame, *samples: Sample) -> Verdict:
    """`v`, where each compared model's perplexity is below 0.9 x the unigram's; else inconclusive."""
    return learned(v, LEARNED * unigram(trials), *samples, chance=unigram(trials), below=True)


def _deeper_worse(t, c, m):
    one, two, four = (ppl(selected(t, c), m, "lstm", n) for n in (1, 2, 4))
    return learned_all(every([greater(four, one), greater(four, two)]), t, one, two, four)


CLAIMS = [
    Claim(
        "Four layers are worse than one and than two: the 4-layer LSTM's test perplexity is above both",
        "LSTM 1 / 2 / 4 layers: 120.9 / 116.4 / 130.3 test perplexity (hand-run, docs/references.md#language_model)",
        _deeper_worse,
        # at quick (4 epochs, 100k words) the 4-layer LSTM stays above the learning floor (220.9 against 188.9):
        # the comparison of what the models learned needs the hand-run setup's epochs
        budgets=FULL,
    ),
    Claim(
        "Two layers are at least as good as one: the 2-layer LSTM's test perplexity is not above the 1-layer's",
        "LSTM 2 layers 116.4 against 1 layer 120.9 (hand-run)",
        lambda t, c, m: learned_all(
            not_below(ppl(selected(t, c), m, "lstm", 1), ppl(selected(t, c), m, "lstm", 2)),
            t,
            *(ppl(selected(t, c), m, "lstm", n) for n in (1, 2)),
        ),
        budgets=FULL,
    ),
    Claim(
        "Eight layers fail without help (no clipping, torch's initialisation): the 8-layer LSTM's test "
        "perplexity is more than twice the 1-layer's",
        "LSTM 8 layers 965 against 1 layer 120.9 (hand-run: fails)",
        lambda t, c, m: ratio_above(ppl(selected(t, c), m, "lstm", 8), ppl(selected(t, c), m, "lstm", 1), 2),
    ),
    Claim(
        "GRU ≈ LSTM at one layer: their test perplexities within 10% of each other",
        "GRU 1 layer 119.7 against LSTM 1 layer 120.9 (hand-run)",
        lambda t, c, m: learned_all(
            about_equal(ppl(selected(t, c), m, "gru", 1), ppl(selected(t, c), m, "lstm", 1), 0.1, ratio=True),
            t,
            ppl(selected(t, c), m, "gru", 1),
            ppl(selected(t, c), m, "lstm", 1),
        ),
    ),
    Claim(
        "In the hand-run setup, the 2-layer LSTM's test perplexity is within 10% of the hand-run 116.4",
        "LSTM 2 layers: 116.4 (hand-run; 200 units, dropout 0.2, 10k words, 40 epochs)",
        lambda t, c, m: (
            whole_vocabulary(m)
            or every(
                [
                    at_least(ppl(selected(t, c), m, "lstm", 2), 116.4 / 1.1),
                    at_least(ppl(selected(t, c), m, "lstm", 2), 116.4 * 1.1, at_most=True),
                ]
            )
        ),
        budgets=FULL,
    ),
]
