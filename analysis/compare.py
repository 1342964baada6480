"""Architecture comparisons and the NC-vs-fairness correlation.

- per architecture: mean ± 95% t-interval over trials (seeds) of each metric;
- paired: for every pair of architectures, the difference on matching configs (same lr, wd,
  bias, penalty, method, seed) with its mean and 95% t-interval;
- Spearman ρ of NC1 (overall / per group) with a fairness gap across trials, bootstrap 95% CI.
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats

MATCH = ("method", "lr", "weight_decay", "bias_level", "penalty", "seed", "batch_size", "width")


def mean_ci(x) -> tuple[float, float, float, int]:
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


def arch_summary(trials: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    rows = []
    for arch, sub in trials.groupby("arch"):
        for m in metrics:
            if m in sub:
                mean, lo, hi, n = mean_ci(sub[m])
                rows.append({"arch": arch, "metric": m, "mean": mean, "ci_low": lo, "ci_high": hi, "n": n})
    return pd.DataFrame(rows)


def paired_differences(trials: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    keys = [k for k in MATCH if k in trials]
    rows = []
    for a, b in itertools.combinations(sorted(trials["arch"].unique()), 2):
        left = trials[trials.arch == a].set_index(keys)
        right = trials[trials.arch == b].set_index(keys)
        common = left.index.intersection(right.index)
        for m in metrics:
            if m not in trials or len(common) == 0:
                continue
            d = left.loc[common, m].to_numpy(float) - right.loc[common, m].to_numpy(float)
            mean, lo, hi, n = mean_ci(d)
            rows.append({"arch_a": a, "arch_b": b, "metric": m, "diff": mean, "ci_low": lo, "ci_high": hi, "pairs": n})
    return pd.DataFrame(rows, columns=["arch_a", "arch_b", "metric", "diff", "ci_low", "ci_high", "pairs"])


def spearman_ci(x, y, n_boot: int = 2000, seed: int = 0) -> dict:
    """Spearman ρ of x and y with a percentile bootstrap 95% CI over trials."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    if n < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan, "n": n}
    rho, p = stats.spearmanr(x, y)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
            boots.append(stats.spearmanr(x[i], y[i])[0])
    lo, hi = np.nanpercentile(boots, [2.5, 97.5]) if boots else (np.nan, np.nan)
    return {"rho": float(rho), "ci_low": float(lo), "ci_high": float(hi), "p": float(p), "n": n}


def nc_vs_fairness(trials: pd.DataFrame, gap: str = "test_gap") -> pd.DataFrame:
    rows = []
    for nc in [c for c in trials.columns if c.split("_g")[0].endswith("nc1") and c.startswith(("train_", "test_"))]:
        if gap in trials:
            rows.append({"nc": nc, "fairness": gap, **spearman_ci(trials[nc], trials[gap])})
    return pd.DataFrame(rows, columns=["nc", "fairness", "rho", "ci_low", "ci_high", "p", "n"])
