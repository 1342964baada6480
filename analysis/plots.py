"""Figures for the report (matplotlib, Agg backend): per-epoch curves with bands over seeds,
the sensitivity heatmap, and the architecture comparison bars. Each returns PNG bytes."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def curves(df: pd.DataFrame, column: str, split: str = "test", by_group: bool = True) -> bytes | None:
    """Mean over seeds (line) and min–max band of `column` against epoch, one line per arch
    (× subgroup when by_group)."""
    sub = df[(df.split == split) & (df.group != "all" if by_group else df.group == "all")]
    if column not in sub or sub[column].notna().sum() == 0:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    keys = ["arch", "group"] if by_group else ["arch"]
    for key, g in sub.groupby(keys):
        stats = g.groupby("epoch")[column].agg(["mean", "min", "max"])
        label = " / ".join(f"{k}={v}" for k, v in zip(keys, key if isinstance(key, tuple) else (key,)))
        ax.plot(stats.index, stats["mean"], marker="o", ms=3, label=label)
        ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.15)
    vals = sub[column].dropna()
    if (vals > 0).all() and vals.max() / vals.min() > 50:
        ax.set_yscale("log")   # NC metrics span orders of magnitude over training
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{split} {column} (mean over seeds, band min–max)")
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def heatmap(effects: pd.DataFrame) -> bytes | None:
    """Standardized effects: metrics (rows) × terms (columns)."""
    if effects.empty:
        return None
    piv = effects.pivot_table(index="metric", columns="term", values="effect")
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * piv.shape[1], 1 + 0.45 * piv.shape[0]))
    lim = np.nanmax(np.abs(piv.values)) or 1.0
    im = ax.imshow(piv.values, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(piv.shape[1]), piv.columns, rotation=40, ha="right", fontsize=7)
    ax.set_yticks(range(piv.shape[0]), piv.index, fontsize=7)
    for (i, j), v in np.ndenumerate(piv.values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:+.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, label="SD of metric per SD of axis")
    return _png(fig)


def bars(summary: pd.DataFrame, metric: str) -> bytes | None:
    s = summary[summary.metric == metric]
    if s.empty:
        return None
    fig, ax = plt.subplots(figsize=(4.5, 3))
    err = np.vstack([s["mean"] - s["ci_low"], s["ci_high"] - s["mean"]])
    ax.bar(s["arch"], s["mean"], yerr=np.nan_to_num(err), capsize=4, color="#4a7ab5")
    ax.set_ylabel(metric)
    ax.set_title("mean ± 95% CI over seeds", fontsize=8)
    return _png(fig)
