"""Shared pieces of the study verdicts: a finding with a 95% CI and a verdict read from it.

A finding "matches" when its CI lies on the expected side of zero, "contradicts" when it lies on
the other side, and is "inconclusive at this scale" when the CI covers zero. The expected sign is
fixed by the caller from the paper, never from the data.
"""
from __future__ import annotations

import html

import numpy as np
import pandas as pd

from ..compare import mean_ci, spearman_ci
from ..select import select_epochs, trial_table


def verdict(lo: float, hi: float, expected_sign: int) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive (too few trials for a CI)"
    if expected_sign * lo > 0 and expected_sign * hi > 0:
        return "matches"
    if expected_sign * lo < 0 and expected_sign * hi < 0:
        return "contradicts the expectation"
    return "inconclusive at this scale (CI covers 0)"


def finding(claim: str, measure: str, est: float, lo: float, hi: float, sign: int, n: int) -> dict:
    return {"expected": claim, "measured": measure, "estimate": est, "ci_low": lo, "ci_high": hi, "n": n,
            "verdict": verdict(lo, hi, sign)}


def _html(fs: list[dict]) -> str:
    df = pd.DataFrame(fs)
    return df.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0) + "".join(
        f"<p>{html.escape(_sentence(f))}</p>" for f in fs)


def _md(fs: list[dict]) -> str:
    return "\n".join(f"- {_sentence(f)}" for f in fs)


def _sentence(f: dict) -> str:
    return (f"Expected: {f['expected']}. Measured {f['measured']} = {f['estimate']:+.3f} "
            f"(95% CI {f['ci_low']:+.3f} to {f['ci_high']:+.3f}, n={f['n']}): {f['verdict']}.")


def _trials(result: dict, metrics: list[str], rule: str | None = None) -> pd.DataFrame:
    return trial_table(select_epochs(result["rows"], rule or result["select"]), metrics)


def slope_ci(x, y) -> tuple[float, float, float, int]:
    """OLS slope of y on x with an HC3 95% CI (statsmodels)."""
    import statsmodels.api as sm

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0:
        return np.nan, np.nan, np.nan, int(ok.sum())
    fit = sm.OLS(y[ok], sm.add_constant(x[ok])).fit(cov_type="HC3")
    lo, hi = fit.conf_int()[1]
    return float(fit.params[1]), float(lo), float(hi), int(ok.sum())


def _rho(x, y, claim, measure, sign) -> dict:
    r = spearman_ci(x, y)
    return finding(claim, measure, r["rho"], r["ci_low"], r["ci_high"], sign, r["n"])


def _mean(d, claim, measure, sign) -> dict:
    m, lo, hi, n = mean_ci(d)
    return finding(claim, measure, m, lo, hi, sign, n)
