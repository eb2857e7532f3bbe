"""Findings of a run, as sentences computed from its tables: what a researcher would write under
the figures. Each study has its own function; every run also gets the notes on ASHA and on seeds
that disagree. Numbers are means over seeds with their spread (95% CI for n >= 3, else min-max)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.figures import (
    CHANCE,
    FIXED_LR,
    asha_rungs,
    fmt,
    fmt_sci,
    optimizer_views,
    per_class,
    regularizer_setting,
)
from analysis.tables import best_per_group, summarize, with_gap

NEAR_CHANCE = CHANCE + 0.1  # palindrome accuracy at or below this is "near chance"
SOLVED = 0.99  # palindrome accuracy at or above this is "solved"
POOR = 0.1  # an lr whose mean objective is this far below the best one falls short
DISAGREE = 0.3  # seeds whose objective differs by more than this disagree


def stat(row, m: str, digits: int = 3) -> str:
    """'0.986 ± 0.012' (95% CI, n >= 3) or '0.542 (0.111–0.972 over 2 seeds)' or '0.9 (1 seed)'."""
    mean, n = row[f"{m}.mean"], int(row[f"{m}.n"])
    if n >= 3:
        return f"{mean:.{digits}f} ± {row[f'{m}.ci95']:.{digits}f} (95% CI, n={n})"
    if n == 2:
        return f"{mean:.{digits}f} ({row[f'{m}.min']:.{digits}f}–{row[f'{m}.max']:.{digits}f} over 2 seeds)"
    return f"{mean:.{digits}f} (1 seed)"


def interval(row, m: str) -> tuple[float, float]:
    """The spread of `m` as an interval: mean ± 95% CI for n >= 3, else min-max."""
    if row[f"{m}.n"] >= 3:
        return row[f"{m}.mean"] - row[f"{m}.ci95"], row[f"{m}.mean"] + row[f"{m}.ci95"]
    return row[f"{m}.min"], row[f"{m}.max"]


def _ok(trials):
    return trials[~trials["diverged"].astype(bool)] if "diverged" in trials else trials


def _ranking(d: pd.DataFrame, key: str, m: str) -> list:
    return d.sort_values(f"{m}.mean", ascending=False, kind="stable")[key].tolist()


def _chain(items: list[tuple[float, str]], digits: int = 3) -> str:
    """'a 0.91 > b 0.86 ≈ c 0.86': items in decreasing order, '≈' where the rounded values tie."""
    out = items[0][1] if items else ""
    for (prev, _), (v, text) in zip(items, items[1:]):
        out += (" ≈ " if round(prev, digits) == round(v, digits) else " > ") + text
    return out


def _range_phrase(values: list, all_values: list, name: str) -> str:
    """'lr >= 0.003' when `values` are the top of `all_values`, 'lr <= ...' when the bottom, else a list."""
    vs, alls = sorted(values), sorted(all_values)
    if vs and vs == alls[-len(vs):] and len(vs) < len(alls):
        return f"{name} >= {fmt_sci(vs[0])}"
    if vs and vs == alls[:len(vs)] and len(vs) < len(alls):
        return f"{name} <= {fmt_sci(vs[-1])}"
    return f"{name} in {{{', '.join(fmt_sci(v) for v in vs)}}}"


# ---- every run ---------------------------------------------------------------------------------

def general(trials: pd.DataFrame, manifest: dict) -> list[str]:
    out = []
    n = len(trials)
    stopped = trials[trials["stopped_early"].astype(bool)] if "stopped_early" in trials else trials.iloc[:0]
    if len(stopped):
        rungs = asha_rungs(manifest)
        at = sorted(stopped["iterations"].unique().tolist()) if "iterations" in stopped else []
        out.append(f"ASHA stopped {len(stopped)} of {n} trials (at iteration {', '.join(map(str, at))} of "
                   f"{manifest.get('iterations')}; rungs {', '.join(fmt(r) for r in rungs)}): their final values are "
                   "from the iteration at which they were stopped, not from the end of the budget.")
    bad = trials[trials["diverged"].astype(bool)] if "diverged" in trials else trials.iloc[:0]
    if len(bad):
        keys = [k for k in manifest.get("scientific", []) if f"config.{k}" in bad]
        cfgs = sorted({", ".join(f"{k}={fmt(r[f'config.{k}'])}" for k in keys) for _, r in bad.iterrows()})
        out.append(f"{len(bad)} of {n} trials diverged (NaN or inf loss; red crosses in the figures, left out of "
                   f"the means): {'; '.join(cfgs)}.")
    err = int((trials["status"] == "error").sum()) if "status" in trials else 0
    if err:
        out.append(f"{err} trials failed with an error and are left out.")
    return out


def seed_disagreement(trials: pd.DataFrame, manifest: dict, threshold: float = DISAGREE) -> list[str]:
    """Configurations whose seeds end far apart: with few seeds, their mean says little."""
    keys = [f"config.{k}" for k in [*manifest.get("scientific", []), *manifest.get("nuisance", [])]
            if f"config.{k}" in trials]
    obj = f"best.{manifest.get('metric', 'val_acc')}"
    if not keys or obj not in trials:
        return []
    s = summarize(_ok(trials), keys, [obj])
    s = s[(s[f"{obj}.max"] - s[f"{obj}.min"]) > threshold]
    if not len(s):
        return []
    cfgs = [", ".join(f"{k.removeprefix('config.')}={fmt_sci(r[k]) if 'lr' in k else fmt(r[k])}" for k in keys)
            + f" ({r[f'{obj}.min']:.2f}–{r[f'{obj}.max']:.2f})" for _, r in s.iterrows()]
    return [f"Seeds disagree (their {obj.removeprefix('best.')} differs by more than {threshold:g}) for "
            f"{len(s)} configuration{'s' if len(s) > 1 else ''}: {'; '.join(cfgs)}. More seeds (--seeds) would "
            "settle these."]


# ---- per study ---------------------------------------------------------------------------------

def lr_scan(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> list[str]:
    obj = f"best.{manifest.get('metric', 'val_acc')}"
    s = summarize(_ok(with_gap(trials)), ["config.lr"], [obj, "metric.test_acc", "metric.gap"])
    if not len(s):
        return []
    b = s.loc[s[f"{obj}.mean"].idxmax()]
    out = [f"Best lr {fmt_sci(b['config.lr'])}: best validation accuracy {stat(b, obj)}, final test accuracy "
           f"{stat(b, 'metric.test_acc')}."]
    near = s[(s[f"{obj}.mean"] >= b[f"{obj}.mean"] - 0.01) & (s["config.lr"] != b["config.lr"])]
    if len(near):
        out.append(f"Within 0.01 of it: lr {', '.join(fmt_sci(v) for v in near['config.lr'])}.")
    poor = s[s[f"{obj}.mean"] < b[f"{obj}.mean"] - POOR]
    if len(poor):
        vals = ", ".join(f"{r[f'{obj}.mean']:.2f} at {fmt_sci(r['config.lr'])}" for _, r in poor.iterrows())
        out.append(f"{_range_phrase(poor['config.lr'].tolist(), s['config.lr'].tolist(), 'lr')} falls short "
                   f"(mean best validation accuracy {vals}).")
    bad = trials[trials["diverged"].astype(bool)] if "diverged" in trials else trials.iloc[:0]
    if len(bad):
        out.append(f"Diverged: lr {', '.join(fmt_sci(v) for v in sorted(bad['config.lr'].unique()))}.")
    g = s.dropna(subset=["metric.gap.mean"])
    if len(g):
        w = g.loc[g["metric.gap.mean"].idxmax()]
        out.append(f"Train − test gap {b['metric.gap.mean']:.3f} at the best lr; largest {w['metric.gap.mean']:.3f} "
                   f"at lr {fmt_sci(w['config.lr'])}.")
    if len(curves) and "metric.val_acc" in curves:
        target = np.floor(0.9 * b[f"{obj}.mean"] * 100) / 100
        speed = []
        for lr, g in curves[curves["trial_id"].isin(_ok(trials)["trial_id"])].groupby("config.lr"):
            first = [t["iteration"][t["metric.val_acc"] >= target].min() for _, t in g.groupby("trial_id")]
            hit = [f for f in first if np.isfinite(f)]
            speed.append(f"{fmt_sci(lr)}: " + (f"{np.mean(hit):.1f}" + (f" ({len(hit)} of {len(first)} seeds)"
                                                                        if len(hit) < len(first) else "")
                                               if hit else "not reached"))
        out.append(f"Epochs to reach validation accuracy {target:.2f} (90% of the best lr's), mean over the seeds "
                   f"that reach it: {'; '.join(speed)}.")
    return out


def optimizer_comparison(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> list[str]:
    obj = f"best.{manifest.get('metric', 'val_acc')}"
    out = []
    best = best_per_group(_ok(trials), ["config.optimizer"], ["config.lr"], obj)
    if not len(best):
        return out
    tried = trials.groupby("config.optimizer")["config.lr"].nunique()
    rank = _ranking(best, "config.optimizer", obj)
    b = best.set_index("config.optimizer")
    out.append("Isolation view (lr tuned per optimizer, the best of "
               f"{int(tried.min())}{'' if tried.min() == tried.max() else f'–{int(tried.max())}'} lrs each, by "
               "mean best validation accuracy): " + _chain(
                   [(b.loc[o, f"{obj}.mean"], f"{o} {stat(b.loc[o], obj)} at lr {fmt_sci(b.loc[o, 'config.lr'])}")
                    for o in rank]) + ".")
    v = optimizer_views(trials, FIXED_LR, obj)
    fixed, tuned = v[v["view"] == "fixed lr"], v[v["view"] == "tuned lr"]
    if len(fixed):
        rf, rt = _ranking(fixed, "config.optimizer", "metric.test_acc"), _ranking(tuned, "config.optimizer",
                                                                                  "metric.test_acc")
        f = fixed.set_index("config.optimizer")
        out.append(f"Fixed-lr view (lr = {fmt_sci(FIXED_LR)} for all, as the hand-run reports; final test accuracy): "
                   + _chain([(f.loc[o, "metric.test_acc.mean"], f"{o} {stat(f.loc[o], 'metric.test_acc')}")
                             for o in rf]) + ".")
        same = (np.isclose(tuned["config.lr"].astype(float), FIXED_LR, rtol=1e-6).all()
                and sorted(tuned["config.optimizer"]) == sorted(fixed["config.optimizer"]))
        if same:
            out.append(f"Every optimizer's best lr among those tried is {fmt_sci(FIXED_LR)} itself, so both views "
                       "coincide: the ranking does not change.")
        elif rf == rt:
            out.append("Ranking by final test accuracy is the same in both views: " + " > ".join(rt) + ".")
        else:
            out.append(f"The ranking changes when lr is tuned: fixed lr {' > '.join(rf)}; tuned lr {' > '.join(rt)}.")
        t = tuned.sort_values("metric.test_acc.mean", ascending=False)
        if len(t) >= 2 and interval(t.iloc[0], "metric.test_acc")[0] <= interval(t.iloc[1], "metric.test_acc")[1]:
            out.append(f"With lr tuned, {t.iloc[0]['config.optimizer']} and {t.iloc[1]['config.optimizer']} are "
                       "not separated by the seeds (their spreads overlap).")
    pc = per_class(trials, "optimizer", ["lr"], obj)
    if len(pc):
        top = rank[0]
        c = pc[pc["config.optimizer"] == top].sort_values("acc.mean")
        word = "class " if c["class_name"].str.isdigit().all() else ""
        out.append(f"Per-class test accuracy of the best ({top}, lr {fmt_sci(b.loc[top, 'config.lr'])}): weakest "
                   + ", ".join(f"{word}{r['class_name']} ({r['acc.mean']:.2f})" for _, r in c.head(2).iterrows())
                   + "; strongest " + ", ".join(f"{word}{r['class_name']} ({r['acc.mean']:.2f})"
                                                for _, r in c.tail(2).iloc[::-1].iterrows()) + ".")
        if set(c["class_name"]) >= {"airplane", "automobile", "ship", "truck", "cat", "dog"}:
            veh = c[c["class_name"].isin(["airplane", "automobile", "ship", "truck"])]["acc.mean"].mean()
            ani = c[~c["class_name"].isin(["airplane", "automobile", "ship", "truck"])]["acc.mean"].mean()
            out.append(f"Vehicles {veh:.2f} vs animals {ani:.2f} mean per-class test accuracy.")
    return out


def regularization(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> list[str]:
    keys = [k for k in ("dropout", "l2", "weight_decay") if f"config.{k}" in trials]
    t = _ok(with_gap(trials))
    out = []
    names = {"dropout": "dropout p", "l2": "L2 λ", "weight_decay": "weight decay"}
    for k in keys:
        others = [o for o in keys if o != k]
        sub = t[(t[[f"config.{o}" for o in others]] == 0).all(axis=1)] if others else t
        s = summarize(sub, [f"config.{k}"], ["metric.gap", "metric.test_acc", "metric.train_acc"])
        if len(s) < 2:
            continue
        lo, hi = s.iloc[0], s.iloc[-1]
        out.append(f"{names[k]}: gap at {fmt(lo[f'config.{k}'])} {stat(lo, 'metric.gap')} vs at "
                   f"{fmt(hi[f'config.{k}'])} {stat(hi, 'metric.gap')}; test accuracy {lo['metric.test_acc.mean']:.3f} "
                   f"-> {hi['metric.test_acc.mean']:.3f}, train {lo['metric.train_acc.mean']:.3f} -> "
                   f"{hi['metric.train_acc.mean']:.3f}.")
    if keys:
        s = summarize(t.assign(setting=regularizer_setting(t)), ["setting"], ["metric.test_acc", "metric.gap"])
        if len(s):
            b = s.loc[s["metric.test_acc.mean"].idxmax()]
            g = s.loc[s["metric.gap.mean"].idxmin()]
            out.append(f"Highest final test accuracy: {b['setting']} {stat(b, 'metric.test_acc')}; smallest gap: "
                       f"{g['setting']} {stat(g, 'metric.gap')}.")
    return out


def palindrome(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> list[str]:
    s = summarize(_ok(trials), ["config.cell", "config.seq_len"], ["metric.test_acc"])
    out = []
    for cell, g in s.groupby("config.cell", sort=True):
        g = g.sort_values("config.seq_len")
        acc, T = g["metric.test_acc.mean"].to_numpy(), g["config.seq_len"].to_numpy()
        solved = np.cumprod(acc >= SOLVED).astype(bool)
        chance = np.cumprod((acc <= NEAR_CHANCE)[::-1]).astype(bool)[::-1]
        parts = []
        if solved.any():
            parts.append(f">= {SOLVED:.0%} test accuracy up to T={T[solved][-1]}")
        else:
            parts.append(f"below {SOLVED:.0%} test accuracy already at T={T[0]} ({acc[0]:.2f})")
        if chance.any():
            parts.append(f"near chance (<= {NEAR_CHANCE:.1f}) from T={T[chance][0]}")
        else:
            i = int(np.argmin(acc))
            parts.append(f"above chance at every T tried (lowest {acc[i]:.2f} at T={T[i]})")
        line = f"{cell.upper()}: {'; '.join(parts)}. Mean test accuracy by T: " + ", ".join(
            f"{t}: {a:.2f}" for t, a in zip(T, acc)) + "."
        cut = trials[(trials["config.cell"] == cell)].groupby("config.seq_len").filter(
            lambda g: g["stopped_early"].astype(bool).all()) if "stopped_early" in trials else trials.iloc[:0]
        if len(cut):
            where = ", ".join(f"T={t} (step {'/'.join(str(int(v)) for v in sorted(g['step'].unique()))})"
                              for t, g in cut.groupby("config.seq_len"))
            line += f" Every seed stopped early by ASHA at {where}."
        out.append(line)
    return out


# What the hand-run reports measured (STUDIES.md; single runs on the full setup): the trend to compare with.
REFERENCE = {
    "lr_scan": "1e-3 converges faster than 1e-4; the train/test gap shrinks as lr grows within a range; 4e-2 and "
               "5e-2 plateau lower, oscillate or get stuck at a constant loss (VGG CNN, Adam, CIFAR-10).",
    "optimizer_comparison": "at lr 1e-4 for every optimizer, test accuracy Adam 0.825, NAdam 0.824, RMSprop 0.827, "
                            "SGD 0.78-0.80; per class, vehicles (car, ship, truck) above animals (cat, dog, bird) "
                            "(VGG CNN, CIFAR-10).",
    "regularization": "deep MLP train 0.99 / test 0.55 without regularisation; dropout p=0.5: 0.547 / 0.492; "
                      "L2 λ=0.01: 0.770 / 0.520 (CIFAR-10).",
    "palindrome": "test accuracy at T = 5, 10, 15, 20: RNN 100, 37.9, 17.9, 22.5 %; LSTM 100, 100, 60.0, 70.8 %; "
                  "GRU similar to LSTM (10,000 steps).",
}

STUDIES = {"lr_scan": lr_scan, "optimizer_comparison": optimizer_comparison, "regularization": regularization,
           "palindrome": palindrome}


def findings(trials: pd.DataFrame, curves: pd.DataFrame, manifest: dict) -> list[str]:
    """The run's findings, most important first."""
    own = STUDIES.get(manifest.get("study"))
    out = own(trials, curves, manifest) if own and len(trials) else []
    return out + seed_disagreement(trials, manifest) + general(trials, manifest)
