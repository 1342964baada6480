"""Study verdicts: every finding is an estimate with a standard error, a role, and a direction and
margin declared before the data are seen (in the spec's `study:` block, or the study's registered
default); Holm's step-down corrects within a study; the verdict is read from the corrected CI.

Roles
- primary: the paper's central claim (one per study); the study's headline verdict;
- secondary: further claims of the paper;
- manipulation: checks that the experiment did what it set out to do (the label flips lowered the
  TPR, the penalty shrank the change, ...). Often true by construction, so they never count as
  support for a claim; a failed check makes the claims uninterpretable;
- descriptive: measured and shown with a CI, not declared, no verdict.
Directions: positive, negative, or any (the paper says the factor matters, not which way).

Verdict of a finding with corrected CI [lo, hi] and margin m ≥ 0, in this order:
- "no effect"     m > 0 and −m < lo and hi < m (the CI lies inside ±margin);
- "supported"     the CI excludes 0 on the declared side (either side for `any`);
- "contradicted"  the CI excludes 0 on the other side;
- "inconclusive"  anything else, including an estimate without a CI (too few trials).

Correction. Two families per study: {primary, secondary} and {manipulation}. In each, the
findings with a p-value (two-sided, H0: effect = 0) are sorted by p; Holm rejects rank k
(1-based, m findings) while p_(j) < α/(m − j + 1) for every j ≤ k. The CI of rank k is drawn at
level 1 − α/(m − min(k, s) + 1), where s is the first rank Holm does not reject: so a CI excludes
0 exactly when Holm rejects, and "no effect" is judged on an interval at least as wide as the
uncorrected one. α = 0.05.

Estimators (each returns an `Estimate`): `mean_est` (t, n − 1 df), `welch_est` (Welch t),
`ols_est` (least squares with HC3 errors, t with n − p df: slopes, interactions), and `rank_est`
(Spearman ρ, or partial Spearman given covariates, on Fisher's z with the Bonett–Wright standard
error √((1 + ρ²/2)/(n − 3 − k)), k covariates).
"""
from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

ALPHA = 0.05
NO_EFFECT, SUPPORTED, CONTRADICTED, INCONCLUSIVE = "no effect", "supported", "contradicted", "inconclusive"
VERDICTS = (NO_EFFECT, SUPPORTED, CONTRADICTED, INCONCLUSIVE)
ROLES = ("primary", "secondary", "manipulation")
DIRECTIONS = ("positive", "negative", "any")


# ------------------------------------------------------------------------------------ estimates
@dataclass(frozen=True)
class Estimate:
    """An effect `value` with standard error `se` on the test scale: the value itself
    (scale "identity") or Fisher's z = atanh(ρ) (scale "fisher"); `df` t degrees of freedom
    (inf: normal); `n` observations."""
    value: float
    se: float = math.nan
    df: float = math.inf
    n: int = 0
    scale: str = "identity"

    def _z(self) -> float:
        return math.atanh(max(-0.999999, min(0.999999, self.value))) if self.scale == "fisher" else self.value

    def ok(self) -> bool:
        """A CI exists: finite value and standard error (0 when every observation is equal)."""
        return bool(np.isfinite(self.value) and np.isfinite(self.se) and self.se >= 0 and self.df > 0)

    def ci(self, alpha: float = ALPHA) -> tuple[float, float]:
        if not self.ok():
            return math.nan, math.nan
        if self.se == 0:
            return self.value, self.value
        from scipy import stats

        q = float(stats.t.ppf(1 - alpha / 2, self.df) if np.isfinite(self.df) else stats.norm.ppf(1 - alpha / 2))
        lo, hi = self._z() - q * self.se, self._z() + q * self.se
        return (math.tanh(lo), math.tanh(hi)) if self.scale == "fisher" else (lo, hi)

    def p(self) -> float:
        if not self.ok():
            return math.nan
        if self.se == 0:
            return 0.0 if self._z() != 0 else 1.0
        from scipy import stats

        t = abs(self._z()) / self.se
        return float(2 * (stats.t.sf(t, self.df) if np.isfinite(self.df) else stats.norm.sf(t)))


NONE = Estimate(math.nan)


def _finite(*arrays):
    arrs = [np.asarray(a, float) for a in arrays]
    ok = np.ones(len(arrs[0]), bool)
    for a in arrs:
        ok &= np.isfinite(a).reshape(len(a), -1).all(1) if a.size else np.ones(len(a), bool)
    return [a[ok] for a in arrs]


def mean_est(d) -> Estimate:
    """Mean of d (paired differences, one per seed): t with n − 1 df."""
    d, = _finite(np.ravel(d))
    n = len(d)
    if n < 2:
        return Estimate(float(d.mean()) if n else math.nan, n=n)
    return Estimate(float(d.mean()), float(d.std(ddof=1) / math.sqrt(n)), n - 1, n)


def welch_est(a, b) -> Estimate:
    """mean(a) − mean(b), Welch's t."""
    a, = _finite(np.ravel(a))
    b, = _finite(np.ravel(b))
    if len(a) < 2 or len(b) < 2:
        return Estimate(math.nan, n=len(a) + len(b))
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se > 0 else 1.0
    return Estimate(float(a.mean() - b.mean()), se, df, len(a) + len(b))


