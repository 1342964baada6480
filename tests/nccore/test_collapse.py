"""Hand-checked oracles and the streaming / per-subgroup contracts."""
import math

import numpy as np
import pytest
import torch

from nccore.metrics.collapse import (CollapseStats, nc_metrics, nc_metrics_by_group, ncc_mismatch,
                                     subgroup_alignment)

TOL = 1e-10


def _collapsed(C=3, per_class=4):
    means = torch.eye(C, dtype=torch.float64) - 1.0 / C  # columns = rows (symmetric)
    y = torch.arange(C).repeat_interleave(per_class)
    return means[y], y, means


def test_perfect_collapse_gives_zero_everywhere():
    h, y, means = _collapsed()
    m = nc_metrics(h, y, weight=means.T.clone())   # W = M̃ᵀ (mean of means is 0 already)
    for k in ("nc1", "nc2_norm_cv", "nc2_cos_std", "nc2_max_angle", "nc2_etf", "nc3", "nc3_etf", "nc4_mismatch"):
        assert abs(m[k]) < TOL, k
    assert m["ncc_acc"] == 1.0
    assert abs(nc_metrics(h, y, weight=5 * means.T)["nc3"]) < TOL


def test_orthonormal_means_are_an_etf_after_centring():
    h = torch.eye(3, dtype=torch.float64)
    assert abs(nc_metrics(h, torch.arange(3))["nc2_etf"]) < TOL


