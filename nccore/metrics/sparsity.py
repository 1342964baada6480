"""Last-layer weight sparsity (Le, Schlötterer, Seifert 2023)."""
from __future__ import annotations

import math

import numpy as np

from ._util import as_numpy, undefined


def weight_sparsity(w, tol: float = 0.0) -> float:
    """Fraction of coefficients with |w_j| <= tol (L1/liblinear gives exact zeros, so tol=0)."""
    a = as_numpy(w).ravel()
    if a.size == 0:
        return undefined("empty weight")
    return float(np.mean(np.abs(a) <= tol))


def hoyer_sparsity(w) -> float:
    """(sqrt(d) - ||w||_1/||w||_2) / (sqrt(d) - 1): 0 for a flat vector, 1 for a one-hot one."""
    a = as_numpy(w).astype(np.float64).ravel()
    l2 = np.linalg.norm(a)
    if a.size < 2 or l2 == 0 or not np.isfinite(l2):
        return undefined("Hoyer sparsity needs d >= 2 and a non-zero finite weight")
    d = math.sqrt(a.size)
    return float((d - np.abs(a).sum() / l2) / (d - 1))
