"""Per-study report sections: each shipped study (sweeps/specs/) states its expected direction,
measures it with a 95% CI and says plainly whether it matches. Keyed by the spec's `name`.

A finding "matches" when its CI lies on the expected side of zero, "contradicts" when it lies on
the other side, and is "inconclusive at this scale" when the CI covers zero.
"""
from __future__ import annotations

import html

import numpy as np
import pandas as pd

from .compare import mean_ci, spearman_ci
from .select import select_epochs, trial_table

STUDIES: dict[str, callable] = {}


def study(name: str):
    def deco(fn):
        STUDIES[name] = fn
        return fn
    return deco


def study_sections(name: str, result: dict) -> list[tuple[str, str, str]]:
    fn = STUDIES.get(name)
    if fn is None:
        return []
    findings = fn(result)
    return [(f"Study: {name}", _html(findings), _md(findings))]


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


@study("nc_fairness_label_bias")
def nc_fairness(result: dict) -> list[dict]:
    t = _trials(result, ["test_tpr_g1", "test_tpr_g0", "test_f1_g1", "train_nc1_g0", "train_nc1_g1"])
    out = [finding("the biased subgroup's test TPR falls as the label-bias rate rises",
                   "slope of test TPR (a=1) on bias_level", *slope_ci(t.bias_level, t.test_tpr_g1)[:3], -1, len(t)),
           finding("its test F1 falls too", "slope of test F1 (a=1) on bias_level",
                   *slope_ci(t.bias_level, t.test_f1_g1)[:3], -1, len(t))]
    biased = t[t.bias_level > 0]
    d = biased.train_nc1_g1 - biased.train_nc1_g0
    m, lo, hi, n = mean_ci(d)
    sign = 1 if m >= 0 else -1   # "differs": either sign counts; the CI must exclude 0
    out.append(finding("per-subgroup train NC1 differs between the groups under bias",
                       "mean NC1(a=1) − NC1(a=0), biased trials", m, lo, hi, sign, n))
    rows = result["rows"]
    tr = rows[(rows.split == "train") & (rows.group.isin(["0", "1"])) & rows.get("bias_level", 0).gt(0)]
    if "axis_cos" in tr:
        piv = tr.pivot_table(index=["trial_id", "epoch"], columns="group", values="axis_cos")
        first = piv.groupby(level=0).head(1)
        d0 = (first["1"] - first["0"]).abs()
        last = piv.groupby(level=0).tail(1)
        d1 = (last["1"] - last["0"]).abs()
        out.append(_mean(d0.values, "the groups' class-mean axes align differently early in training",
                         "|axis_cos(a=1) − axis_cos(a=0)| at the first epoch", 1))
        out.append(_mean(d0.values - d1.values, "and converge later", "first-epoch minus final-epoch |difference|", 1))
    return out


@study("fine_grained_coarse")
def fine_grained(result: dict) -> list[dict]:
    t = _trials(result, ["test_fine_nmi", "test_fine_nmi_chance", "test_fine_probe_acc"])
    t = t.assign(excess=t.test_fine_nmi - t.test_fine_nmi_chance)
    out = []
    for arch in sorted(t.arch.unique()):
        s = t[t.arch == arch]
        out.append(_mean(s.excess, f"{arch} keeps fine structure (NMI above its permutation baseline)",
                         f"{arch}: fine NMI − chance NMI", 1))
        out.append(_mean(s.test_fine_probe_acc - 0.5, f"{arch}: a linear probe recovers fine labels beyond the "
                         "coarse-only ceiling (0.5)", f"{arch}: probe accuracy − 0.5", 1))
    vgg, rest = t[t.arch.str.startswith("vgg")], t[~t.arch.str.startswith("vgg")]
    if len(vgg) and len(rest):
        diff = rest.groupby(["lr", "weight_decay"]).excess.mean() - vgg.groupby(["lr", "weight_decay"]).excess.mean()
        out.append(_mean(diff.dropna().values, "VGG keeps less fine structure than ResNet/DenseNet",
                         "mean excess NMI (ResNet, DenseNet) − VGG at matching lr, wd", 1))
    for axis in ("lr", "weight_decay"):
        s, lo, hi, n = slope_ci(np.log10(t[axis]), t.test_fine_probe_acc)
        sign = 1 if s >= 0 else -1
        out.append(finding(f"recovery depends on {axis}", f"slope of probe accuracy on log10 {axis}", s, lo, hi, sign, n))
    return out


