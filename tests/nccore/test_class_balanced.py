"""Class-balanced Σ_W beside the pooled one (`CollapseStats(within="both")`: nc1_cb, nc1_tr_ratio_cb).

Pooled Σ_W = (1/N) Σ_c n_c Σ_c weighs each class by its size; class-balanced (1/C) Σ_c Σ_c weighs
the classes equally (Σ_c: the biased covariance of class c). Under label bias one class of the
biased subgroup is small, so the two can tell different stories.
"""
import numpy as np
import pytest
import torch

from nccore.metrics.collapse import CollapseStats, nc_metrics, nc_metrics_by_group


def test_hand_checked_one_dimensional_case():
    # class 0 = {-1, 1} (mean 0, variance 1), class 1 = {4, 4, 4, 4} (mean 4, variance 0)
    h = torch.tensor([-1.0, 1.0, 4.0, 4.0, 4.0, 4.0])[:, None]
    y = torch.tensor([0, 0, 1, 1, 1, 1])
    m = nc_metrics(h, y, within="both")
    # Σ_B = ((-2)² + 2²)/2 = 4; pooled Σ_W = (2·1 + 4·0)/6 = 1/3; balanced (1 + 0)/2 = 1/2
    assert m["nc1"] == pytest.approx((1 / 3) / 4 / 2, abs=1e-12)       # (1/C) tr(Σ_W Σ_B⁺) = 1/24
    assert m["nc1_cb"] == pytest.approx((1 / 2) / 4 / 2, abs=1e-12)    # 1/16
    assert m["nc1_tr_ratio"] == pytest.approx(1 / 12, abs=1e-12)
    assert m["nc1_tr_ratio_cb"] == pytest.approx(1 / 8, abs=1e-12)


def test_balanced_classes_give_equal_pooled_and_class_balanced():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(300, 5, generator=g, dtype=torch.float64)
    y = torch.arange(300) % 3
    m = nc_metrics(h, y, within="both")
    assert m["nc1_cb"] == pytest.approx(m["nc1"], rel=1e-12)


def _imbalanced(seed=1):
    rng = np.random.default_rng(seed)
    sizes, scales = (200, 40, 7), (0.5, 2.0, 4.0)
    h = np.concatenate([rng.normal(c, s, size=(n, 4)) for c, (n, s) in enumerate(zip(sizes, scales))])
    y = np.repeat(np.arange(3), sizes)
    return h, y


def test_matches_numpy_and_scikit_learn():
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis as LDA

    h, y = _imbalanced()
    covs = [np.cov(h[y == c].T, bias=True) for c in range(3)]
    pooled = sum((y == c).sum() * covs[c] for c in range(3)) / len(y)
    balanced = np.mean(covs, axis=0)
    # scikit-learn's LDA covariance_ is Σ_c prior_c · Σ_c: empirical priors → pooled, uniform → balanced
    assert np.allclose(LDA(solver="lsqr").fit(h, y).covariance_, pooled, atol=1e-12)
    assert np.allclose(LDA(solver="lsqr", priors=[1 / 3] * 3).fit(h, y).covariance_, balanced, atol=1e-12)
    mu = np.stack([h[y == c].mean(0) for c in range(3)])
    mt = mu - mu.mean(0)
    sb_pinv = np.linalg.pinv(mt.T @ mt / 3)
    m = nc_metrics(h, y, within="both")
    assert m["nc1"] == pytest.approx(np.trace(pooled @ sb_pinv) / 3, rel=1e-9)
    assert m["nc1_cb"] == pytest.approx(np.trace(balanced @ sb_pinv) / 3, rel=1e-9)
    assert m["nc1_tr_ratio_cb"] == pytest.approx(np.trace(balanced) / np.trace(mt.T @ mt / 3), rel=1e-9)
    # the small noisy classes weigh more when classes count equally
    assert m["nc1_cb"] > 2 * m["nc1"]
    assert nc_metrics(h, y, within="class_balanced")["nc1"] == pytest.approx(m["nc1_cb"], rel=1e-12)
    assert nc_metrics(h, y)["nc1"] == pytest.approx(m["nc1"], rel=1e-12)


def test_streaming_and_merge_equal_one_shot_per_subgroup():
    h, y = _imbalanced(2)
    a = np.random.default_rng(3).integers(0, 2, len(y))
    h = h + 1e5                                             # the shift keeps this exact
    one = nc_metrics_by_group(h, y, a, within="both")
    s1, s2 = CollapseStats(3, 4, 2, within="both"), CollapseStats(3, 4, 2, within="both")
    for i in range(0, len(y), 11):
        (s1 if i < 120 else s2).update(torch.as_tensor(h[i:i + 11]), torch.as_tensor(y[i:i + 11]),
                                       torch.as_tensor(a[i:i + 11]))
    merged = s1.merge(s2).metrics_by_group()
    for g in (0, 1):
        for k in ("nc1", "nc1_cb", "nc1_tr_ratio_cb"):
            assert merged[g][k] == pytest.approx(one[g][k], rel=1e-7)


def test_pooled_mode_reports_no_class_balanced_keys_and_bad_mode_is_refused():
    h, y = _imbalanced()
    assert "nc1_cb" not in nc_metrics(h, y)
    with pytest.raises(ValueError, match="within='per_class'.*'both'"):
        CollapseStats(3, 4, within="per_class")


def test_label_bias_rows_carry_both_and_they_differ_where_classes_are_unequal():
    from nccore.trial import run_trial

    rows = list(run_trial({"epochs": 1, "width": 0.0625, "batch_size": 32, "bias_kind": "label", "bias_level": 0.5,
                           "group_by": "sensitive", "metrics": ["nc"],
                           "data": {"n_train": 96, "n_val": 32, "n_test": 32, "image_size": 8}}))
    tr = {r["group"]: r for r in rows if r["split"] == "train"}
    for g in ("all", "0", "1"):
        assert np.isfinite(tr[g]["nc1_cb"]) and np.isfinite(tr[g]["nc1_cb_clean"]) and np.isfinite(tr[g]["nc1_tr_ratio_cb"])
    # subgroup 1 lost half its positives to the flips: its classes are unequal, so the two Σ_W differ
    assert tr["1"]["nc1_cb"] != pytest.approx(tr["1"]["nc1"], rel=1e-6)
