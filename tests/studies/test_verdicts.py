"""The verdict machinery (analysis/studies/common.py): the four verdicts for every estimator on
planted data, Holm's step-down and its CIs, roles and declarations."""
import math

import numpy as np
import pytest

from analysis.studies.common import (Estimate, holm_levels, judge, mean_est, measured, ols_est, rank_est,
                                     read_verdict, slope_est, welch_est)

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("lo, hi, direction, margin, want", [
    (0.1, 0.3, "positive", 0.0, "supported"), (-0.3, -0.1, "negative", 0.0, "supported"),
    (-0.3, -0.1, "positive", 0.0, "contradicted"), (0.1, 0.3, "negative", 0.0, "contradicted"),
    (-0.1, 0.2, "positive", 0.0, "inconclusive"), (-0.01, 0.02, "positive", 0.05, "no effect"),
    (0.01, 0.02, "positive", 0.05, "no effect"),      # inside ±margin comes first, though it excludes 0
    (-0.3, -0.1, "any", 0.0, "supported"), (-0.01, 0.2, "positive", 0.05, "inconclusive"),
    (np.nan, np.nan, "positive", 0.1, "inconclusive")])
def test_verdict_order(lo, hi, direction, margin, want):
    assert read_verdict(lo, hi, direction, margin)[0] == want


def _planted(rule: str, effect: float, noise: float, n: int = 12) -> Estimate:
    """An estimate of `effect` by `rule` from n planted observations with `noise`."""
    e = RNG.normal(size=n) * noise
    x = np.linspace(0, 1, n)
    if rule == "mean":
        return mean_est(effect + e)
    if rule == "welch":
        return welch_est(effect + e, RNG.normal(size=n) * noise)
    if rule == "slope":
        return slope_est(x, effect * x + e)
    if rule == "interaction":
        z = np.tile([0.0, 1.0], n)
        xx = np.repeat(x, 2)
        y = effect * xx * z + RNG.normal(size=2 * n) * noise
        return ols_est(y, {"x": xx, "z": z, "xz": xx * z}, "xz")
    if rule == "spearman":
        return rank_est(x, effect * x + e)
    z = RNG.normal(size=n)                      # partial Spearman: a covariate that does not matter
    return rank_est(x, effect * x + e, z)


@pytest.mark.parametrize("rule", ["mean", "welch", "slope", "interaction", "spearman", "partial"])
@pytest.mark.parametrize("effect, noise, n, want", [
    (1.0, 0.05, 40, "supported"), (-1.0, 0.05, 40, "contradicted"), (0.0, 0.002, 400, "no effect"),
    (0.0, 5.0, 6, "inconclusive")])
def test_every_rule_reaches_all_four_verdicts(rule, effect, noise, n, want):
    est = _planted(rule, effect, noise, n)
    margin = 0.1 if rule in ("spearman", "partial") and want == "no effect" else 0.05
    if want == "no effect" and rule in ("spearman", "partial"):
        # a rank correlation with no planted link: ρ near 0 needs n ≈ 2000 for a CI inside ±0.1
        x = RNG.normal(size=3000)
        est = rank_est(x, RNG.normal(size=3000), RNG.normal(size=3000) if rule == "partial" else None)
    lo, hi = est.ci()
    assert read_verdict(lo, hi, "positive", margin)[0] == want, (rule, est, lo, hi)


def test_t_interval_for_small_n():
    e = mean_est([1.0, 2.0, 3.0])               # mean 2, se 1/√3, t(2, 0.975) = 4.303
    lo, hi = e.ci()
    assert e.df == 2 and hi - 2 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)


def test_bonett_wright_standard_error_of_spearman():
    x = np.arange(20.0)
    y = x + np.tile([0.0, 3.0], 10)
    e = rank_est(x, y)
    assert e.scale == "fisher" and e.se == pytest.approx(math.sqrt((1 + e.value ** 2 / 2) / 17))
    lo, hi = e.ci()
    assert lo < e.value < hi <= 1


def test_holm_step_down_and_its_ci_levels():
    # m = 3: thresholds 0.05/3, 0.05/2, 0.05; p = 0.01 (rejected), 0.04 (> 0.025: stop), 0.045 (not)
    levels, adj = holm_levels([0.04, 0.01, 0.045, np.nan])
    assert adj[1] == pytest.approx(0.03) and adj[0] == pytest.approx(0.08) and adj[2] == pytest.approx(0.08)
    assert levels[1] == pytest.approx(0.05 / 3) and levels[0] == pytest.approx(0.025)
    assert levels[2] == pytest.approx(0.025)      # after the stop: the stopping rank's level, so CI covers 0
    assert levels[3] == 0.05 and np.isnan(adj[3])


def test_holm_ci_excludes_zero_exactly_when_holm_rejects():
    ests = [Estimate(v, 1.0, 10, 11) for v in (3.5, 2.4, 2.3, 0.5)]
    items = [measured(f"f{i}", "c", "m", e) for i, e in enumerate(ests)]
    decl = {"primary": {"f0": {"direction": "positive"}}, "secondary": {f"f{i}": {} for i in (1, 2, 3)}}
    fs = {f["id"]: f for f in judge(items, decl)}
    for f in fs.values():
        excl = f["ci_low"] > 0 or f["ci_high"] < 0
        assert excl == (f["p_holm"] < 0.05), f


def test_manipulation_checks_are_their_own_family_and_never_the_headline():
    from analysis.studies.common import headline

    items = [measured("claim", "c", "m", Estimate(0.0, 0.001, 50, 51)),
             measured("check", "c", "m", Estimate(-1.0, 0.1, 50, 51)),
             measured("extra", "c", "m", Estimate(1.0, 0.1, 50, 51))]
    decl = {"primary": {"claim": {"direction": "positive", "margin": 0.05}},
            "manipulation": {"check": {"direction": "positive"}}, "secondary": {"missing": {"direction": "negative"}}}
    fs = {f["id"]: f for f in judge(items, decl)}
    assert fs["claim"]["verdict"] == "no effect" and fs["claim"]["role"] == "primary"
    assert fs["check"]["verdict"] == "contradicted" and fs["check"]["ci_level"] == pytest.approx(0.95)
    assert fs["extra"]["role"] == "descriptive" and fs["extra"]["verdict"] == ""
    assert fs["missing"]["verdict"] == "inconclusive"          # declared but not measured
    h = headline(list(fs.values()))
    assert "claim: no effect" in h and "0 of 1" in h and "cannot be read" in h
