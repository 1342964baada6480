"""The collapse studies (NC-fairness, fine-structure, GC-transfer).

Fast: the pieces their findings rest on, each with a hand-checkable number (memorisation, the GC
penalty, the untrained baseline, the partial rank correlation), and each study's primary outcome
read "supported" on planted rows and "contradicted" on reversed ones. The GPU specs validate once
their data files exist. Slow (`make test-slow`): reduced subsets of the CPU-scale specs through the
real runner; they fail when the primary outcome or a manipulation check has no CI. Numbers:
docs/studies-collapse.md.
"""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from analysis.studies import run_study, study_sections
from analysis.studies.common import rank_est
from nccore.evaluate import memorisation
from nccore.methods.gc_reg import gc_penalty
from tests.studies.reduced import run_reduced


# ------------------------------------------------------------------------------------ fast
def test_partial_rank_correlation_removes_a_common_cause():
    rng = np.random.default_rng(0)
    z = rng.normal(size=400)
    x, y = z + 0.3 * rng.normal(size=400), z + 0.3 * rng.normal(size=400)
    assert np.corrcoef(x, y)[0, 1] > 0.8
    r = rank_est(x, y, z)
    lo, hi = r.ci()
    assert abs(r.value) < 0.15 and lo < 0 < hi and r.n == 400
    assert rank_est(x + y, y, z).ci()[0] > 0.3       # a real link survives the adjustment


def test_memorisation_counts_flipped_samples_predicted_as_their_flipped_label():
    pred = np.array([0, 0, 1, 1, 0, 1])
    y_obs = np.array([0, 0, 0, 1, 0, 1])        # rows 1, 2, 4 were flipped 1 → 0
    y_clean = np.array([0, 1, 1, 1, 1, 1])
    flipped = y_obs != y_clean
    m = memorisation(pred, y_obs, y_clean, flipped)
    assert m == {"memorisation": 2 / 3, "flipped_acc_clean": 1 / 3, "n_flipped": 3}
    assert memorisation(pred, y_obs, y_obs, np.zeros(6, bool)) == {}


def test_gc_penalty_of_a_linear_map_is_its_squared_frobenius_norm():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    x = torch.zeros(20000, 2, requires_grad=True)
    pen = gc_penalty(x @ a.T, x, torch.Generator().manual_seed(0))
    assert abs(float(pen) - 30.0) < 0.6          # ‖A‖²_F = 30; one probe gives 30 ± 22 per sample
    pen.backward()                               # differentiable in the weights: ∂‖A‖²_F/∂A = 2A
    assert torch.allclose(a.grad, 2 * a.detach(), atol=0.3)


def test_untrained_baseline_takes_no_step():
    from nccore.trial import prepare

    cfg, data, model, method, loader, _ = prepare({"method": "untrained", "arch": "resnet18", "width": 0.0625,
                                                    "epochs": 1, "device": "cpu", "batch_size": 16,
                                                    "data": {"n_train": 32, "n_val": 8, "n_test": 8,
                                                             "image_size": 8}})
    before = [p.detach().clone() for p in model.parameters()]
    method.train_mode()
    for x, y in loader:
        method.update(x, y)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def _planted_fairness_rows(sign: float) -> pd.DataFrame:
    """Trials at bias 0 / 0.25 / 0.5 × 5 seeds, 6 epochs; the biased subgroup's early alignment
    gap, F1, TPR and NC1 move with `sign`; the gap closes by the last epoch."""
    rows = []
    rng = np.random.default_rng(1)
    for i, (b, seed) in enumerate([(b, s) for b in (0.0, 0.25, 0.5) for s in range(5)]):
        for epoch in range(6):
            noise = 0.01 * rng.standard_normal()
            base = dict(trial_id=f"t{i}", epoch=epoch, bias_level=b, seed=seed, arch="resnet18", status="ok")
            rows.append({**base, "split": "train", "group": "all", "acc": 1.0, "nc1": 0.1,
                         "memorisation": (0.2 + 0.1 * epoch) if b > 0 else np.nan})
            for g in ("0", "1"):
                early = epoch < 3
                align = 0.9 - (sign * b * 0.8 * early + noise if g == "1" else 0.0)
                nc = 0.1 + (sign * b * 0.5 + noise if g == "1" else 0.0)
                rows.append({**base, "split": "train", "group": g, "nc1": nc, "nc1_clean": nc, "align_cos": align,
                             "nc1_cb": 2 * nc, "nc1_cb_clean": 2 * nc})
                tpr = 0.9 - (sign * b + noise if g == "1" else 0.0)
                rows.append({**base, "split": "test", "group": g, "tpr": tpr, "f1": tpr})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("sign, want", [(1, "supported"), (-1, "contradicted")])
