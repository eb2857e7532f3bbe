"""Analysis of the toy MLP study (studies/toy_mlp.py): test accuracy per dataset and implementation
(NumPy, PyTorch, and the linear model) in both views, every setting at the hand-run lr and each at
its own tuned lr; the decision boundaries; and what the hand-run fixed lr costs.

The decision boundaries need trained weights, which the tables do not hold: the figure retrains the first seed
of each drawn setting in the driver with the shared loop (`studies.engine.loop`), on the CPU, deterministic; each
panel says whether it has its trial's recorded test accuracy (a trial that ran on a GPU, in bf16, may differ)."""

from __future__ import annotations

from itertools import product

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import draw
from analysis.data import spread_kind, spread_note, stat, summarize
from analysis.selection import SEARCH, phase, seeds_said, selection, tuned_trials
from analysis.style import fmt_sci
from analysis.verdicts import (
    Claim,
    about_equal,
    at_least,
    ended,
    every,
    greater,
    sample,
)

REFERENCES = "docs/references.md#toy_mlp"  # where every claim's reference is told in full
HEADLINE = "decision_boundaries"
# What the hand-run reports measured (docs/references.md; single runs): the trend to compare with.
REFERENCE = (
    "test accuracy NumPy / PyTorch: moons 0.95 / 1.0, circles 0.92 / 0.96, iris 1.0 / 1.0 (MLP 2-20-2, "
    "SGD lr 1e-2, 1,500 full-batch steps)."
)
CAPTIONS = {
    "decision_boundaries": "Decision boundaries (predicted probability of class 1; the line at 0.5) of the first "
    "seed per dataset and setting, over that seed's test points (x: misclassified).",
    "accuracy_per_dataset": "Final test accuracy per dataset and setting, all at the hand-run lr (left) and each at "
    "its own tuned lr (right); dots are seeds.",
}

DATASETS = ("moons", "circles", "iris", "blobs", "quantiles")
SETTINGS = ("numpy MLP", "torch MLP", "torch linear")  # impl and model; the linear model is torch's
VIEWS = ("hand-run lr", "tuned lr")
COLORS = {"numpy MLP": "C0", "torch MLP": "C1", "torch linear": "0.55"}
CHANCE = 0.5
TOL = 0.02  # test accuracy differences this small (4 of 200 test points) are no difference


def setting(trials: pd.DataFrame) -> pd.Series:
    """'numpy MLP', 'torch MLP' or 'torch linear' per trial (config.hidden '' is the linear model)."""
    model = np.where(trials["config.hidden"].astype(str) == "", "linear", "MLP")
    return trials["config.impl"].astype(str) + " " + pd.Series(model, index=trials.index)


CURVE_HUE = setting  # the learning curves of all trials are coloured by setting


def hand_lr(manifest: dict) -> float:
    """The hand-run lr: the first lr the search tries (the manifest's `search_first`)."""
    return float((manifest.get("search_first") or {}).get("lr", 1e-2))


def tuned_lr(trials: pd.DataFrame, manifest: dict, dataset: str, name: str) -> float:
    """A setting's tuned lr, by the one selection rule (`analysis.selection`, on validation)."""
    t = trials[(trials["config.dataset"] == dataset) & (setting(trials) == name)]
    b = selection(t, manifest, by=[])
    if not len(b):
        raise ValueError(f"{dataset}, {name}: no lr whose seeds all ran to the end")
    return float(b["config.lr"].iloc[0])


