"""Oracle tests; NMI/ARI equal scikit-learn's inside each coarse class."""
import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from nccore.metrics.fine import fine_recovery, hungarian_accuracy, linear_probe_accuracy, purity


def _hierarchy(n, delta, sigma, seed=0):
    rng = np.random.default_rng(seed)
    coarse, fine_in = rng.integers(0, 2, n), rng.integers(0, 2, n)
    x = np.zeros((n, 2))
    x[:, 0] = 10 * (2 * coarse - 1)
    x[:, 1] = delta * (2 * fine_in - 1)
    return x + sigma * rng.standard_normal((n, 2)), coarse, 2 * coarse + fine_in


def test_separated_fine_offsets_are_recovered_perfectly():
    x, c, f = _hierarchy(400, delta=1.0, sigma=0.01)
    r = fine_recovery(x, c, f)
    assert r["cluster_acc"] == 1.0 and r["nmi"] == pytest.approx(1.0) and r["purity"] == 1.0


def test_no_fine_signal_gives_chance():
    x, c, f = _hierarchy(2000, delta=0.0, sigma=1.0)
    r = fine_recovery(x, c, f)
    assert 0.45 <= r["cluster_acc"] <= 0.55
    assert r["nmi"] < 0.02


def test_hungarian_and_purity_oracles():
    assert hungarian_accuracy([1, 1, 0, 0], [0, 0, 1, 1]) == 1.0
    assert purity([0, 0, 0, 0], [0, 1, 0, 1]) == 0.5


def test_nmi_is_sklearn_nmi_within_each_coarse_class():
    x, c, f = _hierarchy(600, delta=0.4, sigma=0.5, seed=3)
    from sklearn.cluster import KMeans
    want, w = [], []
    for k in (0, 1):
        m = c == k
        cl = KMeans(2, n_init=10, random_state=0).fit_predict(x[m])
        want.append(normalized_mutual_info_score(f[m], cl))
        w.append(m.sum())
    assert fine_recovery(x, c, f)["nmi"] == pytest.approx(np.average(want, weights=w), abs=1e-12)


def test_train_to_test_protocol_assigns_to_train_centroids():
    xtr, ctr, ftr = _hierarchy(400, 1.0, 0.05, seed=1)
    xte, cte, fte = _hierarchy(200, 1.0, 0.05, seed=2)
    r = fine_recovery(xte, cte, fte, train_features=xtr, train_coarse=ctr)
    assert r["cluster_acc"] == 1.0


def test_linear_probe_recovers_separable_fine_labels():
    xtr, _, ftr = _hierarchy(400, 1.0, 0.2, seed=1)
    xte, _, fte = _hierarchy(200, 1.0, 0.2, seed=2)
    assert linear_probe_accuracy(xtr, ftr, xte, fte) > 0.98


def test_non_finite_features_give_nan(quiet):
    x, c, f = _hierarchy(20, 1.0, 0.1)
    x[0, 0] = np.nan
    assert np.isnan(fine_recovery(x, c, f)["nmi"])
