"""Collapse studies: NC-fairness (Mouheb et al.), fine-structure (Yang et al.), GC-transfer (Munn et al.)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..compare import mean_ci
from .common import _mean, _rho, _trials, finding, slope_ci
from .registry import study


@study("nc_fairness_label_bias")
def nc_fairness(result: dict) -> list[dict]:
    t = _trials(result, ["test_tpr_g1", "test_tpr_g0", "test_f1_g1", "train_nc1_g0", "train_nc1_g1"])
    out = [finding("the biased subgroup's test TPR falls as the label-bias rate rises",
                   "slope of test TPR (a=1) on bias_level", *slope_ci(t.bias_level, t.test_tpr_g1)[:3], -1, len(t)),
           finding("its test F1 falls too", "slope of test F1 (a=1) on bias_level",
                   *slope_ci(t.bias_level, t.test_f1_g1)[:3], -1, len(t))]
    biased = t[t.bias_level > 0]
    d = biased.train_nc1_g1 - biased.train_nc1_g0
    m, lo, hi, n = mean_ci(d)
    sign = 1 if m >= 0 else -1   # "differs": either sign counts; the CI must exclude 0
    out.append(finding("per-subgroup train NC1 differs between the groups under bias",
                       "mean NC1(a=1) − NC1(a=0), biased trials", m, lo, hi, sign, n))
    rows = result["rows"]
    tr = rows[(rows.split == "train") & (rows.group.isin(["0", "1"])) & rows.get("bias_level", 0).gt(0)]
    if "axis_cos" in tr:
        piv = tr.pivot_table(index=["trial_id", "epoch"], columns="group", values="axis_cos")
        first = piv.groupby(level=0).head(1)
        d0 = (first["1"] - first["0"]).abs()
        last = piv.groupby(level=0).tail(1)
        d1 = (last["1"] - last["0"]).abs()
        out.append(_mean(d0.values, "the groups' class-mean axes align differently early in training",
                         "|axis_cos(a=1) − axis_cos(a=0)| at the first epoch", 1))
        out.append(_mean(d0.values - d1.values, "and converge later", "first-epoch minus final-epoch |difference|", 1))
    return out


@study("fine_grained_coarse")
def fine_grained(result: dict) -> list[dict]:
    t = _trials(result, ["test_fine_nmi", "test_fine_nmi_chance", "test_fine_probe_acc"])
    t = t.assign(excess=t.test_fine_nmi - t.test_fine_nmi_chance)
    out = []
    for arch in sorted(t.arch.unique()):
        s = t[t.arch == arch]
        out.append(_mean(s.excess, f"{arch} keeps fine structure (NMI above its permutation baseline)",
                         f"{arch}: fine NMI − chance NMI", 1))
        out.append(_mean(s.test_fine_probe_acc - 0.5, f"{arch}: a linear probe recovers fine labels beyond the "
                         "coarse-only ceiling (0.5)", f"{arch}: probe accuracy − 0.5", 1))
    vgg, rest = t[t.arch.str.startswith("vgg")], t[~t.arch.str.startswith("vgg")]
    if len(vgg) and len(rest):
        diff = rest.groupby(["lr", "weight_decay"]).excess.mean() - vgg.groupby(["lr", "weight_decay"]).excess.mean()
        out.append(_mean(diff.dropna().values, "VGG keeps less fine structure than ResNet/DenseNet",
                         "mean excess NMI (ResNet, DenseNet) − VGG at matching lr, wd", 1))
    for axis in ("lr", "weight_decay"):
        s, lo, hi, n = slope_ci(np.log10(t[axis]), t.test_fine_probe_acc)
        sign = 1 if s >= 0 else -1
        out.append(finding(f"recovery depends on {axis}", f"slope of probe accuracy on log10 {axis}", s, lo, hi, sign, n))
    return out


@study("gc_transfer")
def gc_transfer(result: dict) -> list[dict]:
    t = _trials(result, ["train_gc", "test_fewshot_acc", "test_target_nc1", "test_target_cdnv"], rule="final")
    return [_rho(t.train_gc, t.test_fewshot_acc, "lower source GC goes with higher few-shot accuracy",
                 "Spearman ρ(GC, 5-way 5-shot NCM accuracy)", -1),
            _rho(t.train_gc, t.test_target_nc1, "lower source GC goes with lower NC1 on new classes",
                 "Spearman ρ(GC, target NC1)", 1),
            _rho(t.test_target_nc1, t.test_fewshot_acc, "more target collapse goes with higher few-shot accuracy",
                 "Spearman ρ(target NC1, few-shot accuracy)", -1)]
