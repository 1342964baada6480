"""Shared pieces of the study verdicts: a finding with a 95% CI and a verdict read from it.

The expected sign of every finding is fixed by the caller from the paper, never from the data.
Verdicts (three words, nothing else):
- "supported": the CI lies entirely on the expected side of 0;
- "not supported": the CI's end on the expected side stays below `margin` (default 0: the CI
  lies on the other side of 0; a margin > 0 also rejects effects too small to matter);
- "inconclusive": anything else, including too few trials for a CI.
`why` says which case applied. A study may also return notes ({"note": text}) and figures
({"figure": png bytes, "caption": text}); the report renders them under the verdict table.
"""
from __future__ import annotations

import base64
import html

import numpy as np
import pandas as pd

from ..compare import mean_ci, spearman_ci
from ..select import select_epochs, trial_table

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
VERDICTS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)


def verdict_reason(lo: float, hi: float, expected_sign: int, margin: float = 0.0) -> tuple[str, str]:
    """(verdict, why) for a 95% CI [lo, hi] of an effect expected to have sign `expected_sign`."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return INCONCLUSIVE, "too few trials for a CI"
    a, b = sorted((expected_sign * lo, expected_sign * hi))   # the CI in the expected direction
    if a > 0:
        return SUPPORTED, "CI excludes 0 on the expected side"
    if b < margin:
        return NOT_SUPPORTED, ("CI lies on the opposite side of 0" if b < 0 else
                               f"CI excludes an effect of {margin:g} or more in the expected direction")
    return INCONCLUSIVE, "CI covers 0"


def verdict(lo: float, hi: float, expected_sign: int, margin: float = 0.0) -> str:
    return verdict_reason(lo, hi, expected_sign, margin)[0]


def finding(claim: str, measure: str, est: float, lo: float, hi: float, sign: int, n: int,
            margin: float = 0.0) -> dict:
    v, why = verdict_reason(lo, hi, sign, margin)
    return {"expected": claim, "measured": measure, "estimate": est, "ci_low": lo, "ci_high": hi, "n": n,
            "expected_sign": "+" if sign > 0 else "−", "verdict": v, "why": why}


def note(text: str) -> dict:
    return {"note": text}


def figure(png: bytes | None, caption: str) -> dict:
    return {"figure": png, "caption": caption}


def _split(fs: list[dict]) -> tuple[list[dict], list[dict]]:
    return [f for f in fs if "expected" in f], [f for f in fs if "expected" not in f]


def _html(fs: list[dict]) -> str:
    verdicts, extra = _split(fs)
    out = ""
    if verdicts:
        out += pd.DataFrame(verdicts).to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0)
        out += "".join(f"<p>{html.escape(_sentence(f))}</p>" for f in verdicts)
    for e in extra:
        if "note" in e:
            out += f"<p>{html.escape(e['note'])}</p>"
        elif e.get("figure") is not None:
            out += (f"<figure><img alt='{html.escape(e['caption'])}' src='data:image/png;base64,"
                    f"{base64.b64encode(e['figure']).decode()}'/><figcaption>{html.escape(e['caption'])}"
                    "</figcaption></figure>")
    return out


def _md(fs: list[dict]) -> str:
    verdicts, extra = _split(fs)
    lines = [f"- {_sentence(f)}" for f in verdicts]
    lines += [f"- {e['note']}" if "note" in e else f"- Figure (in report.html): {e['caption']}"
              for e in extra if "note" in e or e.get("figure") is not None]
    return "\n".join(lines)


def _sentence(f: dict) -> str:
    return (f"Expected: {f['expected']}. Measured {f['measured']} = {f['estimate']:+.3f} "
            f"(95% CI {f['ci_low']:+.3f} to {f['ci_high']:+.3f}, n={f['n']}): {f['verdict']}"
            + (f" ({f['why']})." if f.get("why") else "."))


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


def partial_corr(x, y, covariates=None) -> dict:
    """Spearman partial correlation of x and y controlling for `covariates` (N,) or (N, k), or
    the plain Spearman ρ with the same Fisher-z CI when None:
    rank every variable, regress the ranks of x and of y on the covariates' ranks (with an
    intercept, least squares), and correlate the residuals (Pearson). 95% CI by Fisher's z with
    standard error 1/√(n − 3 − k). Returns {rho, ci_low, ci_high, n}."""
    from scipy.stats import rankdata

    x, y = np.asarray(x, float), np.asarray(y, float)
    z = np.zeros((len(x), 0)) if covariates is None else np.asarray(covariates, float).reshape(len(x), -1)
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(z).all(1)
    n, k = int(ok.sum()), z.shape[1]
    nan = {"rho": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n": n}
    if n - 3 - k < 1:
        return nan
    design = np.column_stack([np.ones(n)] + [rankdata(c) for c in z[ok].T])
    res = [r - design @ np.linalg.lstsq(design, r, rcond=None)[0] for r in (rankdata(x[ok]), rankdata(y[ok]))]
    if min(np.std(r) for r in res) < 1e-12:
        return nan
    rho = float(np.clip(np.corrcoef(*res)[0, 1], -0.999999, 0.999999))
    h = 1.959964 / np.sqrt(n - 3 - k)
    return {"rho": rho, "ci_low": float(np.tanh(np.arctanh(rho) - h)), "ci_high": float(np.tanh(np.arctanh(rho) + h)),
            "n": n}


def _rho(x, y, claim, measure, sign) -> dict:
    r = spearman_ci(x, y)
    return finding(claim, measure, r["rho"], r["ci_low"], r["ci_high"], sign, r["n"])


def _partial(x, y, cov, claim, measure, sign) -> dict:
    r = partial_corr(x, y, cov)
    return finding(claim, measure, r["rho"], r["ci_low"], r["ci_high"], sign, r["n"])


def _mean(d, claim, measure, sign, margin: float = 0.0) -> dict:
    m, lo, hi, n = mean_ci(d)
    return finding(claim, measure, m, lo, hi, sign, n, margin)