def views(trials: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    """The seeds of every setting at the hand-run lr (view 'hand-run lr') and at its tuned lr
    (view 'tuned lr'), with columns `config.setting` and `view`; full-length seeds only."""
    t = ended(trials).assign(**{"config.setting": setting(ended(trials))})
    out, lr0 = [], hand_lr(manifest)
    for (ds, name), g in t.groupby(["config.dataset", "config.setting"]):
        out.append(phase(g[np.isclose(g["config.lr"], lr0)], SEARCH).assign(view="hand-run lr"))
        at = tuned_trials(trials[(trials["config.dataset"] == ds) & (setting(trials) == name)], manifest, by=[])
        if len(at):  # the tuned lr's confirmation seeds where the run confirmed it
            out.append(ended(at).assign(**{"config.setting": name}, view="tuned lr"))
    return pd.concat(out, ignore_index=True) if out else t.iloc[:0].assign(view="")


def view_summary(trials: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    """Test accuracy over seeds per view, dataset and setting (mean, spread, n), with the lr."""
    v = views(trials, manifest)
    s = summarize(v, ["view", "config.dataset", "config.setting"], ["metric.test_acc"])
    lrs = v.groupby(["view", "config.dataset", "config.setting"])["config.lr"].first().rename("lr")
    return s.merge(lrs, left_on=["view", "config.dataset", "config.setting"], right_index=True)


def _order(values) -> list[str]:
    return [d for d in DATASETS if d in set(values)] + sorted(set(values) - set(DATASETS))


def _row(s: pd.DataFrame, view: str, ds: str, name: str) -> pd.DataFrame:
    """The rows of `s` (seeds or their summary) in `view` on dataset `ds` for setting `name`."""
    return s[(s["view"] == view) & (s["config.dataset"] == ds) & (s["config.setting"] == name)]


# ---- figures -------------------------------------------------------------------------------------


def accuracy_figure(trials: pd.DataFrame, manifest: dict) -> Figure:
    """Bars per dataset and setting, one panel per view, with the spread over seeds and each seed."""
    s, v = view_summary(trials, manifest), views(trials, manifest)
    kind = spread_kind(s, ["metric.test_acc"])
    names = [n for n in SETTINGS if n in set(s["config.setting"])]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), sharey=True)
    w = 0.8 / max(1, len(names))
    order = _order(s["config.dataset"])
    titles = [f"all at the hand-run lr {fmt_sci(hand_lr(manifest))}", "each at its own tuned lr"]
    for i, view in enumerate(VIEWS):  # which seeds each panel reads: the search's, or the confirmation's
        titles[i] += f"\n{seeds_said(v[v['view'] == view])}"
    for ax, view, title in zip(axes, VIEWS, titles):
        for j, name in enumerate(names):
            g = s[(s["view"] == view) & (s["config.setting"] == name)].set_index("config.dataset").reindex(order)
            have = g["metric.test_acc.mean"].notna().to_numpy()
            shift = (j - (len(names) - 1) / 2) * w
            g, xs = g[have], np.arange(len(order))[have] + shift
            mean = g["metric.test_acc.mean"]
            ax.bar(xs, mean, w, color=COLORS.get(name), alpha=0.85, label=name)
            yerr = draw.errors(g, "metric.test_acc", kind, (0.0, 1.0))
            ax.errorbar(xs, mean.astype(float), yerr=yerr, fmt="none", ecolor="black", capsize=3, lw=1)
            seeds = v[(v["view"] == view) & (v["config.setting"] == name)]
            x = seeds["config.dataset"].map({d: i for i, d in enumerate(order)}) + shift
            ax.scatter(x, seeds["metric.test_acc"], s=10, color="black", zorder=5, label="_seed")
        ax.axhline(CHANCE, color="gray", ls=":", lw=1, label="chance (0.5)")
        ax.set_xticks(np.arange(len(order)), order)
        ax.set(title=title, xlabel="dataset")
        ax.grid(axis="y", alpha=0.3)
        draw.acc_ylim(ax)
    axes[0].set_ylabel("final test accuracy (fraction correct)")
    draw.legend(axes[1], outside=True)
    fig.suptitle(
        f"Toy datasets: NumPy and PyTorch MLP 2-20-2, and a linear model\n"
        f"{spread_note(s, ['metric.test_acc'], kind)}; dots: seeds"
    )
    fig.tight_layout()
    return fig


