import math

import pytest

from nccore.metrics.sparsity import hoyer_sparsity, weight_sparsity


def test_fraction_of_zeros_and_tolerance():
    assert weight_sparsity([0.0, 0.0, 1.0, -2.0]) == 0.5
    assert weight_sparsity([1e-7, 0.0, 1.0, -2.0], tol=1e-6) == 0.5


def test_hoyer_extremes():
    assert hoyer_sparsity([0.0, 0.0, 3.0, 0.0]) == pytest.approx(1.0)
    assert hoyer_sparsity([1.0, -1.0, 1.0, 1.0]) == pytest.approx(0.0)
    # d = 4, w = (1, 1, 0, 0): (2 - 2/sqrt(2)) / (2 - 1)
    assert hoyer_sparsity([1.0, 1.0, 0.0, 0.0]) == pytest.approx(2 - math.sqrt(2))


def test_zero_weight_hoyer_is_nan(quiet):
    assert math.isnan(hoyer_sparsity([0.0, 0.0]))