def ols_est(y, X: dict, term: str) -> Estimate:
    """Coefficient of `term` in y ~ 1 + X (X: name → (N,) column), HC3 standard error, t with
    n − p df (statsmodels). Covariates other than `term` that do not vary are left out."""
    import statsmodels.api as sm

    names = list(X)
    y, *cols = _finite(y, *[X[k] for k in names])
    keep = [i for i, c in enumerate(cols) if names[i] == term or (len(c) and np.ptp(c) > 0)]
    names, cols = [names[i] for i in keep], [cols[i] for i in keep]   # a covariate the run held fixed drops out
    n, p = len(y), len(names) + 1
    if n < p + 2 or any(np.ptp(c) == 0 for c in cols):
        return Estimate(math.nan, n=n)
    fit = sm.OLS(y, sm.add_constant(np.column_stack(cols), has_constant="add")).fit(cov_type="HC3")
    i = names.index(term) + 1
    return Estimate(float(fit.params[i]), float(fit.bse[i]), float(n - p), n)


def slope_est(x, y) -> Estimate:
    """OLS slope of y on x (HC3, t with n − 2 df)."""
    return ols_est(y, {"x": x}, "x")


def rank_est(x, y, covariates=None) -> Estimate:
    """Spearman ρ(x, y), or the partial Spearman ρ given `covariates` (N,) or (N, k): ranks of x
    and y regressed on the covariates' ranks, residuals correlated. Fisher z with the
    Bonett–Wright standard error √((1 + ρ²/2)/(n − 3 − k))."""
    from scipy.stats import rankdata

    x, y = np.asarray(x, float), np.asarray(y, float)
    z = np.zeros((len(x), 0)) if covariates is None else np.asarray(covariates, float).reshape(len(x), -1)
    x, y, z = _finite(x, y, z)
    n, k = len(x), z.shape[1]
    if n - 3 - k < 1:
        return Estimate(math.nan, n=n, scale="fisher")
    design = np.column_stack([np.ones(n)] + [rankdata(c) for c in z.T])
    res = [r - design @ np.linalg.lstsq(design, r, rcond=None)[0] for r in (rankdata(x), rankdata(y))]
    if min(np.std(r) for r in res) < 1e-12:
        return Estimate(math.nan, n=n, scale="fisher")
    rho = float(np.clip(np.corrcoef(*res)[0, 1], -0.999999, 0.999999))
    return Estimate(rho, math.sqrt((1 + rho ** 2 / 2) / (n - 3 - k)), math.inf, n, "fisher")


# ------------------------------------------------------------------------------------ findings
def measured(fid: str, claim: str, measure: str, est: Estimate) -> dict:
    """A measured finding, before a declaration gives it a role, a direction and a margin."""
    return {"id": fid, "claim": claim, "measure": measure, "est": est}


def note(text: str) -> dict:
    return {"note": text}


def figure(png: bytes | None, caption: str) -> dict:
    return {"figure": png, "caption": caption}