def test_nc_fairness_primary_follows_planted_effects_either_way(sign, want):
    name, fs = run_study("nc_fairness_label_bias", _planted_fairness_rows(sign))
    v = {f["id"]: f for f in fs if "id" in f}
    assert name == "nc_fairness" and v["early_alignment_gap"]["role"] == "primary"
    assert v["early_alignment_gap"]["verdict"] == want and v["f1_gap_slope"]["verdict"] == want
    assert v["alignment_convergence"]["verdict"] == want
    assert v["nc1_cb_gap_slope"]["verdict"] == want and v["nc1_cb_clean_gap_slope"]["estimate"] == pytest.approx(
        sign * 1.0, abs=0.05)                                         # 2 × the planted 0.5 per unit of bias
    assert v["memorisation_rise"]["role"] == "manipulation" and v["memorisation_rise"]["verdict"] == "supported"
    assert v["tpr_biased_slope"]["verdict"] == ("supported" if sign > 0 else "contradicted")


def test_drop_control_removes_the_positives_the_flip_would_relabel():
    from nccore.data import build_dataset

    opts = {"n_train": 400, "n_val": 100, "n_test": 100, "image_size": 8}
    flip = build_dataset("biased_shapes", opts, 0.5, "label", "sensitive", seed=3).splits["train"]
    drop = build_dataset("biased_shapes", opts, 0.5, "drop", "sensitive", seed=3).splits["train"]
    n_flipped = int(flip.flipped.sum())
    assert n_flipped > 50 and len(drop) == len(flip) - n_flipped
    assert bool((drop.y == drop.y_clean).all())                       # no label changed
    pos_a1 = lambda s: int(((s.a == 1) & (s.y_clean == 1)).sum())     # noqa: E731
    assert pos_a1(drop) == pos_a1(flip) - n_flipped


def test_label_noise_vs_imbalance_reads_the_difference_of_slopes():
    rows = _planted_fairness_rows(1.0)
    drop = rows[rows.bias_level > 0].copy()
    drop["trial_id"] = "d" + drop.trial_id
    g1 = (drop.split == "test") & (drop.group == "1")
    drop.loc[g1, "f1"] = 0.9                                          # dropping leaves F1(a=1) alone
    rows = pd.concat([rows.assign(bias_kind="label"), drop.assign(bias_kind="drop")])
    _, fs = run_study("nc_fairness_label_bias", rows)
    v = {f["id"]: f for f in fs if "id" in f}
    assert v["label_noise_vs_imbalance"]["estimate"] == pytest.approx(1.0, abs=0.05)
    assert v["label_noise_vs_imbalance"]["verdict"] == "supported"
    assert v["f1_gap_slope"]["n"] == 15                               # the claims read the flip arm only


def _planted_fine_rows(gain: float) -> pd.DataFrame:
    rows = []
    i = 0
    for arch in ("resnet18", "densenet121", "vgg11"):
        for seed in range(5):
            arms = [("untrained", True, 0.05, 5e-4), ("erm", False, 0.05, 5e-4)] + \
                   [("erm", True, lr, wd) for lr in (0.01, 0.1) for wd in (5e-5, 5e-3)]
            for method, coarse, lr, wd in arms:
                nmi = 0.3 + (gain if method == "erm" else 0.0) + 0.005 * seed
                base = dict(trial_id=f"t{i}", arch=arch, seed=seed, method=method, coarse=coarse, lr=lr,
                            weight_decay=wd, status="ok")
                for epoch in (0, 1):
                    rows.append({**base, "epoch": epoch, "split": "train", "group": "all", "acc": 1.0,
                                 "nc1": 1.0 if epoch == 0 else 0.1})
                    rows.append({**base, "epoch": epoch, "split": "test", "group": "all", "fine_nmi": nmi,
                                 "fine_nmi_chance": 0.01, "fine_probe_acc": 0.5 + nmi / 2})
                i += 1
    return pd.DataFrame(rows)


