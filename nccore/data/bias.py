"""Label-bias injection into one subgroup (Jones, Roschewitz, Glocker, MICCAI 2023).

The "under-diagnosis" bias studied by the NC-fairness study (Mouheb et al., MICCAI 2024): rows with
y = from_label in the target group have their label flipped to `to_label` with probability
`rate`; flips are drawn once, before training. Apply it to train and validation, never to test.
"""
from __future__ import annotations

import numpy as np


def inject_label_bias(y, a, rate: float, target_group: int = 1, from_label: int = 1, to_label: int = 0,
                      mode: str = "bernoulli", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return (y_new, flipped) for labels y (N,) and attribute a (N,).

    mode="bernoulli": each eligible row flips independently with probability `rate`;
    mode="exact": exactly round(rate · n_eligible) eligible rows flip, chosen by a seeded permutation.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"label-bias rate={rate}: must lie in [0, 1]")
    if mode not in ("bernoulli", "exact"):
        raise ValueError(f"mode={mode!r}: expected 'bernoulli' or 'exact'")
    y = np.asarray(y).copy()
    eligible = np.flatnonzero((np.asarray(a) == target_group) & (y == from_label))
    rng = np.random.default_rng(seed)
    if mode == "exact":
        chosen = rng.permutation(eligible)[: int(round(rate * len(eligible)))]
    else:
        chosen = eligible[rng.random(len(eligible)) < rate]
    flipped = np.zeros(len(y), dtype=bool)
    flipped[chosen] = True
    y[chosen] = to_label
    return y, flipped
