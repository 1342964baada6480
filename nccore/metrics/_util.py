"""Shared helpers for metrics: float64 conversion and the NaN-with-warning convention."""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

NAN = float("nan")


def as_f64(x) -> torch.Tensor:
    """Any tensor / array / list -> float64 torch tensor on its own device (CPU for NumPy)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64)
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def as_long(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.int64)
    return torch.as_tensor(np.asarray(x), dtype=torch.int64)


def as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def undefined(reason: str) -> float:
    """A metric that is mathematically undefined: warn with the reason, return NaN."""
    warnings.warn(f"metric undefined: {reason}", RuntimeWarning, stacklevel=3)
    return NAN


def to_float(t) -> float:
    v = float(t.item() if isinstance(t, torch.Tensor) else t)
    return v if math.isfinite(v) or math.isinf(v) else NAN