@pytest.mark.parametrize("gain, want", [(0.2, "supported"), (-0.2, "contradicted"), (0.0, "no effect")])
def test_fine_structure_primary_reads_the_planted_gain(gain, want):
    _, fs = run_study("fine_grained_coarse", _planted_fine_rows(gain))
    v = {f["id"]: f for f in fs if "id" in f}
    assert v["nmi_gain"]["verdict"] == want and v["nmi_gain"]["n"] == 15
    assert v["coarse_collapse"]["verdict"] == "supported"


# ------------------------------------------------------------------------------------ slow
def _run(name: str, tmp_path, capsys, space=None, variants=None) -> dict[str, dict]:
    """`run_reduced`, and the report's study section shows its figures and primary outcome."""
    raw, rows, v = run_reduced(name, tmp_path, capsys, space, variants)
    (heading, body, md), = study_sections(name, {"rows": rows, "manifests": [{"spec": raw}]})
    assert body.count("<img") >= 2 and "primary outcome" in body
    return v


@pytest.mark.slow
def test_nc_fairness_label_bias_reduced(tmp_path, capsys):
    """Reduced: flip rates 0 and 0.5 and drop rate 0.5, × 3 seeds (9 trials of the spec's 35)."""
    v = _run("nc_fairness_label_bias", tmp_path, capsys, space={"seed": {"grid": [0, 1, 2]}},
             variants=[{"bias_kind": "label", "bias_level": {"grid": [0.0, 0.5]}},
                       {"bias_kind": "drop", "bias_level": {"grid": [0.5]}}])
    assert v["tpr_biased_slope"]["verdict"] == "supported"
    assert np.isfinite(v["nc1_cb_gap_slope"]["estimate"])          # the class-balanced NC1 reached the rows


@pytest.mark.slow
def test_fine_structure_reduced(tmp_path, capsys):
    """Reduced: resnet18 and vgg11, 2 seeds, lr {0.01, 0.1} at wd 5e-4 (16 trials of the spec's 90)."""
    _run("fine_grained_coarse", tmp_path, capsys, space={"arch": {"grid": ["resnet18", "vgg11"]}, "seed": {"grid": [0, 1]}},
         variants=[{"coarse": True, "method": "erm", "lr": {"grid": [0.01, 0.1]}},
                   {"coarse": True, "method": "untrained", "epochs": 1},
                   {"coarse": False, "method": "erm"}])


@pytest.mark.slow
def test_gc_transfer_reduced(tmp_path, capsys):
    """Reduced: both target arms × (the causal arm λ ∈ {0, 1e-2} at seeds 0-2, and the equal-step arm
    lr {0.01, 0.2} × batch {32, 64} at seed 0): 20 trials of the spec's 160; λ 1e-2 at 10 epochs, not the
    spec's 1e-3 at 20, to keep the test short: it tests the machinery, not the claim)."""
    raw = yaml.safe_load(Path("sweeps/specs/gc_transfer.yaml").read_text())
    space = {**raw["space"], "seed": {"grid": [0, 1, 2]}}
    variants = [{"penalty": {"grid": [0.0, 0.01]}},
                {"lr": {"grid": [0.01, 0.2]}, "batch_size": 32, "epochs": 8, "seed": 0},
                {"lr": {"grid": [0.01, 0.2]}, "batch_size": 64, "epochs": 16, "seed": 0}]
    v = _run("gc_transfer", tmp_path, capsys, space=space, variants=variants)
    assert v["gc_exact_agreement"]["estimate"] > 0.9                # the 8-probe estimate ranks as the exact GC
    assert np.isfinite(v["gc_norm_fewshot_rank"]["estimate"])
    assert np.isfinite(v["arm_gc_fewshot_diff"]["estimate"])         # both arms ran and are told apart