@study("change_penalty")
def change_penalty(result: dict) -> list[dict]:
    t = _trials(result, ["test_worst_group_acc", "val_acc", "test_delta_norm"], rule="final")
    cp = t[t.method == "change_penalty"]
    out = [_rho(cp.penalty, cp.test_delta_norm, "larger λ keeps the change smaller", "Spearman ρ(λ, ‖Δ‖)", -1),
           _rho(cp.penalty, cp.val_acc, "larger λ keeps the original task", "Spearman ρ(λ, accuracy on the "
                "biased val distribution)", 1),
           _rho(cp.penalty, cp.test_worst_group_acc, "smaller λ fixes more of the bias",
                "Spearman ρ(λ, test worst-group accuracy)", -1)]
    means = cp.groupby("penalty").test_worst_group_acc.mean()
    if len(means) >= 3:
        best = means.idxmax()
        interior = means.index.min() < best < means.index.max()
        edge = max(means.iloc[0], means.iloc[-1])
        out.append({"expected": "an intermediate λ gives the best worst-group accuracy", "measured":
                    f"best mean test worst-group accuracy at λ={best:g} (interior: {interior})",
                    "estimate": float(means.max() - edge), "ci_low": np.nan, "ci_high": np.nan, "n": len(cp),
                    "verdict": "matches" if interior and means.max() > edge else "does not match at this scale"})
    for m in ("mas", "side_tuning"):
        s = t[t.method == m]
        if len(s):
            mean, lo, hi, n = mean_ci(s.test_worst_group_acc)
            out.append({"expected": f"baseline {m}", "measured": f"{m}: mean test worst-group accuracy over its "
                        "penalty grid", "estimate": mean, "ci_low": lo, "ci_high": hi, "n": n, "verdict": "reference"})
    return out


@study("dfr_last_layer")
def dfr(result: dict) -> list[dict]:
    t = _trials(result, ["test_dfr_worst_group_acc", "test_erm_worst_group_acc", "test_sparsity_after",
                         "test_sparsity_before", "test_worst_group_acc"], rule="final")
    d = t[t.method == "dfr"]
    out = [_mean(d.test_dfr_worst_group_acc - d.test_erm_worst_group_acc, "DFR raises worst-group accuracy over ERM",
                 "DFR − ERM test worst-group accuracy (same backbone)", 1),
           _mean(d.test_sparsity_after - d.test_sparsity_before, "last-layer sparsity rises after DFR",
                 "fraction of zero last-layer weights after − before", 1)]
    erm = t[t.method == "erm"].set_index(["bias_level", "seed"]).test_worst_group_acc
    paired = d.set_index(["bias_level", "seed"]).test_worst_group_acc - erm
    out.append(_mean(paired.dropna().values, "DFR trials beat separate ERM trials at matching bias and seed",
                     "DFR trial − ERM trial test worst-group accuracy", 1))
    return out


@study("gc_transfer")
def gc_transfer(result: dict) -> list[dict]:
    t = _trials(result, ["train_gc", "test_fewshot_acc", "test_target_nc1", "test_target_cdnv"], rule="final")
    return [_rho(t.train_gc, t.test_fewshot_acc, "lower source GC goes with higher few-shot accuracy",
                 "Spearman ρ(GC, 5-way 5-shot NCM accuracy)", -1),
            _rho(t.train_gc, t.test_target_nc1, "lower source GC goes with lower NC1 on new classes",
                 "Spearman ρ(GC, target NC1)", 1),
            _rho(t.test_target_nc1, t.test_fewshot_acc, "more target collapse goes with higher few-shot accuracy",
                 "Spearman ρ(target NC1, few-shot accuracy)", -1)]
