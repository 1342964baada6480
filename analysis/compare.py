"""Architecture comparisons, the leaderboard of configurations, and the NC-vs-fairness correlation.

A configuration is one setting of every swept axis; its seeds are replicates. Seeds of one
configuration are not independent evidence about the axes, so every bootstrap here resamples
configurations (clusters of seeds), never single trials:
- per architecture: mean over configurations of the per-configuration mean, with a 95% bootstrap
  CI over configurations (`scipy.stats.bootstrap`, BCa);
- paired: for every pair of architectures, the difference on matching configurations (same value
  of every other axis and same seed), averaged per configuration, with the same CI;
- leaderboard: configurations ranked on a validation metric within each data condition, each
  with its test metric's mean ± 95% t-interval over its seeds;
- Spearman ρ of NC1 (overall / per group) with a fairness gap across trials, with a cluster
  bootstrap 95% CI over configurations.
"""
from __future__ import annotations

import functools
import itertools
import warnings

import numpy as np
import pandas as pd

from . import vocab
from .filters import config_ids

N_BOOT = 2000
BCA_UP_TO = 200      # clusters; beyond, BCa's jackknife (O(k²)) costs more than it corrects: percentile
BOOT_CI = f"95% bootstrap over configurations (BCa up to {BCA_UP_TO} configurations, percentile beyond)"


def _boot_method(k: int) -> tuple[str, int]:
    return ("BCa", N_BOOT) if k <= BCA_UP_TO else ("percentile", 1000)


def mean_ci(x) -> tuple[float, float, float, int]:
    """Mean and 95% t-interval of the finite values of x."""
    from scipy import stats   # on first use: importing scipy.stats takes ~0.8 s

    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return np.nan, np.nan, np.nan, 0
    m = float(x.mean())
    if n < 2:
        return m, np.nan, np.nan, n
    h = float(stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / np.sqrt(n))
    return m, m - h, m + h, n


def t_interval(mean: pd.Series, sd: pd.Series, n: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """95% t-interval of means of n values with sample SD sd, elementwise; NaN where n < 2."""
    from scipy import stats

    n_ = n.to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = np.where(n_ > 1, stats.t.ppf(0.975, np.maximum(n_ - 1, 1)) * sd.to_numpy(float) / np.sqrt(n_), np.nan)
    return mean.to_numpy(float) - half, mean.to_numpy(float) + half


def boot_mean_ci(values, seed: int = 0) -> tuple[float, float, float, int]:
    """Mean of per-configuration values with a BCa bootstrap 95% CI over configurations."""
    from scipy import stats   # on first use: importing scipy.stats takes ~0.8 s

    x = np.asarray(values, float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return np.nan, np.nan, np.nan, 0
    if n < 3:                     # too few clusters to resample: a t-interval over them
        return mean_ci(x)
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0]), float(x[0]), n
    if n > BCA_UP_TO:           # percentile: the resampled means directly (scipy's machinery costs more)
        means = x[_resamples(n, seed)].mean(axis=1)
        return float(x.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)), n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        method, n_boot = _boot_method(n)
        r = stats.bootstrap((x,), np.mean, n_resamples=n_boot, method=method, random_state=seed, vectorized=True)
    return float(x.mean()), float(r.confidence_interval.low), float(r.confidence_interval.high), n


@functools.lru_cache(maxsize=4)
def _resamples(n: int, seed: int) -> np.ndarray:
    """(1000, n) indices of a percentile bootstrap: the same for every metric with n configurations
    (drawing them is most of the cost; kept for the next call)."""
    idx = np.random.default_rng(seed).integers(0, n, (1000, n))
    idx.flags.writeable = False
    return idx


def _config_means(trials: pd.DataFrame, metric: str, ids: np.ndarray) -> pd.Series:
    """Mean of `metric` per configuration (`ids`: `config_ids` of `trials`), finite values only."""
    ok = np.isfinite(trials[metric].to_numpy(float))
    return trials[metric][ok].groupby(ids[ok]).mean()