def _planted_gc_rows(sign: float) -> pd.DataFrame:
    """25 trials: few-shot accuracy falls (sign 1) or rises (sign −1) with the normalised GC; the raw
    GC is the normalised one times an unrelated feature scale; the exact GC is the estimate ± 1%."""
    rng = np.random.default_rng(2)
    rows = []
    for i in range(25):
        gn = rng.uniform(1, 2)
        gc = gn * rng.uniform(1, 100)
        base = dict(trial_id=f"t{i}", epoch=0, status="ok", method="erm", seed=i, lr=0.05, batch_size=32, epochs=8,
                    penalty=0.0, split="train", group="all", acc=rng.uniform(0.9, 1.0), n=500)
        rows.append({**base, "gc": gc, "gc_norm": gn, "gc_exact": gc * rng.uniform(0.99, 1.01),
                     "fewshot_acc": 0.8 - sign * 0.2 * gn + 0.01 * rng.standard_normal(), "target_nc1": 1.0})
    return pd.DataFrame(rows)


def _planted_arm_rows(slope_compatible: float, slope_incompatible: float, gap: float) -> pd.DataFrame:
    """2 arms × 30 trials (6 seeds × 5): few-shot accuracy = level − slope·GC + noise, the compatible
    arm `gap` above the incompatible one."""
    rng = np.random.default_rng(3)
    rows = []
    for arm, slope, level in ((1.0, slope_compatible, 0.6 + gap), (0.0, slope_incompatible, 0.6)):
        for i in range(30):
            gc = rng.uniform(1, 2)
            rows.append(dict(trial_id=f"a{arm:g}t{i}", epoch=0, status="ok", method="gc_reg", seed=i % 6, lr=0.05,
                             batch_size=32, epochs=8, penalty=0.0, split="train", group="all",
                             acc=rng.uniform(0.9, 1.0), n=400, gc=gc, gc_norm=gc, target_nc1=1.0, target_shared=arm,
                             fewshot_acc=level - slope * 0.2 * gc + 0.005 * rng.standard_normal()))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("slopes, want", [((1, 0), "supported"), ((0, 1), "contradicted")])
def test_arm_difference_reads_which_arm_carries_the_gc_link(slopes, want):
    decl = {"name": "gc_transfer", "primary": {"gc_fewshot_rank": {"direction": "negative", "margin": 0.1}},
            "secondary": {"arm_gc_fewshot_diff": {"direction": "negative", "margin": 0.1}},
            "manipulation": {"arm_fewshot_gap": {"direction": "positive"}}}
    _, fs = run_study("gc_transfer", _planted_arm_rows(*slopes, gap=0.1), decl)
    v = {f["id"]: f for f in fs if "id" in f}
    assert v["arm_gc_fewshot_diff"]["verdict"] == want and v["arm_gc_fewshot_diff"]["role"] == "secondary"
    # the gap by hand: per seed, compatible − incompatible mean few-shot accuracy
    t = _planted_arm_rows(*slopes, gap=0.1)
    by = t.groupby(["seed", "target_shared"]).fewshot_acc.mean().unstack()
    assert v["arm_fewshot_gap"]["estimate"] == pytest.approx(float((by[1.0] - by[0.0]).mean()))
    assert v["arm_fewshot_gap"]["role"] == "manipulation"


def test_arm_findings_have_no_estimate_without_two_arms():
    t = _planted_arm_rows(1, 0, gap=0.1)
    _, fs = run_study("gc_transfer", t[t.target_shared == 1].drop(columns="target_shared"))
    v = {f["id"]: f for f in fs if "id" in f}
    assert np.isnan(v["arm_gc_fewshot_diff"]["estimate"]) and np.isnan(v["arm_fewshot_gap"]["estimate"])


@pytest.mark.parametrize("sign, want", [(1, "supported"), (-1, "contradicted")])
def test_gc_norm_finding_reads_the_planted_link_and_exact_agreement_is_descriptive(sign, want):
    _, fs = run_study("gc_transfer", _planted_gc_rows(sign))
    v = {f["id"]: f for f in fs if "id" in f}
    assert v["gc_norm_fewshot_rank"]["role"] == "secondary" and v["gc_norm_fewshot_rank"]["verdict"] == want
    assert v["gc_exact_agreement"]["role"] == "descriptive" and v["gc_exact_agreement"]["estimate"] > 0.95
