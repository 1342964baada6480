"""Group fairness and robustness metrics, fairlearn-compatible.

Inputs: y_true (N,), y_pred (N,) hard predictions, groups (N,) group ids. Binary confusion
quantities (TPR, FPR, F1, selection rate) treat `pos_label` (default 1) as the positive class, so
on a multiclass task they are one-vs-rest for that class; accuracies are exact for any task.
Groups with no samples do not appear. A rate whose denominator is 0 is NaN (with a warning) and
is left out of the between-group ranges.
"""
from __future__ import annotations

import warnings

import numpy as np

from ._util import NAN, as_numpy, undefined


def _rate(num: int, den: int, what: str, group) -> float:
    return num / den if den > 0 else undefined(f"{what} of group {group}: denominator is 0")


def group_metrics(y_true, y_pred, groups, pos_label: int = 1, zero_division: float = NAN) -> dict[int, dict]:
    """Per group g: n, acc, tpr = TP/(TP+FN), fpr = FP/(FP+TN), precision, f1 = 2TP/(2TP+FP+FN),
    selection_rate = (TP+FP)/n. F1 is `zero_division` when 2TP+FP+FN = 0 (sklearn's argument)."""
    yt, yp, g = as_numpy(y_true).ravel(), as_numpy(y_pred).ravel(), as_numpy(groups).ravel()
    if not (len(yt) == len(yp) == len(g)):
        raise ValueError(f"y_true, y_pred and groups differ in length: {len(yt)}, {len(yp)}, {len(g)}")
    out = {}
    for grp in np.unique(g):
        m = g == grp
        t, p = yt[m] == pos_label, yp[m] == pos_label
        tp, fp = int(np.sum(t & p)), int(np.sum(~t & p))
        fn, tn = int(np.sum(t & ~p)), int(np.sum(~t & ~p))
        n = int(m.sum())
        out[int(grp)] = {
            "n": n,
            "acc": float(np.mean(yt[m] == yp[m])),
            "tpr": _rate(tp, tp + fn, "TPR", grp),
            "fpr": _rate(fp, fp + tn, "FPR", grp),
            "precision": tp / (tp + fp) if tp + fp > 0 else zero_division,
            "f1": 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn > 0 else zero_division,
            "selection_rate": (tp + fp) / n,
        }
    return out


def _range(per_group: dict, key: str) -> float:
    vals = [m[key] for m in per_group.values() if not np.isnan(m[key])]
    if len(vals) == 0:
        return undefined(f"{key} is undefined in every group")
    if len(per_group) == 1:
        warnings.warn("only one group present: between-group differences are 0.0", RuntimeWarning, stacklevel=3)
    return float(max(vals) - min(vals))


def _ratio(per_group: dict, key: str) -> float:
    vals = [m[key] for m in per_group.values() if not np.isnan(m[key])]
    if len(vals) == 0 or max(vals) == 0:
        return NAN
    return float(min(vals) / max(vals))


def worst_group_accuracy(y_true, y_pred, groups) -> float:
    """min_g acc_g over the groups present."""
    yt, yp, g = as_numpy(y_true).ravel(), as_numpy(y_pred).ravel(), as_numpy(groups).ravel()
    if len(yt) == 0:
        return undefined("no samples")
    return float(min(np.mean(yt[g == k] == yp[g == k]) for k in np.unique(g)))


def demographic_parity_difference(y_true, y_pred, groups, pos_label: int = 1) -> float:
    """max_g selection_rate_g - min_g selection_rate_g (fairlearn's definition)."""
    return _range(group_metrics(y_true, y_pred, groups, pos_label), "selection_rate")


def equalized_odds_difference(y_true, y_pred, groups, agg: str = "worst_case", pos_label: int = 1) -> float:
    """max(TPR range, FPR range) for agg="worst_case", their mean for agg="mean" (fairlearn PR #960)."""
    pg = group_metrics(y_true, y_pred, groups, pos_label)
    return _combine(_range(pg, "tpr"), _range(pg, "fpr"), agg)


def _combine(a: float, b: float, agg: str) -> float:
    if agg == "worst_case":
        return float(np.nanmax([a, b])) if not (np.isnan(a) and np.isnan(b)) else NAN
    if agg == "mean":
        return float(np.nanmean([a, b])) if not (np.isnan(a) and np.isnan(b)) else NAN
    raise ValueError(f"agg={agg!r}: expected 'worst_case' or 'mean'")


def fairness_summary(y_true, y_pred, groups, pos_label: int = 1) -> dict:
    """Every scalar fairness metric in one dict (the columns a trial row carries):
    avg_acc (sample-weighted), mean_group_acc, worst_group_acc, gap = avg_acc - worst_group_acc,
    gap_maxmin, dp_diff, dp_ratio, eo_diff (worst case), eo_diff_mean, eo_ratio, tpr_gap, fpr_gap."""
    yt, yp = as_numpy(y_true).ravel(), as_numpy(y_pred).ravel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # per-rate NaNs are expected in small groups
        pg = group_metrics(yt, yp, groups, pos_label)
        accs = [m["acc"] for m in pg.values()]
        avg = float(np.mean(yt == yp)) if len(yt) else NAN
        tpr_gap, fpr_gap = _range(pg, "tpr"), _range(pg, "fpr")
        return {
            "avg_acc": avg,
            "mean_group_acc": float(np.mean(accs)),
            "worst_group_acc": float(min(accs)),
            "gap": avg - float(min(accs)),
            "gap_maxmin": float(max(accs) - min(accs)),
            "dp_diff": _range(pg, "selection_rate"),
            "dp_ratio": _ratio(pg, "selection_rate"),
            "eo_diff": _combine(tpr_gap, fpr_gap, "worst_case"),
            "eo_diff_mean": _combine(tpr_gap, fpr_gap, "mean"),
            "eo_ratio": float(np.nanmin([_ratio(pg, "tpr"), _ratio(pg, "fpr")])),
            "tpr_gap": tpr_gap,
            "fpr_gap": fpr_gap,
        }