def arch_summary(trials: pd.DataFrame, metrics: list[str], axes: list[str] | None = None) -> pd.DataFrame:
    axes = _axes(trials, axes)
    rows = []
    for arch, sub in trials.groupby("arch"):
        ids = config_ids(sub, axes)
        for m in metrics:
            if m in sub:
                cm = _config_means(sub, m, ids)
                mean, lo, hi, k = boot_mean_ci(cm.values)
                rows.append({"arch": arch, "metric": m, "mean": mean, "ci_low": lo, "ci_high": hi, "configs": k,
                             "n": int(np.isfinite(sub[m].astype(float)).sum())})
    return pd.DataFrame(rows, columns=["arch", "metric", "mean", "ci_low", "ci_high", "configs", "n"])


def paired_differences(trials: pd.DataFrame, metrics: list[str], axes: list[str] | None = None) -> pd.DataFrame:
    """arch_a − arch_b on trials that match on every other axis and the seed; CI over configurations."""
    axes = _axes(trials, axes)
    keys = [a for a in axes if a != "arch" and a in trials] + ([vocab.REPLICATE] if vocab.REPLICATE in trials else [])
    cols = ["arch_a", "arch_b", "metric", "diff", "ci_low", "ci_high", "pairs", "configs"]
    rows = []
    archs = sorted(trials["arch"].dropna().unique())
    ms = [m for m in metrics if m in trials]
    if not keys or not ms:
        return pd.DataFrame(rows, columns=cols)
    cfg = [k for k in keys if k != vocab.REPLICATE]
    means = {a: trials[trials.arch == a].groupby(keys, dropna=False)[ms].mean() for a in archs}  # every metric at once
    for a, b in itertools.combinations(archs, 2):
        diff = means[a] - means[b]
        for m in ms:
            d = diff[m].dropna()
            if d.empty:
                continue
            per_cfg = d.groupby(level=cfg, dropna=False).mean() if cfg else d
            mean, lo, hi, k = boot_mean_ci(per_cfg.values)
            rows.append({"arch_a": a, "arch_b": b, "metric": m, "diff": mean, "ci_low": lo, "ci_high": hi,
                         "pairs": len(d), "configs": k})
    return pd.DataFrame(rows, columns=cols)


LEADERBOARD_ADDED = ["metric", "rank_by", "rank_mean", "condition", "rank", "trial_ids"]   # since the first version
LEADERBOARD_COLUMNS = ["mean", "ci_low", "ci_high", "seeds", *LEADERBOARD_ADDED]


def leaderboard(trials: pd.DataFrame, metric: str, axes: list[str] | None = None, rank_by: str | None = None,
                top: int | None = None) -> pd.DataFrame:
    """Model selection as DomainBed does it: within each data condition (one value of every
    condition axis, `vocab.is_condition`), configurations (one value of every other axis) are
    ranked on the mean over seeds of `rank_by` (a validation metric; default `metric`), and
    `metric` (a test metric) is reported: mean ± 95% t-interval over seeds (no interval from one
    seed). One row per (condition, configuration), ordered by condition then rank (1 = best,
    direction of `rank_by` from the catalogue); `trial_ids` names the seeds' trials. top: keep
    the best `top` of each condition (None: every row)."""
    axes = [a for a in _axes(trials, axes) if a in trials]
    rank_by = rank_by or metric
    cols = axes + LEADERBOARD_COLUMNS
    t = trials[np.isfinite(trials[metric].astype(float))] if metric in trials else trials.iloc[:0]
    if t.empty or not axes:
        return pd.DataFrame(columns=cols)
    conditions = [a for a in axes if vocab.is_condition(a)]
    d = pd.DataFrame({"_y": t[metric].astype(float),
                      "_r": t[rank_by].astype(float) if rank_by in t else np.nan,
                      "_id": t["trial_id"].astype(str) if "trial_id" in t else ""}, index=t.index)
    d = pd.concat([t[axes], d], axis=1).sort_values("_id", kind="stable")
    g = d.groupby(axes, dropna=False, sort=True)       # one group per configuration, vectorised
    out = g.agg(mean=("_y", "mean"), sd=("_y", "std"), seeds=("_y", "size"), rank_mean=("_r", "mean"),
                trial_ids=("_id", " ".join)).reset_index()
    out["ci_low"], out["ci_high"] = t_interval(out["mean"], out["sd"], out["seeds"])
    out["metric"], out["rank_by"] = metric, rank_by
    out["condition"] = (out[conditions].astype(str).radd([f"{c}=" for c in conditions]).agg(", ".join, axis=1)
                        if conditions else "all")
    out = out[[c for c in cols if c != "rank"]]
    asc = not vocab.metric_meta(rank_by)["higher_is_better"]
    out = out.sort_values(["condition", "rank_mean"], ascending=[True, asc], kind="stable", na_position="last")
    out["rank"] = out.groupby("condition", sort=False).cumcount() + 1
    if top is not None:
        out = out[out["rank"] <= top]
    return out.reset_index(drop=True)