def retrain(manifest: dict, dataset: str, impl: str, hidden: tuple, lr: float, seed: int):
    """The model of one seed, trained again on the CPU with the shared loop; returns it, and its data.
    One thread for torch and for NumPy's BLAS, as in a trial: a thread pool for 2x20 matmuls only
    waits on itself (30x slower on a busy 2-core machine)."""
    import torch
    from threadpoolctl import threadpool_limits

    import datasets
    from studies.engine.config import full_config
    from studies.engine.loop import make_replicas, make_units, train_block
    from studies.engine.tasks import TOY

    config = dict(manifest.get("fixed") or {}, dataset=dataset, impl=impl, hidden=hidden, lr=lr, seeds=[seed])
    c = full_config(config, TOY)
    cpu, threads = torch.device("cpu"), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            (unit,) = make_units(c, make_replicas(c, TOY, TOY.load(c, cpu), cpu), cpu)
            for _ in range(int(c["iterations"])):
                train_block(unit, c, TOY)
    finally:
        torch.set_num_threads(threads)
    return unit.model.eval(), datasets.toy(dataset, seed)


def _panel(ax, model, d, recorded: float, title: str) -> None:
    import torch

    x, y = d.test_x.numpy(), d.test_y.numpy()
    lo, hi = x.min(0) - 0.5, x.max(0) + 0.5
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 150), np.linspace(lo[1], hi[1], 150))
    with torch.no_grad():
        p = model(torch.tensor(np.c_[gx.ravel(), gy.ravel()], dtype=torch.float32)).softmax(-1)[:, 1]
        pred = model(d.test_x).argmax(-1).numpy()
    ax.contourf(gx, gy, p.numpy().reshape(gx.shape), levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.45)
    ax.contour(gx, gy, p.numpy().reshape(gx.shape), levels=[0.5], colors="black", linewidths=1)
    ok = pred == y
    ax.scatter(x[ok, 0], x[ok, 1], c=np.where(y[ok] == 1, "C3", "C0"), s=7, lw=0)
    ax.scatter(x[~ok, 0], x[~ok, 1], c=np.where(y[~ok] == 1, "C3", "C0"), s=22, marker="x", lw=1)
    acc = float(ok.mean())
    same = "" if abs(acc - recorded) < 1e-6 else f" (its trial: {recorded:.3f})"
    ax.set_title(f"{title}\ntest acc {acc:.3f}{same}", fontsize=8)
    ax.set(xticks=[], yticks=[])


