"""Figures of the collapse study sections (matplotlib through `analysis.plots`): per-epoch curves
per subgroup and level, memorisation curves, metric-vs-level bands, per-arm bars, scatters.
Each returns PNG bytes, or None when the rows lack the column."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..compare import mean_ci
from ..plots import _png, plt

STYLES = {"0": "-", "1": "--", "all": "-"}


def _colours(levels) -> dict:
    cmap = plt.get_cmap("viridis")
    levels = sorted(levels, key=str)
    return {v: cmap(i / max(len(levels) - 1, 1)) for i, v in enumerate(levels)}


def group_curves(rows: pd.DataFrame, column: str, split: str, level: str, by_group: bool = True) -> bytes | None:
    """Mean over seeds of `column` per epoch: one colour per value of `level`, one line style per
    subgroup (solid a=0, dashed a=1) or the "all" row when not by_group."""
    sub = rows[(rows.split == split) & ((rows.group != "all") if by_group else (rows.group == "all"))]
    if column not in sub or sub[column].notna().sum() == 0 or level not in sub:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    col = _colours(sub[level].dropna().unique())
    for (lv, g), d in sub.groupby([level, "group"]):
        m = d.groupby("epoch")[column].mean()
        ax.plot(m.index, m.values, STYLES.get(str(g), ":"), color=col[lv], label=f"{level}={lv}, group {g}")
    vals = sub[column].dropna()
    if (vals > 0).all() and vals.max() / vals.min() > 50:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{split} {column}")
    ax.legend(fontsize=6, ncol=2)
    return _png(fig)


def memorisation_curves(rows: pd.DataFrame) -> bytes | None:
    tr = rows[(rows.split == "train") & (rows.group == "all")]
    if "memorisation" not in tr or tr.memorisation.notna().sum() == 0:
        return None
    tr = tr.dropna(subset=["memorisation"])
    fig, ax = plt.subplots(figsize=(6, 3.4))
    col = _colours(tr.bias_level.unique())
    for lv, d in tr.groupby("bias_level"):
        for c, style in (("memorisation", "-"), ("flipped_acc_clean", "--")):
            if c in d:
                m = d.groupby("epoch")[c].mean()
                ax.plot(m.index, m.values, style, color=col[lv], label=f"bias {lv:g}: {c}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("share of flipped training samples")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=6)
    return _png(fig)


def by_level(t: pd.DataFrame, level: str, columns: list[str]) -> bytes | None:
    """Mean ± 95% CI over trials of each column at each value of `level`."""
    cols = [c for c in columns if c in t and t[c].notna().any()]
    if not cols or level not in t or t[level].nunique() < 2:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for c in cols:
        s = [(lv, *mean_ci(d[c])[:3]) for lv, d in t.groupby(level)]
        x, m, lo, hi = (np.array(v, float) for v in zip(*s))
        ax.errorbar(np.arange(len(x)), m, yerr=np.nan_to_num([m - lo, hi - m]), marker="o", capsize=3, label=c)
        ax.set_xticks(np.arange(len(x)), [f"{v:g}" for v in x])
    ax.set_xlabel(level)
    ax.legend(fontsize=7)
    ax.set_title("mean ± 95% CI over trials", fontsize=8)
    return _png(fig)


def arm_bars(t: pd.DataFrame, column: str) -> bytes | None:
    if column not in t or t[column].notna().sum() == 0:
        return None
    arms = [a for a in ("untrained", "coarse", "fine") if a in set(t.arm)]
    archs = sorted(t.arch.unique())
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    w = 0.8 / max(len(arms), 1)
    for i, arm in enumerate(arms):
        s = [mean_ci(t[(t.arch == a) & (t.arm == arm)][column])[:3] for a in archs]
        m, lo, hi = (np.array(v, float) for v in zip(*s))
        ax.bar(np.arange(len(archs)) + i * w, m, w, yerr=np.nan_to_num([m - lo, hi - m]), capsize=3, label=arm)
    ax.set_xticks(np.arange(len(archs)) + w * (len(arms) - 1) / 2, archs)
    ax.set_ylabel(column)
    ax.legend(fontsize=7)
    return _png(fig)


def scatter(t: pd.DataFrame, x: str, y: str, hue: str) -> bytes | None:
    if x not in t or y not in t or t[[x, y]].dropna().empty:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for h, d in t.groupby(hue):
        ax.scatter(d[x], d[y], s=18, label=f"{hue}={h}")
    if (t[x] > 0).all() and t[x].max() / t[x].min() > 50:
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.legend(fontsize=7)
    return _png(fig)
