"""Figures for the report (matplotlib, Agg backend): per-epoch curves with CI bands over seeds,
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


def curves(agg: pd.DataFrame, column: str, split: str = "test", by_group: bool = True) -> bytes | None:
    """Mean over seeds (line) and its 95% t-interval (band) of `column` against epoch, one line per
    level of the curve's split axis (× subgroup when by_group); integer epoch ticks. `agg`: the
    pipeline's `res["curves"]` (analysis/curves.py)."""
    from matplotlib.ticker import MaxNLocator

    if agg is None or agg.empty:
        return None
    sub = agg[(agg["column"] == column) & (agg["split"] == split) & (agg["by_group"] == by_group)]
    if sub.empty:
        return None
    axis = str(sub["axis"].iloc[0]) or "all trials"
    fig, ax = plt.subplots(figsize=(6, 3.6))
    keys = ["level", "group"] if by_group else ["level"]
    for key, g in sub.groupby(keys):
        g = g.sort_values("epoch")
        key = key if isinstance(key, tuple) else (key,)
        label = f"{axis}={key[0]}" + (f" / group {key[1]}" if by_group else "")
        line, = ax.plot(g["epoch"], g["mean"], marker="o", ms=3, label=label)
        ok = np.isfinite(g["ci_low"].to_numpy(float))
        if ok.any():
            ax.fill_between(g["epoch"][ok], g["ci_low"][ok], g["ci_high"][ok], alpha=0.15, color=line.get_color())
    lo, hi = np.nanmin(sub[["mean", "ci_low"]].to_numpy(float)), np.nanmax(sub[["mean", "ci_high"]].to_numpy(float))
    if lo > 0 and hi / lo > 50:
        ax.set_yscale("log")   # NC metrics span orders of magnitude over training
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    seeds = int(sub["seeds"].max())
    ax.set_ylabel(f"{split} {column}\n(mean over {seeds} seed{'s' if seeds != 1 else ''}, band 95% t-CI)")
    ax.set_title(f"split by {axis} (largest effect on {split} {column})", fontsize=8)
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
    fig.colorbar(im, ax=ax, label="effect (SD of metric per SD of axis, or vs reference level)")
    return _png(fig)


def bars(summary: pd.DataFrame, metric: str, ylabel: str | None = None) -> bytes | None:
    s = summary[summary.metric == metric]
    if s.empty:
        return None
    fig, ax = plt.subplots(figsize=(4.5, 3))
    err = np.vstack([s["mean"] - s["ci_low"], s["ci_high"] - s["mean"]])
    ax.bar(s["arch"], s["mean"], yerr=np.nan_to_num(err), capsize=4, color="#4a7ab5")
    ax.set_ylabel(ylabel or metric)
    ax.set_title("mean of configuration means ± 95% bootstrap CI", fontsize=8)
    return _png(fig)


def parallel_coordinates(configs: pd.DataFrame, axes: list[str], metric: str, label: str,
                         log_axes: tuple = ()) -> bytes | None:
    """One line per configuration through one vertical axis per swept axis and a last one for the
    metric, coloured by the metric (as W&B's and Optuna's dashboards draw a sweep). `configs`: a
    row per configuration with the axes and `metric` (mean over seeds). Numeric axes are scaled
    to their range (log10 for `log_axes`), categorical ones spread their sorted levels evenly."""
    axes = [a for a in axes if a in configs and configs[a].nunique() > 1]
    d = configs[np.isfinite(configs[metric].astype(float))]
    if d.empty or not axes:
        return None
    cols, ticks = [], []
    for a in axes + [metric]:
        v = d[a]
        if a != metric and not pd.api.types.is_numeric_dtype(v):
            levels = sorted(v.astype(str).unique())
            pos = np.linspace(0, 1, len(levels)) if len(levels) > 1 else np.array([0.5])
            cols.append(v.astype(str).map(dict(zip(levels, pos))).to_numpy(float))
            ticks.append(list(zip(pos, levels)))
            continue
        x = np.log10(v.astype(float)) if a in log_axes else v.astype(float)
        lo, hi = float(x.min()), float(x.max())
        cols.append(((x - lo) / (hi - lo) if hi > lo else x * 0 + 0.5).to_numpy(float))
        raw = v.astype(float)
        ticks.append([(0.0, f"{raw.min():.3g}"), (1.0, f"{raw.max():.3g}")] if hi > lo else [(0.5, f"{raw.min():.3g}")])
    y = np.column_stack(cols)
    val = d[metric].astype(float).to_numpy()
    norm = matplotlib.colors.Normalize(val.min(), val.max() if val.max() > val.min() else val.min() + 1e-9)
    cmap = plt.get_cmap("viridis")
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(cols), 3.8))
    for i in np.argsort(val):                     # best drawn last, on top
        ax.plot(range(len(cols)), y[i], color=cmap(norm(val[i])), alpha=0.8, lw=1.2)
    for j, tk in enumerate(ticks):
        ax.axvline(j, color="#888", lw=0.8)
        for pos, text in tk:
            ax.text(j + 0.03, pos, text, fontsize=7, va="center")
    ax.set_xticks(range(len(cols)), axes + [label], fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlim(-0.2, len(cols) - 0.6)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=label)
    ax.set_title(f"{len(d)} configurations (mean over seeds), coloured by {label}", fontsize=8)
    return _png(fig)


def importance(imp: pd.DataFrame, label: str) -> bytes | None:
    """Horizontal bars of each axis' importance for one metric: fANOVA where it was fitted, else
    partial η² (the column `measure` says which). `imp`: axis, value, measure."""
    if imp is None or imp.empty:
        return None
    imp = imp.sort_values("value")
    fig, ax = plt.subplots(figsize=(5, 0.8 + 0.35 * len(imp)))
    ax.barh(imp["axis"], imp["value"], color="#4a7ab5")
    for y, v in enumerate(imp["value"]):
        ax.text(v, y, f" {v:.2f}", va="center", fontsize=7)
    ax.set_xlabel(f"{imp['measure'].iloc[0]} for {label}")
    ax.set_xlim(0, max(1e-9, float(imp["value"].max())) * 1.2)
    ax.set_title("parameter importance", fontsize=8)
    return _png(fig)