def read_verdict(lo: float, hi: float, direction: str, margin: float = 0.0) -> tuple[str, str]:
    """(verdict, why) for a (corrected) CI [lo, hi], in the order of the module doc."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return INCONCLUSIVE, "no CI (too few trials)"
    if margin > 0 and -margin < lo and hi < margin:
        return NO_EFFECT, f"CI inside ±{margin:g}"
    side = 1 if lo > 0 else -1 if hi < 0 else 0
    if side == 0:
        return INCONCLUSIVE, "CI covers 0" + (f" and reaches beyond ±{margin:g}" if margin > 0 else "")
    want = {"positive": 1, "negative": -1, "any": side}[direction]
    return (SUPPORTED, "CI excludes 0 on the declared side") if side == want else \
        (CONTRADICTED, "CI excludes 0 on the other side")


def declared(declaration: dict) -> dict[str, dict]:
    """{finding id: {role, direction, margin}} from a `study:` block (spec or default)."""
    out = {}
    for role in ROLES:
        for fid, d in (declaration.get(role) or {}).items():
            out[fid] = {"role": role, "direction": d.get("direction", "positive"), "margin": float(d.get("margin", 0.0))}
    return out


def holm_levels(p: list[float], alpha: float = ALPHA) -> tuple[list[float], list[float]]:
    """(per finding: the α of its CI, Holm-adjusted p) for p-values `p` (NaN: not tested, α = α)."""
    idx = [i for i, v in enumerate(p) if np.isfinite(v)]
    order = sorted(idx, key=lambda i: p[i])
    m = len(order)
    levels, adj = [alpha] * len(p), [math.nan] * len(p)
    stop, running = m + 1, 0.0
    for k, i in enumerate(order, start=1):
        if stop > m and not p[i] < alpha / (m - k + 1):
            stop = k
        levels[i] = alpha / (m - min(k, stop) + 1)
        running = max(running, min(1.0, (m - k + 1) * p[i]))
        adj[i] = running
    return levels, adj


def judge(items: list[dict], declaration: dict, alpha: float = ALPHA) -> list[dict]:
    """Findings with role, direction, margin, corrected CI and verdict; notes and figures pass
    through. Declared ids the study did not measure become inconclusive rows ("not measured")."""
    decl = declared(declaration)
    found = {it["id"] for it in items if "id" in it}
    items = items + [measured(fid, "(not measured in these rows)", "—", NONE) for fid in decl if fid not in found]
    fs = [it for it in items if "id" in it]
    for f in fs:
        f.update(decl.get(f["id"], {"role": "descriptive", "direction": "", "margin": 0.0}))
    for family in (("primary", "secondary"), ("manipulation",)):
        fam = [f for f in fs if f["role"] in family]
        levels, adj = holm_levels([f["est"].p() for f in fam], alpha)
        for f, a, pa in zip(fam, levels, adj):
            f["alpha"], f["p_holm"] = a, pa
    out = []
    for it in items:
        if "id" not in it:
            out.append(it)
            continue
        e = it.pop("est")
        a = it.get("alpha", alpha)
        lo, hi = e.ci(a)
        v, why = read_verdict(lo, hi, it["direction"], it["margin"]) if it["role"] != "descriptive" else ("", "")
        out.append({**it, "estimate": e.value, "ci_low": lo, "ci_high": hi, "ci_level": 1 - a, "n": e.n,
                    "p": e.p(), "p_holm": it.get("p_holm", math.nan), "verdict": v, "why": why})
    order = {"primary": 0, "secondary": 1, "manipulation": 2, "descriptive": 3}
    return sorted([f for f in out if "id" in f], key=lambda f: order[f["role"]]) + [e for e in out if "id" not in e]


def headline(findings: list[dict]) -> str:
    """One line: the primary outcome's verdict, and whether the manipulation checks held."""
    prim = [f for f in findings if f.get("role") == "primary"]
    man = [f for f in findings if f.get("role") == "manipulation"]
    ok = sum(f["verdict"] == SUPPORTED for f in man)
    s = "; ".join(f"primary outcome {f['id']}: {f['verdict']}" for f in prim) or "no primary outcome declared"
    s += f"; manipulation checks {ok} of {len(man)} supported"
    if ok < len(man):
        s += " (where a check does not hold, the claims cannot be read)"
    return s


# ------------------------------------------------------------------------------------ rendering
TABLE_COLS = ("role", "id", "direction", "margin", "estimate", "ci_low", "ci_high", "ci_level", "p_holm", "n",
              "verdict")


def _split(fs: list[dict]) -> tuple[list[dict], list[dict]]:
    return [f for f in fs if "id" in f], [f for f in fs if "id" not in f]


def verdict_frame(fs: list[dict]) -> pd.DataFrame:
    verdicts, _ = _split(fs)
    return pd.DataFrame([{c: f.get(c) for c in (*TABLE_COLS, "claim", "measure")} for f in verdicts])


def text_table(fs: list[dict]) -> str:
    """The verdict table as fixed-width text (`ncsweep study`)."""
    verdicts, _ = _split(fs)
    head = f"{'role':<12} {'finding':<26} {'dir':<8} {'margin':>6} {'estimate':>9}  {'CI (Holm)':<21} {'p_holm':>7} {'n':>4}  verdict"
    lines = [head, "-" * len(head)]
    for f in verdicts:
        ci = f"[{f['ci_low']:+.3f}, {f['ci_high']:+.3f}]" if np.isfinite(f["ci_low"]) else "—"
        lines.append(f"{f['role']:<12} {f['id']:<26} {f['direction']:<8} {f['margin']:>6g} {f['estimate']:>+9.3f}  "
                     f"{ci:<21} {f['p_holm']:>7.3g} {f['n']:>4}  {f['verdict']}")
    return "\n".join(lines)


def _html(fs: list[dict]) -> str:
    verdicts, extra = _split(fs)
    out = ""
    if verdicts:
        out += f"<p><b>{html.escape(headline(fs))}</b></p>"
        out += verdict_frame(fs)[list(TABLE_COLS)].to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0)
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
    lines = [f"- **{headline(fs)}**"] if verdicts else []
    lines += [f"- {_sentence(f)}" for f in verdicts]
    lines += [f"- {e['note']}" if "note" in e else f"- Figure (in report.html): {e['caption']}"
              for e in extra if "note" in e or e.get("figure") is not None]
    return "\n".join(lines)


def _sentence(f: dict) -> str:
    if f["role"] == "descriptive":
        return (f"[descriptive] {f['claim']}: {f['measure']} = {f['estimate']:+.3f} "
                f"(95% CI {f['ci_low']:+.3f} to {f['ci_high']:+.3f}, n={f['n']}).")
    return (f"[{f['role']}] {f['id']} — {f['claim']} ({f['direction']}, margin {f['margin']:g}). Measured "
            f"{f['measure']} = {f['estimate']:+.3f} ({f['ci_level']:.1%} Holm CI {f['ci_low']:+.3f} to "
            f"{f['ci_high']:+.3f}, n={f['n']}): {f['verdict']} ({f['why']}).")
