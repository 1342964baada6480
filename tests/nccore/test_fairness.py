"""Oracle tests and the cross-check against fairlearn."""
import math

import numpy as np
import pytest
from fairlearn.metrics import MetricFrame, false_positive_rate, true_positive_rate
from fairlearn.metrics import demographic_parity_difference as fl_dp
from fairlearn.metrics import equalized_odds_difference as fl_eo
from sklearn.metrics import accuracy_score, f1_score

from nccore.metrics.fairness import (demographic_parity_difference, equalized_odds_difference,
                                     fairness_summary, group_metrics, worst_group_accuracy)

Y = [1, 1, 0, 0, 1, 1, 0, 0]
P = [1, 0, 0, 0, 1, 1, 1, 1]
A = [0, 0, 0, 0, 1, 1, 1, 1]


def test_oracle_per_group():
    g = group_metrics(Y, P, A)
    assert (g[0]["tpr"], g[0]["fpr"], g[0]["acc"], g[0]["selection_rate"]) == (0.5, 0.0, 0.75, 0.25)
    assert (g[1]["tpr"], g[1]["fpr"], g[1]["acc"], g[1]["selection_rate"]) == (1.0, 1.0, 0.5, 1.0)
    assert g[0]["f1"] == pytest.approx(2 / 3) and g[1]["f1"] == pytest.approx(2 / 3)


def test_oracle_differences():
    assert demographic_parity_difference(Y, P, A) == pytest.approx(0.75)
    assert equalized_odds_difference(Y, P, A) == pytest.approx(1.0)
    assert equalized_odds_difference(Y, P, A, agg="mean") == pytest.approx(0.75)
    assert worst_group_accuracy(Y, P, A) == 0.5
    s = fairness_summary(Y, P, A)
    assert s["avg_acc"] == pytest.approx(0.625) and s["gap"] == pytest.approx(0.125)


@pytest.mark.parametrize("seed", range(5))
def test_matches_fairlearn_on_random_predictions(seed):
    rng = np.random.default_rng(seed)
    y, p, a = rng.integers(0, 2, 300), rng.integers(0, 2, 300), rng.integers(0, 3, 300)
    mf = MetricFrame(metrics={"acc": accuracy_score, "tpr": true_positive_rate, "fpr": false_positive_rate,
                              "f1": f1_score}, y_true=y, y_pred=p, sensitive_features=a)
    ours = group_metrics(y, p, a)
    for grp, row in mf.by_group.iterrows():
        for k in ("acc", "tpr", "fpr", "f1"):
            assert ours[int(grp)][k] == pytest.approx(row[k], abs=1e-12)
    assert demographic_parity_difference(y, p, a) == pytest.approx(fl_dp(y, p, sensitive_features=a))
    assert equalized_odds_difference(y, p, a) == pytest.approx(fl_eo(y, p, sensitive_features=a))


def test_group_without_positives_has_nan_tpr_excluded_from_range():
    y, p, a = [0, 0, 1, 0], [0, 1, 1, 0], [0, 0, 1, 1]
    with pytest.warns(RuntimeWarning, match="TPR of group 0"):
        g = group_metrics(y, p, a)
    assert math.isnan(g[0]["tpr"])
    with pytest.warns(RuntimeWarning):
        # TPR range over group 1 only = 0; FPR range = |0.5 - 0| = 0.5
        assert equalized_odds_difference(y, p, a) == pytest.approx(0.5)


def test_one_group_gives_zero_difference_with_warning():
    with pytest.warns(RuntimeWarning, match="one group"):
        assert demographic_parity_difference([1, 0], [1, 1], [0, 0]) == 0.0


def test_zero_division_f1_is_nan_by_default_and_configurable():
    g = group_metrics([0, 0], [0, 0], [0, 0])
    assert math.isnan(g[0]["f1"])
    assert group_metrics([0, 0], [0, 0], [0, 0], zero_division=0.0)[0]["f1"] == 0.0
