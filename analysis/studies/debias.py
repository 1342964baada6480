"""Debiasing studies: change-penalised tuning (Penzel et al.) and DFR last-layer retraining (Le et al.)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..compare import mean_ci
from .common import _mean, _rho, _trials, finding, slope_ci
from .registry import study


@study("change_penalty")
def change_penalty(result: dict) -> list[dict]:
    t = _trials(result, ["test_worst_group_acc", "val_acc", "test_delta_norm"], rule="final")
    cp = t[t.method == "change_penalty"]
    out = [_rho(cp.penalty, cp.test_delta_norm, "larger λ keeps the change smaller", "Spearman ρ(λ, ‖Δ‖)", -1),
           _rho(cp.penalty, cp.val_acc, "larger λ keeps the original task", "Spearman ρ(λ, accuracy on the "
                "biased val distribution)", 1),
           _rho(cp.penalty, cp.test_worst_group_acc, "smaller λ fixes more of the bias",
                "Spearman ρ(λ, test worst-group accuracy)", -1)]
    means = cp.groupby("penalty").test_worst_group_acc.mean()
    if len(means) >= 3:
        best = means.idxmax()
        interior = means.index.min() < best < means.index.max()
        edge = max(means.iloc[0], means.iloc[-1])
        out.append({"expected": "an intermediate λ gives the best worst-group accuracy", "measured":
                    f"best mean test worst-group accuracy at λ={best:g} (interior: {interior})",
                    "estimate": float(means.max() - edge), "ci_low": np.nan, "ci_high": np.nan, "n": len(cp),
                    "verdict": "matches" if interior and means.max() > edge else "does not match at this scale"})
    for m in ("mas", "side_tuning"):
        s = t[t.method == m]
        if len(s):
            mean, lo, hi, n = mean_ci(s.test_worst_group_acc)
            out.append({"expected": f"baseline {m}", "measured": f"{m}: mean test worst-group accuracy over its "
                        "penalty grid", "estimate": mean, "ci_low": lo, "ci_high": hi, "n": n, "verdict": "reference"})
    return out


@study("dfr_last_layer")
def dfr(result: dict) -> list[dict]:
    t = _trials(result, ["test_dfr_worst_group_acc", "test_erm_worst_group_acc", "test_sparsity_after",
                         "test_sparsity_before", "test_worst_group_acc"], rule="final")
    d = t[t.method == "dfr"]
    out = [_mean(d.test_dfr_worst_group_acc - d.test_erm_worst_group_acc, "DFR raises worst-group accuracy over ERM",
                 "DFR − ERM test worst-group accuracy (same backbone)", 1),
           _mean(d.test_sparsity_after - d.test_sparsity_before, "last-layer sparsity rises after DFR",
                 "fraction of zero last-layer weights after − before", 1)]
    erm = t[t.method == "erm"].set_index(["bias_level", "seed"]).test_worst_group_acc
    paired = d.set_index(["bias_level", "seed"]).test_worst_group_acc - erm
    out.append(_mean(paired.dropna().values, "DFR trials beat separate ERM trials at matching bias and seed",
                     "DFR trial − ERM trial test worst-group accuracy", 1))
    return out