def test_one_dimensional_two_class_oracle():
    h = torch.tensor([[-2.0], [0.0], [0.0], [2.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    m = nc_metrics(h, y)
    assert m["nc1"] == pytest.approx(0.5, abs=TOL)
    assert m["cdnv"] == pytest.approx(0.25, abs=TOL)
    assert m["nc1_tr_ratio"] == pytest.approx(1.0, abs=TOL)
    assert m["nc2_trivial"] is True


def test_nc1_is_blind_to_spread_orthogonal_to_the_means():
    h = torch.tensor([[-1.0, 1], [-1, -1], [1, 1], [1, -1]], dtype=torch.float64)
    m = nc_metrics(h, torch.tensor([0, 0, 1, 1]))
    assert abs(m["nc1"]) < TOL
    assert m["nc1_tr_ratio"] == pytest.approx(1.0, abs=TOL)


def test_square_means_nc2_oracle():
    h = torch.tensor([[1.0, 1], [1, -1], [-1, -1], [-1, 1]], dtype=torch.float64)
    m = nc_metrics(h, torch.arange(4))
    assert abs(m["nc2_norm_cv"]) < TOL
    assert m["nc2_max_angle"] == pytest.approx(4 / 9, abs=TOL)
    assert m["nc2_cos_std"] == pytest.approx(0.492366, abs=1e-6)
    assert m["nc2_etf"] == pytest.approx(0.605811, abs=1e-6)


def test_antipodal_classifier_gives_nc3_four():
    h, y, means = _collapsed()
    assert nc_metrics(h, y, weight=-means.T)["nc3"] == pytest.approx(4.0, abs=TOL)


def test_nc4_oracle_with_given_means():
    h = torch.tensor([[-2.0], [0.5], [2.0]], dtype=torch.float64)
    w, b = torch.zeros(2, 1, dtype=torch.float64), torch.tensor([1.0, 0.0], dtype=torch.float64)
    logits = h @ w.T + b
    means = torch.tensor([[-1.0], [1.0]], dtype=torch.float64)
    assert ncc_mismatch(h, logits, means) == pytest.approx(2 / 3, abs=TOL)
    m = nc_metrics(h, torch.tensor([0, 1, 1]), weight=w, bias=b, means=means)
    assert m["nc4_mismatch"] == pytest.approx(2 / 3, abs=TOL)


def test_streaming_equals_one_shot_and_is_shift_invariant():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(1000, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (1000,), generator=g)
    w = torch.randn(3, 8, generator=g, dtype=torch.float64)
    one = nc_metrics(h, y, weight=w)
    stats = CollapseStats(3, 8)
    for hb, yb in zip(h.split(7), y.split(7)):
        stats.update(hb, yb)
    stream = stats.metrics(weight=w)
    for k in ("nc1", "nc1_tr_ratio", "nc2_norm_cv", "nc2_cos_std", "nc2_max_angle", "nc2_etf", "nc3", "cdnv"):
        assert stream[k] == pytest.approx(one[k], abs=1e-12, rel=1e-10), k
    shifted = nc_metrics(h + 1e6, y)
    assert shifted["nc1"] == pytest.approx(one["nc1"], abs=1e-8)


def test_merge_of_two_accumulators_equals_one():
    g = torch.Generator().manual_seed(2)
    h = torch.randn(300, 5, generator=g, dtype=torch.float64) + 50
    y, a = torch.randint(0, 3, (300,), generator=g), torch.randint(0, 2, (300,), generator=g)
    full, left, right = (CollapseStats(3, 5, 2, within="class_balanced") for _ in range(3))
    full.update(h, y, a)
    left.update(h[:100], y[:100], a[:100])
    right.update(h[100:] * 1.0, y[100:], a[100:])
    merged = left.merge(right)
    for s, ref in full.metrics_by_group().items():
        got = merged.metrics_by_group()[s]
        assert got["nc1"] == pytest.approx(ref["nc1"], rel=1e-9)
    assert merged.metrics()["cdnv"] == pytest.approx(full.metrics()["cdnv"], rel=1e-9)


def test_per_group_metrics_equal_metrics_on_that_group_alone():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(400, 6, generator=g, dtype=torch.float64)
    y, a = torch.randint(0, 4, (400,), generator=g), torch.randint(0, 3, (400,), generator=g)
    w = torch.randn(4, 6, generator=g, dtype=torch.float64)
    by = nc_metrics_by_group(h, y, a, weight=w)
    for s in range(3):
        alone = nc_metrics(h[a == s], y[a == s], weight=w, num_classes=4)
        for k in ("nc1", "nc2_etf", "nc3", "cdnv", "nc4_mismatch"):
            assert by[s][k] == pytest.approx(alone[k], rel=1e-9, abs=1e-12), (s, k)


def test_subgroup_oracle_collapsed_and_spread_groups():
    # group 0 sits exactly on the means ±1, group 1 is oracle 3 — the global means stay ±1.
    h = torch.tensor([[-1.0], [-1], [1], [1], [-2], [0], [0], [2]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    a = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    by = nc_metrics_by_group(h, y, a)
    assert abs(by[0]["nc1"]) < TOL
    assert by[1]["nc1"] == pytest.approx(0.5, abs=TOL)
    al = subgroup_alignment(h, y, a)
    for s in (0, 1):
        assert all(v == pytest.approx(1.0, abs=TOL) for v in al["align_cos"][s].values())
        assert abs(al["align_dist"][s]) < TOL
        assert al["axis_cos"][s] == pytest.approx(1.0, abs=TOL)
        assert al["axis_ratio"][s] == pytest.approx(1.0, abs=TOL)
        assert abs(al["subgroup_offset"][s]) < TOL


def test_streaming_nc4_counts_per_group_against_reference_means():
    g = torch.Generator().manual_seed(4)
    h = torch.randn(200, 4, generator=g, dtype=torch.float64)
    y, a = torch.randint(0, 3, (200,), generator=g), torch.randint(0, 2, (200,), generator=g)
    w = torch.randn(3, 4, generator=g, dtype=torch.float64)
    ref = torch.randn(3, 4, generator=g, dtype=torch.float64)
    stats = CollapseStats(3, 4, 2).set_reference(ref)
    for hb, yb, ab in zip(h.split(16), y.split(16), a.split(16)):
        stats.update(hb, yb, ab, logits=hb @ w.T)
    for s in (0, 1):
        m = a == s
        want = ncc_mismatch(h[m], h[m] @ w.T, ref)
        assert stats.metrics_by_group(w)[s]["nc4_mismatch"] == pytest.approx(want, abs=TOL)


def test_single_logit_head_maps_to_two_class_softmax_head():
    h, y, means = _collapsed(C=2)
    w = means[1:2] * 2  # w = 2·μ̃_1 ⇒ [-w/2; w/2] = [μ̃_0; μ̃_1] = M̃ᵀ
    assert abs(nc_metrics(h, y, weight=w)["nc3"]) < TOL


# ---------------------------------------------------------------- degenerate inputs
def test_one_class_gives_nan_with_warning():
    with pytest.warns(RuntimeWarning, match="at least 2"):
        m = nc_metrics(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    assert math.isnan(m["nc1"]) and math.isnan(m["nc2_etf"])


def test_single_sample_class_contributes_zero_scatter():
    h = torch.tensor([[0.0], [2.0], [4.0]], dtype=torch.float64)
    m = nc_metrics(h, torch.tensor([0, 1, 1]))  # class 0 alone at 0; class 1 at {2,4}, mean 3
    # Σ_W = (0 + 1 + 1)/3, means 0 and 3 → Σ_B = 2.25, NC1 = (2/3)/2.25/2
    assert m["nc1"] == pytest.approx((2 / 3) / 2.25 / 2, abs=TOL)


def test_empty_class_is_dropped():
    h = torch.tensor([[-2.0], [0.0], [0.0], [2.0]], dtype=torch.float64)
    m = nc_metrics(h, torch.tensor([0, 0, 2, 2]), num_classes=3)
    assert m["classes_present"] == 2 and m["nc1"] == pytest.approx(0.5, abs=TOL)


def test_coincident_means_singular_between_scatter(quiet):
    h = torch.tensor([[-1.0], [1.0], [-1.0], [1.0]], dtype=torch.float64)
    m = nc_metrics(h, torch.tensor([0, 0, 1, 1]))
    assert math.isnan(m["nc1"]) and m["cdnv"] == math.inf


def test_nan_features_make_metrics_nan_not_a_crash():
    h = torch.randn(10, 3, dtype=torch.float64)
    h[3, 1] = float("nan")
    with pytest.warns(RuntimeWarning, match="non-finite"):
        m = nc_metrics(h, torch.arange(10) % 2)
    assert math.isnan(m["nc1"]) and m["n"] == 9


def test_empty_subgroup_class_cell_restricts_to_present_classes(quiet):
    h = torch.tensor([[-2.0], [0.0], [0.0], [2.0], [5.0]], dtype=torch.float64)
    y, a = torch.tensor([0, 0, 1, 1, 0]), torch.tensor([0, 0, 0, 0, 1])
    by = nc_metrics_by_group(h, y, a)
    assert by[0]["nc1"] == pytest.approx(0.5, abs=TOL)
    assert by[1]["classes_present"] == 1 and math.isnan(by[1]["nc1"])


def test_float32_and_numpy_inputs_are_reduced_in_float64():
    h = np.array([[-2.0], [0.0], [0.0], [2.0]], dtype=np.float32)
    assert nc_metrics(h, np.array([0, 0, 1, 1]))["nc1"] == pytest.approx(0.5, abs=TOL)


def test_rank_c_minus_1_matches_reference_inversion():
    h, y, _ = _collapsed(C=4, per_class=3)
    noisy = h + 0.05 * torch.randn_like(h)
    a = CollapseStats(4, 4, rank="C-1")
    a.update(noisy, y)
    assert a.metrics()["nc1"] == pytest.approx(nc_metrics(noisy, y)["nc1"], rel=1e-8)
