"""GC normalised for feature scale (`gc_norm`), and the exact GC (`gc_exact`) against a brute-force
Jacobian; both in a trial's rows."""
import numpy as np
import pytest
import torch

from nccore.metrics.geometry import feature_variance, geometric_complexity, normalised_gc

A = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
X = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=torch.float64)   # Cov(X) = I/2


def test_linear_map_normalised_gc_by_hand():
    # GC = ‖A‖²_F = 30; tr Cov(AX) = tr(A (I/2) Aᵀ) = 15; so 2
    assert feature_variance(X @ A.T) == pytest.approx(15.0, abs=1e-12)
    assert normalised_gc(lambda x: x @ A.T, X) == pytest.approx(2.0, abs=1e-12)


def test_rescaled_and_shifted_features_have_the_same_normalised_gc_but_not_the_same_gc():
    f = lambda x: x @ A.T  # noqa: E731
    g = lambda x: 10.0 * (x @ A.T) + 3.0  # noqa: E731
    assert geometric_complexity(g, X) == pytest.approx(100 * 30.0, rel=1e-12)
    assert normalised_gc(g, X) == pytest.approx(normalised_gc(f, X), rel=1e-12)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4)).double()
    x = torch.randn(32, 5, dtype=torch.float64)
    scaled = lambda z: 0.1 * net(z)  # noqa: E731
    assert normalised_gc(scaled, x) == pytest.approx(normalised_gc(net, x), rel=1e-9)


def test_constant_features_have_no_normalised_gc():
    with pytest.warns(RuntimeWarning, match="do not vary"):
        assert np.isnan(normalised_gc(lambda x: 0 * x[:, :1] + 1.0, X))


def test_exact_gc_equals_a_brute_force_jacobian_of_a_conv_net():
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, padding=1), torch.nn.BatchNorm2d(5), torch.nn.ReLU(),
                              torch.nn.Conv2d(5, 6, 3, stride=2), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten()).double().eval()
    net[1].running_mean.uniform_(-0.5, 0.5)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    brute = np.mean([float(torch.autograd.functional.jacobian(lambda z: net(z[None])[0], xi).pow(2).sum())
                     for xi in x])
    assert geometric_complexity(net, x) == pytest.approx(brute, rel=1e-10)
    # the 8-probe estimate the rows use is unbiased: its mean over seeds approaches the exact value
    est = np.mean([geometric_complexity(net, x, num_probes=8, seed=s) for s in range(200)])
    assert est == pytest.approx(brute, rel=0.05)


def test_trial_rows_carry_gc_norm_every_epoch_and_gc_exact_at_the_last():
    from nccore.trial import run_trial

    rows = list(run_trial({"epochs": 2, "width": 0.0625, "batch_size": 32, "metrics": ["gc"], "gc_samples": 16,
                           "data": {"n_train": 64, "n_val": 16, "n_test": 16, "image_size": 8}}))
    tr = {r["epoch"]: r for r in rows if r["split"] == "train" and r["group"] == "all"}
    assert set(tr) == {0, 1}
    assert "gc_exact" not in tr[0] and tr[0]["gc_norm"] > 0
    last = tr[1]
    # 8 Rademacher probes on 16 inputs: within a factor 2 of the exact value (a loose sanity bound)
    assert 0.5 < last["gc"] / last["gc_exact"] < 2.0
    test_all = next(r for r in rows if r["split"] == "test" and r["group"] == "all" and r["epoch"] == 1)
    assert test_all["gc_exact"] == last["gc_exact"]
