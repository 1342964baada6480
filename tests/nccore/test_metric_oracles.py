"""Hand-checkable oracles for the metrics docs/metrics.md lists beyond the main NC/fairness/fine oracles."""
import pytest
import torch

from nccore.metrics.collapse import nc_metrics
from nccore.metrics.fairness import fairness_summary
from nccore.metrics.fine import fine_recovery
from tests.nccore.test_fine import _hierarchy

SQUARE = torch.tensor([[1.0, 1], [1, -1], [-1, -1], [-1, 1]], dtype=torch.float64)


def test_classifier_rows_get_the_nc2_statistics_of_the_means():
    # classifier rows = the square's corners: equal norms, coherence 4/9 as for the means
    m = nc_metrics(SQUARE, torch.arange(4), weight=SQUARE.clone())
    assert abs(m["nc2_wnorm_cv"]) < 1e-10
    assert m["nc2_wmax_angle"] == pytest.approx(4 / 9, abs=1e-10)


def test_fairness_ratios_and_ranges_oracle():
    # group 0: acc .75, sel .25, TPR .5, FPR 0; group 1: acc .5, sel 1, TPR 1, FPR 1
    s = fairness_summary([1, 1, 0, 0, 1, 1, 0, 0], [1, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1])
    assert s["mean_group_acc"] == pytest.approx(0.625) and s["gap_maxmin"] == pytest.approx(0.25)
    assert s["dp_ratio"] == pytest.approx(0.25)            # 0.25 / 1
    assert s["tpr_gap"] == pytest.approx(0.5) and s["fpr_gap"] == pytest.approx(1.0)
    assert s["eo_diff_mean"] == pytest.approx(0.75) and s["eo_ratio"] == pytest.approx(0.0)   # FPR ratio 0/1


def test_adjusted_rand_index_is_one_when_fine_labels_are_recovered():
    x, c, f = _hierarchy(400, delta=1.0, sigma=0.01)
    assert fine_recovery(x, c, f)["ari"] == pytest.approx(1.0)
