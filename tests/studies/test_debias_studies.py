"""The debiasing studies (DFR, change-penalty).

Fast: planted trials, no training — the findings pair by seed, choose on val, and read planted
effects (including per-group ERM → DFR changes and the n × method interaction). Slow (`make
test-slow`): reduced subsets of the CPU-scale specs through the real runner; they fail when the
primary outcome or a manipulation check has no CI. Numbers: docs/studies-debias.md."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis.studies import run_study
from tests.studies.reduced import run_reduced


def _rows(trials: list[dict]) -> pd.DataFrame:
    out = []
    for i, t in enumerate(trials):
        for split in ("val", "test"):
            out.append({"trial_id": f"t{i}", "epoch": 0, "split": split, "group": "all", "status": "ok", **t,
                        "worst_group_acc": t["val_wga"] if split == "val" else t["worst_group_acc"]})
    return pd.DataFrame(out)


def test_dfr_study_pairs_by_seed_and_reads_planted_effects():
    rng = np.random.default_rng(0)
    trials = []
    for seed in range(5):
        e = 0.01 * rng.standard_normal(4)
        groups = {f"erm_acc_g{g}": a for g, a in enumerate((0.98, 0.3, 0.35, 0.97))}
        groups |= {f"dfr_acc_g{g}": a + e[g] for g, a in enumerate((0.85, 0.7, 0.72, 0.86))}
        trials.append({"method": "dfr", "seed": seed, "bias_level": 0.95, "worst_group_acc": 0.7, "val_wga": 0.7,
                       "erm_worst_group_acc": 0.3 + e[0], "dfr_l1_bal_wga": 0.7 + e[1], "dfr_l1_unbal_wga": 0.5,
                       "dfr_l2_bal_wga": 0.7 + e[2], "dfr_l1_bal_sparsity": 0.8 + e[3], "dfr_l1_unbal_sparsity": 0.8,
                       "dfr_l2_bal_sparsity": 0.0, "pointing_acc_before": 0.3 + e[1], "pointing_acc": 0.5 + e[3],
                       **groups})
        trials.append({"method": "erm", "seed": seed, "bias_level": 0.0, "worst_group_acc": 0.95 + e[0],
                       "val_wga": 0.95})
        for m, w in (("jtt", 0.5), ("groupdro", 0.3)):
            trials.append({"method": m, "seed": seed, "bias_level": 0.95, "worst_group_acc": w + e[2], "val_wga": w})
            trials.append({"method": m, "seed": seed, "bias_level": 0.95, "worst_group_acc": 0.99, "val_wga": w - 0.1})
    _, fs = run_study("dfr_last_layer", _rows(trials))
    v = {f["id"]: f for f in fs if "id" in f}
    assert v["dfr_vs_erm"]["role"] == "primary" and v["dfr_vs_erm"]["verdict"] == "supported"
    assert v["dfr_vs_erm"]["estimate"] == pytest.approx(0.4, abs=0.03) and v["dfr_vs_erm"]["n"] == 5
    assert v["minority_gain"]["estimate"] == pytest.approx(0.385, abs=0.02)
    assert v["majority_cost"]["verdict"] == "supported"                  # −0.12: the gains are uneven
    assert v["groupdro_vs_dfr"]["verdict"] == "contradicted"             # GroupDRO 0.3 < DFR 0.7 (val-chosen)
    assert v["upper_bound_above_dfr"]["role"] == "manipulation"
    assert v["saliency_shift"]["verdict"] == "inconclusive"              # no saliency columns: no CI
    assert v["pointing_gain"]["estimate"] == pytest.approx(0.2, abs=0.02) and v["pointing_gain"]["verdict"] == "supported"


def _cp_trials(small_gain: float, large_gain: float) -> list[dict]:
    trials = []
    for seed in range(5):
        for n, gain in ((2, small_gain), (16, large_gain)):
            for lam, val, test in ((0.0, 0.6, 0.60), (1.0, 0.9, 0.60 + gain + 0.01 * seed), (10.0, 0.7, 0.99),
                                   (1e4, 0.5, 0.5)):
                trials.append({"method": "change_penalty", "seed": seed, "penalty": lam, "n_tune_per_group": n,
                               "worst_group_acc": test, "val_wga": val, "delta_norm": 1.0 / (1 + lam),
                               "base_worst_group_acc": 0.5, "base_probe_wga": 0.7 if seed == 3 else 0.85})
            trials.append({"method": "mas", "seed": seed, "penalty": 1.0, "n_tune_per_group": n,
                           "worst_group_acc": 0.9, "val_wga": 0.9, "delta_norm": 0.5, "base_worst_group_acc": 0.5})
    return trials


def test_change_penalty_study_picks_the_interior_lambda_on_val():
    _, fs = run_study("change_penalty", _rows(_cp_trials(0.3, 0.1)))
    v = {f["id"]: f for f in fs if "id" in f}
    # λ = 1 is chosen on val (0.9 > 0.7) even though λ = 10 is better on test: no peeking
    assert v["interior_vs_zero"]["estimate"] == pytest.approx(0.22) and v["interior_vs_zero"]["verdict"] == "supported"
    assert v["n_interaction"]["estimate"] == pytest.approx(0.2) and v["n_interaction"]["verdict"] == "supported"
    assert v["cp_vs_mas"]["verdict"] == "contradicted"                   # 0.82 < MAS 0.9
    assert v["cp_vs_mas_matched"]["estimate"] == pytest.approx(-0.08)   # MAS's ‖Δ‖ 0.5 matches λ = 1's
    assert v["cp_vs_probe"]["estimate"] == pytest.approx(0.82 - (4 * 0.85 + 0.7) / 5)
    assert v["penalty_shrinks_change"]["verdict"] == "supported"
    pre = next(f["note"] for f in fs if "Precondition" in f.get("note", ""))
    assert "min 0.700 over 5 seeds" in pre and "NOT met, below it: seed 3)" in pre


def test_change_penalty_interaction_can_be_null():
    _, fs = run_study("change_penalty", _rows(_cp_trials(0.2, 0.2)))
    assert {f["id"]: f for f in fs if "id" in f}["n_interaction"]["verdict"] == "no effect"


# ------------------------------------------------------------------ slow: reduced CPU-scale specs
def _run(name: str, tmp_path, capsys, space=None, variants=None) -> dict[str, dict]:
    return run_reduced(name, tmp_path, capsys, space, variants)[2]


@pytest.mark.slow
def test_dfr_last_layer_reduced(tmp_path, capsys):
    """Reduced: 3 seeds, DFR and the unbiased upper bound only (6 trials of the spec's 40)."""
    v = _run("dfr_last_layer", tmp_path, capsys, space={"seed": {"grid": [0, 1, 2]}},
             variants=[{"method": "dfr"}, {"method": "erm", "bias_level": 0.0}])
    assert v["l1_sparser_than_l2"]["verdict"] == "supported"
    assert np.isfinite(v["pointing_gain"]["estimate"])               # the pointing game reached the rows


@pytest.mark.slow
def test_change_penalty_reduced(tmp_path, capsys):
    """Reduced: 3 seeds, the spec's fewest and most counterexamples (n ∈ {2, 16}), λ ∈ {0, 2, 2000}
    (18 trials of the spec's 390)."""
    grid = yaml.safe_load(Path("sweeps/specs/change_penalty.yaml").read_text())["space"]["method_options"]["grid"]
    v = _run("change_penalty", tmp_path, capsys, space={"seed": {"grid": [0, 1, 2]},
                                                "method_options": {"grid": [grid[0], grid[-1]]}},
             variants=[{"method": "change_penalty", "penalty": {"grid": [0.0, 2.0, 2000.0]}}])
    assert v["penalty_shrinks_change"]["verdict"] == "supported"


def test_group_accuracies_of_the_dfr_heads():
    from nccore.methods.dfr import group_accuracies

    y = np.array([0, 0, 1, 1, 1, 0])
    pred = np.array([0, 1, 1, 0, 1, 0])
    g = np.array([0, 0, 2, 2, 3, 1])                  # group 2: one of two right; group 3: one of one
    assert group_accuracies("erm", y, pred, g) == {"erm_acc_g0": 0.5, "erm_acc_g1": 1.0, "erm_acc_g2": 0.5,
                                                   "erm_acc_g3": 1.0}
