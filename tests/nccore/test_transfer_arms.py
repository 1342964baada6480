"""Transfer arms (Munn et al.'s compatible vs incompatible targets) and the proximal MAS step."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from nccore.methods.mas import mas_proximal_step
from nccore.methods.transfer import class_families, split_classes
from nccore.trial import run_trial

SHAPE_FAMILIES = {c: c // 2 for c in range(10)}   # BiasedShapes fine: disk|ring, square|hollow square, ...


def test_first_arm_is_the_first_n_source_classes():
    assert split_classes(range(10), 5, "first") == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])
    with pytest.raises(ValueError, match="n_source"):
        split_classes(range(10), 10, "first")


def test_compatible_arm_puts_each_targets_sibling_in_the_source():
    src, tgt = split_classes(range(10), 4, "compatible", SHAPE_FAMILIES, n_target=3)
    # targets: the second class of families 0-2; source: their first classes, then family 3's first
    assert (src, tgt) == ([0, 2, 4, 6], [1, 3, 5])
    assert {c // 2 for c in tgt} <= {c // 2 for c in src}
    assert split_classes(range(10), 4, "compatible", SHAPE_FAMILIES) == ([0, 2, 4, 6], [1, 3, 5, 7])


def test_incompatible_arm_scores_the_same_targets_and_shares_no_family():
    src, tgt = split_classes(range(10), 4, "incompatible", SHAPE_FAMILIES, n_target=3)
    assert tgt == split_classes(range(10), 4, "compatible", SHAPE_FAMILIES, n_target=3)[1]
    assert src == [6, 8, 7, 9]                        # one class per free family in turn: 6, 8, then 7, 9
    assert not {c // 2 for c in src} & {c // 2 for c in tgt}


def test_arms_on_a_superclass_hierarchy():
    fams = {c: c // 5 for c in range(100)}            # CIFAR-100: 20 superclasses of 5
    src_c, tgt = split_classes(range(100), 10, "compatible", fams, n_target=10)
    src_i, tgt_i = split_classes(range(100), 10, "incompatible", fams, n_target=10)
    assert tgt == tgt_i == [5 * f + 1 for f in range(10)]
    assert src_c == [5 * f for f in range(10)] and src_i == [5 * f for f in range(10, 20)]


def test_arms_refuse_what_they_cannot_build():
    with pytest.raises(ValueError, match="coarse families"):
        split_classes(range(10), 4, "compatible", None)
    with pytest.raises(ValueError, match="at most 4"):
        split_classes(range(10), 5, "incompatible", SHAPE_FAMILIES, n_target=3)   # 2 free families of 2
    with pytest.raises(ValueError, match="families of ≥ 2"):
        split_classes(range(10), 4, "compatible", SHAPE_FAMILIES, n_target=6)


def test_class_families_reads_the_hierarchy_or_none():
    y, coarse = np.array([0, 1, 2, 3, 0]), np.array([0, 0, 1, 1, 0])
    assert class_families(y, coarse) == {0: 0, 1: 0, 2: 1, 3: 1}
    assert class_families(y, np.array([0, 0, 1, 1, 1])) is None   # class 0 in two families
    assert class_families(y, None) is None


@pytest.mark.parametrize("arm, shared", [("compatible", 1.0), ("incompatible", 0.0)])
def test_transfer_trial_trains_on_the_arm_source_and_scores_its_targets(arm, shared):
    rows = list(run_trial({"arch": "resnet18", "width": 0.125, "epochs": 1, "seed": 0, "method": "transfer",
                           "augment": False, "metrics": ["nc"],
                           "data": {"n_train": 400, "n_val": 100, "n_test": 300, "image_size": 16, "target": "fine"},
                           "method_options": {"episodes": 20, "n_way": 3, "n_source": 4, "n_target": 3,
                                              "target_arm": arm}}))
    te = [r for r in rows if r["split"] == "test" and r["group"] == "all"][-1]
    assert te["target_shared"] == shared and 0.0 <= te["fewshot_acc"] <= 1.0 and math.isfinite(te["target_nc1"])
    tr = [r for r in rows if r["split"] == "train" and r["group"] == "all"][-1]
    assert 0 < tr["n"] <= 400 * 4 / 10 * 1.5          # only the 4 source shapes are trained on


# ------------------------------------------------------------------ proximal MAS step
def test_mas_proximal_step_shrinks_each_weight_by_its_importance():
    lin = nn.Linear(2, 1, bias=False)
    anchor = {"weight": torch.tensor([[1.0, 1.0]])}
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 3.0]]))          # change (2, 2)
    omega = {"weight": torch.tensor([[0.0, 2.0]])}
    mas_proximal_step(lin, anchor, omega, lr=0.5, lam=1.5)
    # weight 0: Ω = 0, untouched; weight 1: 1 + 2 / (1 + 2·0.5·1.5·2) = 1 + 2/4 = 1.5
    assert lin.weight.tolist() == [[3.0, 1.5]]


def test_mas_proximal_step_minimises_the_penalised_step():
    """θ⁺ = argmin_u λ Ω (u − θ*)² + (u − θ)²/(2 lr): the gradient of that objective vanishes at θ⁺."""
    torch.manual_seed(0)
    lin = nn.Linear(3, 2)
    theta = {n: p.detach().clone() for n, p in lin.named_parameters()}
    anchor = {n: torch.randn_like(p) for n, p in lin.named_parameters()}
    omega = {n: torch.rand_like(p) * 5 for n, p in lin.named_parameters()}
    lr, lam = 0.1, 7.0
    mas_proximal_step(lin, anchor, omega, lr, lam)
    for n, p in lin.named_parameters():
        g = 2 * lam * omega[n] * (p - anchor[n]) + (p - theta[n]) / lr
        assert g.abs().max() < 1e-5


# ------------------------------------------------------------------ the change-penalty pilot's table
def test_pilot_ratios_and_matched_strengths_by_hand():
    import pandas as pd

    from analysis.studies.pilot import change_ratios, matched

    def cfg(method, lam, mode=None):
        opts = {"n_tune": 2, **({"penalty_mode": mode} if mode else {})}
        return {"method": method, "penalty": lam, "seed": 0, "method_options": opts}

    trials = [("z", cfg("change_penalty", 0.0), 2.0), ("c1", cfg("change_penalty", 1.0), 1.0),
              ("c2", cfg("change_penalty", 10.0), 0.02), ("m1", cfg("mas", 0.5, "proximal"), 1.2),
              ("m2", cfg("mas", 5.0, "proximal"), 0.3), ("m3", cfg("mas", 50.0, "proximal"), 0.05),
              ("e1", cfg("mas", 5.0), 9.0)]
    rows = pd.DataFrame([{"trial_id": t, "split": "test", "group": "all", "epoch": 3, "delta_norm": d}
                         for t, _, d in trials])
    configs = pd.DataFrame([{"trial_id": t, "trial_status": "diverged" if t == "e1" else "completed", "config": c}
                            for t, c, _ in trials])
    r = change_ratios(rows, configs).set_index(["arm", "penalty"]).ratio
    assert r[("change_penalty", 1.0)] == 0.5 and r[("mas/proximal", 5.0)] == 0.15
    assert r[("mas/explicit", 5.0)] == float("inf")                 # diverged
    # λ 1 → ratio 0.5: |log 0.6 − log 0.5| = 0.18 < |log 0.15 − log 0.5| = 1.2 → strength 0.5;
    # λ 10 → ratio 0.01: nearest 0.025 (strength 50)
    assert matched(change_ratios(rows, configs)) == {1.0: 0.5, 10.0: 50.0}


def test_gc_pilot_effects_and_matched_lambdas_by_hand():
    import pandas as pd

    from analysis.studies.pilot import gc_effects, matched_lambdas

    def row(tid, lam, arm, gc, acc):
        return {"trial_id": tid, "split": "train", "group": "all", "epoch": 9, "epochs": 10, "method": "gc_reg",
                "penalty": lam,
                "seed": 0, "target_shared": arm, "gc": gc, "acc": acc}

    rows = pd.DataFrame([row("a", 0.0, 1.0, 100.0, 0.99), row("b", 1e-3, 1.0, 80.0, 0.98), row("c", 1e-2, 1.0, 20.0, 0.60),
                         row("d", 0.0, 0.0, 50.0, 0.97), row("e", 1e-3, 0.0, 45.0, 0.97), row("f", 1e-2, 0.0, 10.0, 0.50)])
    eff = gc_effects(rows).set_index(["penalty", "arm"])
    assert eff.loc[(1e-3, 1.0), "gc_ratio"] == pytest.approx(0.8)        # 80 / 100, against its own arm's λ = 0
    assert eff.loc[(1e-3, 0.0), "gc_ratio"] == pytest.approx(0.9)        # 45 / 50
    assert eff.loc[(1e-2, 1.0), "acc_change"] == pytest.approx(-0.39)
    # λ 1e-3: median ratio 0.85 < 1, median accuracy change −0.005 ≥ −0.02 → kept; λ 1e-2 loses 0.43 → not
    assert matched_lambdas(gc_effects(rows)) == [(10, 1e-3)]
