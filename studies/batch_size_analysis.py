"""Analysis of the batch-size study (studies/batch_size.py): final accuracy over batch size x lr (the
equal-epochs view: every trial trains on the same expressions), the best lr against the batch size
with the textbook rules (linear, square root) beside it, the step-to-step loss variance per batch
size, and the learning curves against epochs and against optimizer steps (the equal-steps view).

The best lr of a batch size is estimated per seed (seed k of every lr is paired: one trial trains
all seeds): the grid lr with the best final validation accuracy, refined by the vertex of a parabola
through it and its two neighbours in log lr (at an edge of the grid, through the three lrs there,
the vertex kept within the grid). The exponent of best lr ~ batch size^a is the slope of
log best lr against log batch size, fitted per seed: its spread over seeds decides between the
linear rule (a = 1, SGD; Goyal et al. 2017) and the square-root rule (a = 1/2, Adam; Malladi et al. 2022)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import draw
from analysis.data import spread, summarize
from analysis.selection import SEARCH, phase, selection, tuned_trials
from analysis.style import colors, fmt_sci
from analysis.verdicts import INCONCLUSIVE, Claim, Sample, Verdict, at_least, ended, every, greater, sample

REFERENCES = "docs/references.md#batch_size"  # where every claim's reference is told in full
HEADLINE = "accuracy_heatmap"
# What the hand-run reports measured (docs/references.md#batch_size; single runs of the arithmetic LSTM at lr 1e-4).
REFERENCE = (
    "LSTM arithmetic model, lr 1e-4, batch 8 / 32 / 128: small batches oscillate, large batches need more epochs."
)
CAPTIONS = {
    "accuracy_heatmap": "Final validation accuracy over batch size x lr after the same number of epochs; the best lr "
    "of each batch size framed.",
    "best_lr": "The best lr of each batch size (per seed, and their mean in log), with the linear and square-root "
    "rules drawn through the smallest batch's.",
    "loss_variance": "Step-to-step variance of the training loss per batch size, at the hand-run lr, at lr 1e-3 and at "
    "each batch size's best lr, beside the 1/batch of sampling noise alone.",
    "curves_views": "Validation accuracy against epochs (equal samples) and against optimizer steps, at the hand-run "
    "lr, at lr 1e-3 and at each batch size's best lr.",
}
CURVE_HUE = "batch_size"

HAND_LR = 1e-4  # the hand-run reports' lr
# The fixed lr of the claims: the hand-run 1e-4 leaves the largest batch at the level of a constant guess within the
# quick budget (validation accuracy ~0.03), and a claim never rests on a metric at chance; at 1e-3 every batch learns
FIXED_LR = 1e-3
METRIC = "metric.val_acc"
VAR = "metric.train_loss_var"  # the step-to-step variance of the training loss (studies/engine/loop.py, train_block)


def _grid(trials: pd.DataFrame) -> pd.DataFrame:
    """Final validation accuracy per batch size, lr and seed (the search's seeds that ran to the end)."""
    t = ended(phase(trials, SEARCH))
    return t.pivot_table(index=["config.batch_size", "config.seed"], columns="config.lr", values=METRIC)


def best_lr_data(trials: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    """Per batch size and seed: the grid lr that the selection rule (`analysis.selection`, on final
    validation accuracy) chooses from that seed alone (`grid_lr`: each seed a replicate of the choice),
    and its refinement by a parabola in log10 lr through it and its neighbours (`best_lr`; at an edge of
    the grid, `edge`, through the three lrs there, the vertex kept within the grid)."""
    rows = []
    g = _grid(trials)
    lrs = np.log10(np.asarray(g.columns, dtype=float))
    for seed, t in phase(trials, SEARCH).groupby("config.seed"):
        for _, b in selection(t, manifest, by=["batch_size"], over=["lr"]).iterrows():
            bs, a = int(b["config.batch_size"]), g.loc[(b["config.batch_size"], seed)].to_numpy(dtype=float)
            i = int(np.argmin(np.abs(lrs - np.log10(b["config.lr"]))))
            best, edge = lrs[i], i in (0, len(a) - 1)
            j = min(max(i, 1), len(a) - 2)  # the middle of the three lrs the parabola goes through
            if j >= 1 and np.isfinite(a[j - 1 : j + 2]).all():
                c2, c1, _ = np.polyfit(lrs[j - 1 : j + 2], a[j - 1 : j + 2], 2)
                if c2 < 0:  # the vertex, kept within those three lrs
                    best = float(np.clip(-c1 / (2 * c2), lrs[j - 1], lrs[j + 1]))
            rows.append((bs, int(seed), 10 ** lrs[i], 10**best, edge, a[i]))
    return pd.DataFrame(rows, columns=["batch_size", "seed", "grid_lr", "best_lr", "edge", "acc"])


def exponents(d: pd.DataFrame) -> pd.DataFrame:
    """Per seed, the slope a of log best lr against log batch size (best lr ~ batch size^a), from
    `best_lr_data`."""
    rows = []
    for seed, g in d.groupby("seed"):
        if g["batch_size"].nunique() >= 2:
            a = np.polyfit(np.log(g["batch_size"]), np.log(g["best_lr"]), 1)[0]
            rows.append((seed, a, bool(g["edge"].any())))
    return pd.DataFrame(rows, columns=["seed", "exponent", "edge"])


def heatmap_figure(trials: pd.DataFrame, manifest: dict) -> Figure:
    trials = phase(trials, SEARCH)  # the grid as the search ran it
    s = summarize(ended(trials), ["config.batch_size", "config.lr"], [METRIC])
    bss, lrs = sorted(s["config.batch_size"].unique()), sorted(s["config.lr"].unique())
    grid = np.full((len(bss), len(lrs)), np.nan)
    fig, ax = plt.subplots(figsize=(1.3 * len(lrs) + 3.0, 1.0 * len(bss) + 2.0))
    for _, r in s.iterrows():
        grid[bss.index(r["config.batch_size"]), lrs.index(r["config.lr"])] = r[f"{METRIC}.mean"]
    image = ax.imshow(grid, vmin=0, vmax=max(np.nanmax(grid, initial=0.0), 0.05), cmap="viridis", aspect="auto")
    for _, r in s.iterrows():
        i, j = bss.index(r["config.batch_size"]), lrs.index(r["config.lr"])
        ci = r[f"{METRIC}.ci95"] if r[f"{METRIC}.n"] >= 3 else (r[f"{METRIC}.max"] - r[f"{METRIC}.min"]) / 2
        text = f"{r[f'{METRIC}.mean']:.3f}" + (f"\n±{ci:.3f}" if np.isfinite(ci) else "")
        color = "white" if grid[i, j] < 0.6 * np.nanmax(grid) else "black"
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
    for _, b in selection(trials, manifest, by=["batch_size"], over=["lr"]).iterrows():  # each batch's best lr
        i, j = bss.index(b["config.batch_size"]), lrs.index(b["config.lr"])
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2))
    ax.set_xticks(range(len(lrs)), [fmt_sci(v) for v in lrs])
    ax.set_yticks(range(len(bss)), [str(int(b)) for b in bss])
    ax.set(xlabel="learning rate", ylabel="batch size")
    fig.colorbar(image, ax=ax, label="final validation accuracy (fraction correct)")
    n = int(s[f"{METRIC}.n"].min()) if len(s) else 0
    ax.set_title(
        "Batch size x lr: final validation accuracy after equal epochs\nmean ± "
        f"{'95% CI' if n >= 3 else 'half the min-max'} over seeds (n={n}); red: the best lr of each batch "
        "size",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def best_lr_figure(trials: pd.DataFrame, manifest: dict) -> Figure:
    d = best_lr_data(trials, manifest)
    fig, ax = plt.subplots(figsize=(9.0, 4.6))
    if len(d):
        pal = colors(d["batch_size"])
        for bs, g in d.groupby("batch_size"):
            ax.scatter(g["batch_size"], g["best_lr"], color=pal[bs], s=30, alpha=0.8, zorder=4, label="_seed")
        m = d.groupby("batch_size")["best_lr"].apply(lambda v: 10 ** np.log10(v).mean())
        ax.plot(m.index, m.values, "o-", color="black", lw=2, ms=7, label="best lr (geometric mean over seeds)")
        bs = np.array(sorted(d["batch_size"].unique()), dtype=float)
        for a, style, name in ((1.0, "--", "linear rule (lr ∝ batch)"), (0.5, ":", "square-root rule (lr ∝ √batch)")):
            ax.plot(bs, m.iloc[0] * (bs / bs[0]) ** a, style, color="gray", lw=1.5, label=name)
        e = exponents(d)
        if len(e):
            s = spread(e["exponent"])
            ax.plot([], [], " ", label=f"fitted exponent {s.text(2)}")
        lrs = sorted(ended(trials)["config.lr"].unique())
        ax.set_ylim(min(lrs) / 1.5, max(lrs) * 1.5)
        for v in lrs:
            ax.axhline(v, color="0.85", lw=0.8, zorder=0)
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="best learning rate (final validation accuracy)")
    ticks = sorted(d["batch_size"].unique())
    ax.set_xticks(ticks, [str(b) for b in ticks])
    ax.minorticks_off()
    ax.set_title("Best lr against batch size: dots one seed each (grey lines: the lr grid)", fontsize=10)
    draw.legend(ax, outside=True)
    fig.tight_layout()
    return fig


