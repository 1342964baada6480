"""Oracle tests for geometric complexity."""
import pytest
import torch

from nccore.metrics.geometry import geometric_complexity


def test_linear_map_exact_and_hutchinson():
    A = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    fn = lambda x: x @ A.T  # noqa: E731
    x = torch.randn(5, 2)
    assert geometric_complexity(fn, x) == pytest.approx(30.0, abs=1e-9)
    assert geometric_complexity(fn, x[:1], num_probes=10_000) == pytest.approx(30.0, rel=0.01)


def test_quadratic_map_per_point_oracle():
    fn = lambda x: torch.stack([x[:, 0] ** 2, x[:, 0] * x[:, 1]], dim=1)  # noqa: E731
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert geometric_complexity(fn, x) == pytest.approx(3.0, abs=1e-9)
    assert geometric_complexity(fn, x[:1]) == pytest.approx(5.0, abs=1e-9)


def test_constant_map_is_zero():
    assert geometric_complexity(lambda x: 0 * x[:, :1] + 1.0, torch.randn(4, 3)) == 0.0


def test_estimator_within_five_percent_on_small_mlp():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8)).eval()
    x = torch.randn(64, 6)
    exact = geometric_complexity(mlp, x)
    est = geometric_complexity(mlp, x, num_probes=256, seed=1)
    assert est == pytest.approx(exact, rel=0.05)


def test_conv_model_in_eval_mode_batched_equals_per_sample():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    x = torch.randn(6, 3, 8, 8)
    whole = geometric_complexity(net, x)
    parts = sum(geometric_complexity(net, x[i:i + 1]) for i in range(6)) / 6
    assert whole == pytest.approx(parts, rel=1e-6)