def boundaries_figure(trials: pd.DataFrame, manifest: dict) -> Figure | None:
    """Rows: datasets; columns: NumPy and PyTorch MLP at the hand-run lr and at their tuned lr, and
    the linear model at its tuned lr. The first seed of each, retrained (see the module docstring)."""
    v = views(trials, manifest)
    if not len(v):
        return None
    # each view's first seed: the search's at the hand-run lr, the confirmation's at the tuned lr
    firsts = {view: int(v.loc[v["view"] == view, "config.seed"].min()) for view in VIEWS if (v["view"] == view).any()}
    first = v[v["config.seed"] == v["view"].map(firsts)]
    cols = [(n, view) for view in VIEWS for n in ("numpy MLP", "torch MLP")] + [("torch linear", "tuned lr")]
    order = _order(v["config.dataset"])
    fig, axes = plt.subplots(len(order), len(cols), figsize=(2.3 * len(cols), 2.2 * len(order)), squeeze=False)
    for ds, row_axes in zip(order, axes):
        for ax, (name, view) in zip(row_axes, cols):
            row = _row(first, view, ds, name)
            if not len(row):
                ax.axis("off")
                continue
            r = row.iloc[0]
            hidden = tuple(int(h) for h in str(r["config.hidden"]).split("-") if h)
            model, d = retrain(manifest, ds, r["config.impl"], hidden, float(r["config.lr"]), firsts[view])
            title = f"{ds}: {name}, lr {fmt_sci(float(r['config.lr']))}, seed {firsts[view]}"
            _panel(ax, model, d, float(r["metric.test_acc"]), title)
    seeds = ", ".join(f"{view} seed {k}" for view, k in firsts.items())
    fig.suptitle(
        f"Decision boundaries over the test points (blue: class 0, red: class 1; x: misclassified); {seeds}\n"
        "columns: NumPy and PyTorch MLP at the hand-run lr, at their tuned lr; the linear model at its tuned lr",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def figures(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> dict[str, Figure]:
    boundaries = boundaries_figure(trials, manifest)
    figs = {"decision_boundaries": boundaries} if boundaries is not None else {}
    return {**figs, "accuracy_per_dataset": accuracy_figure(trials, manifest)}


# ---- findings ------------------------------------------------------------------------------------


def _paired(v: pd.DataFrame, view: str, ds: str) -> np.ndarray:
    """NumPy's minus PyTorch's test accuracy, seed by seed, in `view` on dataset `ds`."""
    a, b = (_row(v, view, ds, name).set_index("config.seed")["metric.test_acc"] for name in ("numpy MLP", "torch MLP"))
    both = a.index.intersection(b.index)
    return (a[both] - b[both]).to_numpy(dtype=float)


def _moons_gap(trials: pd.DataFrame, v: pd.DataFrame, lr0: float) -> list[str]:
    """Whether the hand-run gap on moons (NumPy 0.95 against PyTorch 1.0) is confirmed, and why not."""
    g = v[(v["view"] == "hand-run lr") & (v["config.dataset"] == "moons")]
    mlp, lin = g[g["config.setting"] != "torch linear"], g[g["config.setting"] == "torch linear"]
    e = ended(trials[(trials["config.dataset"] == "moons") & (trials["config.hidden"].astype(str) != "")])
    means = e.groupby("config.lr")["metric.test_acc"].mean()
    solved = means[means >= 0.99]
    if not len(mlp) or not len(solved):
        return []
    d = _paired(v, "hand-run lr", "moons")
    return [
        f"The hand-run reports had NumPy behind PyTorch on moons (0.95 against 1.0): not confirmed, and not a "
        f"difference of implementation. Started from the same weights, the two end {np.abs(d).max():.3f} apart at "
        f"most, seed by seed. At lr {fmt_sci(lr0)}, 1,500 plain SGD steps leave both at "
        f"{mlp['metric.test_acc'].min():.3f}–{mlp['metric.test_acc'].max():.3f} over the seeds (other initial "
        f"weights, other samples of moons), below both hand-run numbers, with a boundary still close to a line"
        + (f" (the linear model: {lin['metric.test_acc'].mean():.3f})" if len(lin) else "")
        + f"; at lr {fmt_sci(float(solved.index.min()))} (the smallest tried that does), the MLP reaches "
        f"{solved.loc[solved.index.min()]:.3f} within the same steps. So the hand-run runs differed in how far "
        "they trained (their lr, steps or update rule), not in the MLP's arithmetic: before convergence, test "
        "accuracy follows any such difference."
    ]


def _said(s: pd.DataFrame, view: str, ds: str) -> str:
    """Each setting's test accuracy on `ds` in `view`, and its lr."""
    rows = [(name, r.iloc[0]) for name in SETTINGS if len(r := _row(s, view, ds, name))]
    return f"{view}: " + "; ".join(f"{name} {stat(r, 'metric.test_acc')} at lr {fmt_sci(r['lr'])}" for name, r in rows)


def findings(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> list[str]:
    s = view_summary(trials, manifest)
    if not len(s):
        return []
    v, lr0, order = views(trials, manifest), hand_lr(manifest), _order(s["config.dataset"])
    out = []
    diffs = {ds: _paired(v, "hand-run lr", ds) for ds in order}
    n = sum(len(d) for d in diffs.values())
    if n:
        worst = max(float(np.abs(d).max()) for d in diffs.values() if len(d))
        out.append(
            f"At the hand-run lr {fmt_sci(lr0)}, started from the same weights, NumPy and PyTorch end with "
            f"test accuracies that differ by at most {worst:.3f} on any of {n} seed pairs ({len(diffs)} "
            "datasets): the hand-written forward and backward pass trains as torch.nn does."
        )
    for ds in order:
        out.append(f"{ds}: " + ". ".join(_said(s, view, ds) for view in VIEWS) + ".")
    out += _moons_gap(trials, v, lr0)
    cost = []
    for ds in order:
        a, b = (_row(s, view, ds, "torch MLP") for view in VIEWS)
        if len(a) and len(b):
            a, b = a.iloc[0], b.iloc[0]
            same = ", the same lr on other seeds" if np.isclose(b["lr"], lr0) else ""
            cost.append(
                f"{ds} {a['metric.test_acc.mean']:.3f} -> {b['metric.test_acc.mean']:.3f} (lr {fmt_sci(b['lr'])}{same})"
            )
    if cost:
        out.append(
            f"What the hand-run lr {fmt_sci(lr0)} costs (PyTorch MLP, mean final test accuracy, hand-run -> "
            "tuned lr): " + "; ".join(cost) + "."
        )
    return out


# ---- claims (docs/references.md#toy_mlp) ---------------------------------------------------------


def _at(trials, ds, impl, lr, hidden="20"):
    """The seeds of a setting at `lr`, in the order of their seeds (NumPy's and PyTorch's pair up)."""
    label = f"{ds} {impl} {'MLP' if hidden else 'linear'} lr {fmt_sci(lr)}"
    t = phase(trials, SEARCH).sort_values("config.seed", kind="stable")
    return sample(t, label, "metric.test_acc", dataset=ds, impl=impl, hidden=hidden, lr=lr)


def _tuned(trials, manifest, ds, impl, hidden="20"):
    name = f"{impl} {'MLP' if hidden else 'linear'}"
    return _at(trials, ds, impl, tuned_lr(trials, manifest, ds, name), hidden)


def _agree_every_dataset(t, c, m):
    lr = hand_lr(m)
    return every(
        [
            about_equal(_at(t, ds, "numpy", lr), _at(t, ds, "torch", lr), TOL, paired=True)
            for ds in _order(t["config.dataset"])
        ]
    )


def _tuning_pays(t, c, m):
    lr, pairs = hand_lr(m), product(("moons", "circles"), ("numpy", "torch"))
    return every([greater(_tuned(t, m, ds, impl), _at(t, ds, impl, lr)) for ds, impl in pairs])


def _hidden_layer_needed(t, c, m):
    parts = []
    for ds, impl in product(("circles", "quantiles"), ("numpy", "torch")):
        mlp = _tuned(t, m, ds, impl)
        parts += [at_least(mlp, 0.9), greater(mlp, _tuned(t, m, ds, "torch", ""), 0.25)]
    return every(parts)


CLAIMS = [
    Claim(
        "NumPy and PyTorch agree within seed noise on every dataset (MLP 2-20-2 at the hand-run lr, from the same "
        "initial weights): NumPy is not behind on moons",
        "NumPy / PyTorch test accuracy: moons 0.95 / 1.0, circles 0.92 / 0.96, iris 1.0 / 1.0 (hand-run single "
        "runs; docs/references.md#toy_mlp)",
        _agree_every_dataset,
    ),
    Claim(
        "The hand-run lr 1e-2 costs accuracy: after 1,500 steps the tuned lr ends higher on moons and circles, for "
        "both implementations",
        "SGD lr 1e-2, 1,500 full-batch steps for every dataset (hand-run); moons 0.95 / 1.0, circles 0.92 / 0.96",
        _tuning_pays,
    ),
    Claim(
        "circles and gaussian quantiles need the hidden layer: the MLP (NumPy and PyTorch) reaches >= 0.9 and "
        "beats the linear model by more than 0.25, each at its tuned lr (the linear model stays near chance, 0.5)",
        "circles 0.92 / 0.96 with the MLP 2-20-2 (hand-run); a linear boundary cannot separate rings",
        _hidden_layer_needed,
    ),
]


HAND_RUN = {"moons": (0.95, 1.0), "circles": (0.92, 0.96), "iris": (1.0, 1.0)}


def reference_table(trials: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    """Final test accuracy per dataset: NumPy and PyTorch MLP at the hand-run lr and at their tuned
    lr, and the linear model, beside the hand-run single runs (docs/references.md#toy_mlp)."""
    s = view_summary(trials, manifest)
    rows = []
    for ds in _order(s["config.dataset"]):
        row = {"dataset": ds}
        for view in VIEWS:
            for name in SETTINGS if view == "tuned lr" else SETTINGS[:2]:
                r = _row(s, view, ds, name)
                row[f"{name}, {view}"] = stat(r.iloc[0], "metric.test_acc") if len(r) else "–"
        hand = HAND_RUN.get(ds)
        row["hand-run NumPy / PyTorch"] = f"{hand[0]:.2f} / {hand[1]:.2f}" if hand else "–"
        rows.append(row)
    return pd.DataFrame(rows)