def _weighted_ranks(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mid-ranks of v in the sample where row i appears w[b, i] times, for each resample b.
    v: (n,), w: (B, n) → (B, n). Equal to scipy's average ranks of the expanded sample."""
    order = np.argsort(v, kind="stable")
    _, start, inv = np.unique(v[order], return_index=True, return_inverse=True)
    ws = w[:, order]
    tie_sum = ws if len(start) == len(v) else np.add.reduceat(ws, start, axis=1)   # (B, groups); no ties: ws
    below = np.cumsum(tie_sum, axis=1) - tie_sum
    group = np.empty(len(v), dtype=np.intp)
    group[order] = inv.ravel()                                   # each row's group of equal values
    return (below + (tie_sum + 1) / 2)[:, group]


def weighted_spearman(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Spearman ρ of the samples where row i appears w[b, i] times (vectorised over b)."""
    w = np.atleast_2d(w).astype(float)
    rx, ry = _weighted_ranks(x, w), _weighted_ranks(y, w)
    tot = w.sum(axis=1, keepdims=True)
    mx, my = (w * rx).sum(1, keepdims=True) / tot, (w * ry).sum(1, keepdims=True) / tot
    cov = (w * (rx - mx) * (ry - my)).sum(1)
    var = np.sqrt((w * (rx - mx) ** 2).sum(1) * (w * (ry - my) ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, cov / var, np.nan)


def spearman_ci(x, y, clusters=None, n_boot: int | None = None, seed: int = 0) -> dict:
    """Spearman ρ of x and y with a 95% bootstrap CI (`scipy.stats.bootstrap`, `_boot_method`) that resamples
    clusters — configurations, each with all its seeds — never single trials of a configuration.
    With `clusters` None each trial is its own cluster."""
    from scipy import stats   # on first use: importing scipy.stats takes ~0.8 s

    x, y = np.asarray(x, float), np.asarray(y, float)
    c = np.arange(len(x)) if clusters is None else np.asarray(clusters)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, c = x[ok], y[ok], c[ok]
    n = len(x)
    labels, inv = np.unique(c, return_inverse=True)
    k = len(labels)
    out = {"rho": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan, "n": n, "clusters": k}
    if n < 4 or k < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    rho, p = stats.spearmanr(x, y)

    def stat(idx, axis=-1):          # idx: (..., m) resampled cluster indices
        idx = np.asarray(idx)
        flat = idx.reshape(-1, idx.shape[-1]).astype(np.intp)
        b = flat.shape[0]              # times each cluster is drawn, per resample: one bincount over (b, k)
        counts = np.bincount((flat + k * np.arange(b)[:, None]).ravel(), minlength=b * k).reshape(b, k)
        return weighted_spearman(x, y, counts[:, inv]).reshape(idx.shape[:-1])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        method, default_n = _boot_method(k)
        r = stats.bootstrap((np.arange(k),), stat, n_resamples=n_boot or default_n, method=method, vectorized=True,
                            random_state=seed, batch=250)
    return {**out, "rho": float(rho), "p": float(p), "ci_low": float(r.confidence_interval.low),
            "ci_high": float(r.confidence_interval.high)}


def nc_vs_fairness(trials: pd.DataFrame, gap: str = "test_gap", axes: list[str] | None = None) -> pd.DataFrame:
    cols = ["nc", "fairness", "rho", "ci_low", "ci_high", "p", "n", "clusters"]
    if gap not in trials:
        return pd.DataFrame(columns=cols)
    clusters = config_ids(trials, _axes(trials, axes))
    rows = [{"nc": nc, "fairness": gap, **spearman_ci(trials[nc], trials[gap], clusters)}
            for nc in trials.columns if nc.split("_g")[0].endswith("_nc1") and nc.startswith(("train_", "test_"))]
    return pd.DataFrame(rows, columns=cols)


def _axes(trials: pd.DataFrame, axes) -> list[str]:
    if axes is not None:
        return [a for a in axes if a != vocab.REPLICATE]
    return [c for c in trials.columns if vocab.is_axis(c) and c != vocab.REPLICATE]