def loss_variance_data(trials: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    """`train_loss_var` (the last iteration's) per batch size at the hand-run lr and at each batch
    size's best lr (`analysis.selection`, on validation): mean and spread over seeds."""
    t, rows = ended(phase(trials, SEARCH)), []
    best = ended(tuned_trials(trials, manifest, by=["batch_size"], over=["lr"]))  # its confirmation seeds
    for bs, g in t.groupby("config.batch_size"):
        b = best[best["config.batch_size"] == bs]
        for view, lr in (("hand-run lr 1e-4", HAND_LR), ("lr 1e-3", FIXED_LR), ("best lr", b["config.lr"].iloc[0])):
            v = (b if view == "best lr" else g.loc[np.isclose(g["config.lr"], lr)])[VAR]
            s = spread(v)
            rows.append(
                {"batch_size": int(bs), "view": view, "lr": lr, "mean": s.mean, "lo": s.lo, "hi": s.hi, "n": s.n}
            )
    return pd.DataFrame(rows, columns=["batch_size", "view", "lr", "mean", "lo", "hi", "n"])


def loss_variance_figure(trials: pd.DataFrame, manifest: dict) -> Figure:
    d = loss_variance_data(trials, manifest).dropna(subset=["mean"])  # a view whose lr the run lacks is left out
    fig, ax = plt.subplots(figsize=(8.6, 4.4))
    views = list(dict.fromkeys(d["view"]))
    bss = sorted(d["batch_size"].unique())
    width = 0.8 / max(len(views), 1)
    for k, view in enumerate(views):
        g = d[d["view"] == view].set_index("batch_size").reindex(bss)
        x = np.arange(len(bss)) + (k - (len(views) - 1) / 2) * width
        err = np.vstack([g["mean"] - g["lo"], g["hi"] - g["mean"]]).clip(0)
        lrs = ": " + ", ".join(fmt_sci(v) for v in g["lr"]) if view == "best lr" else ""
        ax.bar(x, g["mean"], width, color=f"C{k}", alpha=0.85, yerr=np.nan_to_num(err), capsize=4, label=view + lrs)
    first = d[d["view"] == views[0]].set_index("batch_size")["mean"].reindex(bss) if views else pd.Series(dtype=float)
    if len(first) and np.isfinite(first.iloc[0]):  # a batch mean's variance ~ 1/batch: sampling noise alone
        ax.plot(
            np.arange(len(bss)) - (len(views) - 1) / 2 * width,
            first.iloc[0] * bss[0] / np.asarray(bss),
            "k--",
            marker="_",
            ms=14,
            lw=1,
            label=f"{views[0]} at batch {bss[0]} x {bss[0]}/batch (sampling noise)",
        )
    ax.set_xticks(range(len(bss)), [str(b) for b in bss])
    ax.set(xlabel="batch size", ylabel="step-to-step variance of the training loss (nats²)")
    if (d["mean"] > 0).any():
        ax.set_yscale("log")
    n = int(d["n"].min()) if len(d) else 0
    ax.set_title(
        "Loss oscillation per batch size: ½ mean squared change of the loss from step to step\n"
        f"last iteration; mean ± {'95% CI' if n >= 3 else 'min-max'} over seeds (n={n})",
        fontsize=10,
    )
    ax.grid(axis="y", alpha=0.3)
    draw.legend(ax, outside=True)
    fig.tight_layout()
    return fig


def _epochs(curves: pd.DataFrame, manifest: dict) -> pd.Series:
    """Epochs from the curves' samples: samples over the training set's size."""
    from datasets.arithmetic import training_parts

    f = manifest.get("fixed") or {}
    n = sum(training_parts(f.get("train_set", "A"), float(f.get("train_scale", 1.0))).values())
    return curves["samples"] / n


def curves_figure(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> Figure | None:
    """Mean validation accuracy over seeds against epochs (left) and steps (right), at the hand-run lr
    (top) and at each batch size's best lr (bottom)."""
    if not len(curves) or METRIC not in curves:
        return None
    t = ended(phase(trials, SEARCH))  # the search's view
    c = curves.merge(t[["trial_id", "config.batch_size", "config.lr"]], on="trial_id", suffixes=("_c", ""))
    c = c.assign(epoch=_epochs(c, manifest))
    best = loss_variance_data(trials, manifest).query("view == 'best lr'").set_index("batch_size")["lr"]
    fig, axes = plt.subplots(3, 2, figsize=(11.5, 10.4), sharey=True)
    pal = colors(t["config.batch_size"])
    for i, (title, lr_of) in enumerate(
        (
            ("the hand-run lr 1e-4", lambda bs: HAND_LR),
            ("lr 1e-3", lambda bs: FIXED_LR),
            ("each batch size's best lr", lambda bs: best.get(bs, np.nan)),
        )
    ):
        for bs, g in c.groupby("config.batch_size"):
            g = g[np.isclose(g["config.lr"], lr_of(bs))]
            if not len(g):
                continue
            m = g.groupby("iteration")[[METRIC, "epoch", "step"]].mean()
            name = f"batch {bs}" + (f", lr {fmt_sci(lr_of(bs))}" if i == 2 else "")
            for ax, x in zip(axes[i], ("epoch", "step")):
                ax.plot(m[x], m[METRIC], color=pal[bs], lw=2, label=name)
        for ax, x in zip(axes[i], ("epoch", "step")):
            ax.set(
                xlabel="epochs (= samples / training set)" if x == "epoch" else "optimizer steps",
                ylabel="validation accuracy" if x == "epoch" else "",
                title=f"{title}: against {x}s",
            )
            if x == "step" and ax.lines:
                ax.set_xscale("log")
            if not ax.lines:
                ax.text(0.5, 0.5, "not in this run", ha="center", transform=ax.transAxes, color="gray")
            ax.grid(alpha=0.3)
            draw.acc_ylim(ax)
        draw.legend(axes[i][1], outside=True)
    fig.suptitle("Equal epochs (left) and equal steps (right): mean validation accuracy over seeds", fontsize=11)
    fig.tight_layout()
    return fig


def figures(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> dict[str, Figure]:
    figs = {
        "accuracy_heatmap": heatmap_figure(trials, manifest),
        "best_lr": best_lr_figure(trials, manifest),
        "loss_variance": loss_variance_figure(trials, manifest),
    }
    views = curves_figure(trials, curves, manifest)
    if views is not None:
        figs["curves_views"] = views
    return figs


def at_step(trials: pd.DataFrame, curves: pd.DataFrame, bs: int, lr: float, step: float) -> Sample:
    """Each seed's validation accuracy at optimizer step `step` (linear between reports; the seeds
    of (bs, lr) that ran to the end)."""
    t = ended(phase(trials, SEARCH))
    t = t[(t["config.batch_size"] == bs) & np.isclose(t["config.lr"], lr)]
    values = []
    for tid in t["trial_id"]:
        g = curves[curves["trial_id"] == tid].sort_values("step")
        if len(g) and g["step"].iloc[-1] >= step:
            values.append(float(np.interp(step, g["step"], g[METRIC])))
    return Sample(f"batch {bs}, lr {fmt_sci(lr)} at step {int(step)}", np.array(values))


def findings(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> list[str]:
    out = []
    d = best_lr_data(trials, manifest)
    if len(d):
        m = d.groupby("batch_size").agg(
            lr=("best_lr", lambda v: 10 ** np.log10(v).mean()), acc=("acc", "mean"), edge=("edge", "any")
        )
        edge = {True: ", at the edge of the grid", False: ""}
        each = [f"{bs}: {fmt_sci(r['lr'])} (accuracy {r['acc']:.3f}{edge[bool(r['edge'])]})" for bs, r in m.iterrows()]
        out.append(
            "Best lr by batch size (geometric mean over seeds of the parabola-refined grid optimum): "
            + ", ".join(each)
            + "."
        )
    e = exponents(d)
    if len(e) >= 2:
        s = spread(e["exponent"])
        rules = {
            (True, False): "the square-root rule (1/2)",
            (False, True): "the linear rule (1)",
            (True, True): "both rules",
        }
        rule = rules.get((bool(s.lo <= 0.5 <= s.hi), bool(s.lo <= 1 <= s.hi)), "neither rule")
        out.append(f"Best lr ~ batch size^a with a = {s.text(2)} over seeds: the data support {rule}.")
    v = summarize(ended(phase(trials, SEARCH)), ["config.batch_size", "config.lr"], [VAR]).pivot(
        index="config.lr", columns="config.batch_size", values=f"{VAR}.mean"
    )
    if v.shape[1] >= 2:
        lo, hi = v.columns.min(), v.columns.max()
        ratio = ", ".join(f"{fmt_sci(lr)}: {r[lo] / r[hi]:.1f}" for lr, r in v.iterrows())
        out.append(
            f"Step-to-step loss variance, batch {lo} over batch {hi}, by lr: {ratio}; sampling noise alone (a "
            f"batch mean's variance ~ 1/batch) gives {hi / lo:.0f}. From the smallest to the largest lr it goes "
            f"{v[lo].iloc[0]:.3g} -> {v[lo].iloc[-1]:.3g} at batch {lo} and {v[hi].iloc[0]:.3g} -> "
            f"{v[hi].iloc[-1]:.3g} at batch {hi}: what a larger lr adds to the oscillation."
        )
    return out


# ---- claims (docs/references.md#batch_size) ------------------------------------------------------


def _at(trials, bs, lr=FIXED_LR, metric=METRIC):
    """The search's seeds at a fixed lr (tried at every batch size, never chosen)."""
    return sample(phase(trials, SEARCH), f"batch {bs}, lr {fmt_sci(lr)}", metric, batch_size=bs, lr=lr)


def _batches(trials) -> list[int]:
    return [int(b) for b in sorted(trials["config.batch_size"].unique())]


def _equal_steps(trials, curves):
    """At the fixed lr: the largest batch against the smallest at the largest batch's last step."""
    lo, hi = _batches(trials)[0], _batches(trials)[-1]
    steps = ended(phase(trials, SEARCH)).loc[
        lambda t: (t["config.batch_size"] == hi) & np.isclose(t["config.lr"], FIXED_LR), "step"
    ]
    if not len(steps):
        return Verdict(INCONCLUSIVE, "–", "", f"no seed of batch {hi} at lr {fmt_sci(FIXED_LR)} ran to the end")
    s = float(steps.min())
    return greater(at_step(trials, curves, hi, FIXED_LR, s), at_step(trials, curves, lo, FIXED_LR, s))


def _best_lr_sample(trials, manifest, bs):
    d = best_lr_data(trials, manifest)
    return Sample(f"log10 best lr, batch {bs}", np.log10(d.loc[d["batch_size"] == bs, "best_lr"].to_numpy()), digits=2)


def _exponent(trials, manifest):
    return Sample(
        "exponent a (best lr ~ batch^a)", exponents(best_lr_data(trials, manifest))["exponent"].to_numpy(), digits=2
    )


CLAIMS = [
    Claim(
        "Small batches oscillate: at the hand-run lr 1e-4 and at 1e-3 the step-to-step variance of the training "
        "loss falls with the batch size (8 > 32 > 128)",
        "small batch sizes oscillate (hand-run, lr 1e-4, batch 8 / 32 / 128; docs/references.md#batch_size)",
        lambda t, c, m: every(
            [
                greater(_at(t, a, lr, VAR), _at(t, b, lr, VAR))
                for lr in (HAND_LR, FIXED_LR)
                for a, b in zip(_batches(t)[:-1], _batches(t)[1:])
            ]
        ),
    ),
    Claim(
        "Large batches need more epochs at a fixed lr: after the same epochs at lr 1e-3, the largest batch's "
        "validation accuracy is below the smallest's",
        "large batch sizes need more epochs (hand-run, lr 1e-4; here 1e-3, where every batch size learns within the "
        "quick budget)",
        lambda t, c, m: greater(_at(t, _batches(t)[0]), _at(t, _batches(t)[-1])),
    ),
    Claim(
        "Per optimizer step it is the other way round: at lr 1e-3 and the same number of steps, the largest batch's "
        "validation accuracy is above the smallest's",
        "textbook: a step on a larger batch follows a less noisy gradient (the equal-steps view of the hand-run runs)",
        lambda t, c, m: _equal_steps(t, c),
    ),
    Claim(
        "The best lr grows with the batch size: the largest batch's best lr is above the smallest's",
        "textbook: lr scaled with the batch size (Goyal et al. 2017: linearly, for SGD; Malladi et al. 2022: by the "
        "square root, for Adam)",
        lambda t, c, m: greater(_best_lr_sample(t, m, _batches(t)[-1]), _best_lr_sample(t, m, _batches(t)[0])),
    ),
    Claim(
        "For Adam the best lr grows more slowly than the batch size: the exponent a of best lr ~ batch^a is below 1 "
        "(the linear rule overshoots)",
        "square-root rule for Adam (Malladi et al. 2022) against the linear rule for SGD (Goyal et al. 2017)",
        lambda t, c, m: at_least(_exponent(t, m), 1.0, at_most=True),
    ),
]
