"""nccore.metrics: neural collapse, fairness, fine-structure, geometric complexity, sparsity.

All functions take torch tensors (any device) or NumPy arrays, reduce in float64 and return
Python floats or dicts of floats. Undefined values are NaN with a RuntimeWarning naming why.
"""
from .collapse import CollapseStats, nc_metrics, nc_metrics_by_group, subgroup_alignment  # noqa: F401
from .fairness import (demographic_parity_difference, equalized_odds_difference,  # noqa: F401
                       fairness_summary, group_metrics, worst_group_accuracy)
from .fine import fine_recovery, linear_probe_accuracy  # noqa: F401
from .geometry import geometric_complexity  # noqa: F401
from .sparsity import hoyer_sparsity, weight_sparsity  # noqa: F401
