"""Slow: each shipped study, reduced, run through the real runner and report code; the direction
of its published finding is asserted where it is robust at this scale (see each test's note).
Run with `make test-slow` (CI runs it after the default suite)."""
from pathlib import Path

import pytest
import yaml

from analysis.report import analyse
from analysis.studies import STUDIES
from sweeps.runner import run_sweep
from sweeps.spec import parse_spec

pytestmark = pytest.mark.slow


def reduced(name: str, space=None, base=None, options=None, variants=None) -> dict:
    raw = yaml.safe_load(Path(f"sweeps/specs/{name}.yaml").read_text())
    raw["base"].update(base or {})
    raw["dataset"]["options"].update(options or {})
    if space is not None:
        raw["space"] = space
    if variants is not None:
        raw["variants"] = variants
    return raw


def findings(name: str, raw: dict, tmp_path) -> dict[str, dict]:
    out = tmp_path / name
    run_sweep(parse_spec(raw), out, quiet=True)
    res = analyse(out, "final")
    return {f["expected"]: f for f in STUDIES[name](res)}


def _print(fs):
    for f in fs.values():
        print(f"{f['expected']}: {f['estimate']:+.3f} [{f['ci_low']:+.3f}, {f['ci_high']:+.3f}] -> {f['verdict']}")


def test_dfr_last_layer_raises_worst_group_accuracy_and_sparsity(tmp_path):
    raw = reduced("dfr_last_layer", space={"method": {"grid": ["erm", "dfr"]}, "bias_level": {"grid": [0.9, 0.95]},
                                           "seed": {"grid": [0, 1]}})
    fs = findings("dfr_last_layer", raw, tmp_path)
    _print(fs)
    assert fs["DFR raises worst-group accuracy over ERM"]["verdict"] == "matches"
    assert fs["last-layer sparsity rises after DFR"]["verdict"] == "matches"


def test_change_penalty_large_lambda_keeps_the_model_and_the_task(tmp_path):
    """Robust at this scale: a large λ keeps ‖Δ‖ small and the original (biased-distribution) task
    accuracy high. Not asserted: that small λ fixes the bias — on BiasedShapes the unpenalised
    tuning flips the colour shortcut instead (see the study report and bench/RESULTS.md)."""
    from analysis.studies import _trials

    raw = reduced("change_penalty", space={"seed": {"grid": [0, 1]}},
                  variants=[{"method": "change_penalty", "penalty": {"grid": [0.0, 100.0]}}])
    out = tmp_path / "cp"
    run_sweep(parse_spec(raw), out, quiet=True)
    t = _trials(analyse(out, "final"), ["val_acc", "test_delta_norm"], rule="final")
    by = t.groupby("penalty")[["val_acc", "test_delta_norm"]].mean()
    print(by)
    assert by.loc[100.0, "test_delta_norm"] < 0.7 * by.loc[0.0, "test_delta_norm"]
    assert by.loc[100.0, "val_acc"] > by.loc[0.0, "val_acc"]


def test_nc_fairness_label_bias_lowers_subgroup_tpr_and_splits_its_collapse(tmp_path):
    """Asserted with its CI: the biased subgroup's TPR falls with the flip rate. Asserted by sign only
    (its CI needs the full study's 18 biased trials): NC1 of the biased subgroup exceeds the other's."""
    raw = reduced("nc_fairness_label_bias", space={"arch": {"grid": ["resnet18"]},
                                                   "bias_level": {"grid": [0.0, 0.25, 0.5]}, "seed": {"grid": [0, 1, 2]}})
    fs = findings("nc_fairness_label_bias", raw, tmp_path)
    _print(fs)
    assert fs["the biased subgroup's test TPR falls as the label-bias rate rises"]["verdict"] == "matches"
    assert fs["per-subgroup train NC1 differs between the groups under bias"]["estimate"] > 0


def test_gc_transfer_lower_gc_goes_with_higher_fewshot_accuracy(tmp_path):
    """Asserted: the sign of Spearman ρ(GC, few-shot accuracy) over 6 pre-training settings (the CI
    needs the full study's 18). Not asserted: GC vs target NC1, inconclusive at this scale."""
    raw = reduced("gc_transfer", space={"lr": {"grid": [0.01, 0.03, 0.1]}, "batch_size": {"grid": [32, 128]}},
                  base={"epochs": 4, "method_options": {"n_source": 5, "n_way": 5, "k_shot": 5, "episodes": 100}})
    fs = findings("gc_transfer", raw, tmp_path)
    _print(fs)
    assert fs["lower source GC goes with higher few-shot accuracy"]["estimate"] < 0


def test_fine_grained_coarse_training_keeps_fine_structure(tmp_path):
    """Asserted per trial (it held in all 12 trials of the full study): k-means NMI of the fine
    labels above 3× its permutation baseline and a linear probe above the coarse-only ceiling.
    Not asserted: that VGG keeps less than ResNet/DenseNet — it did not at this scale."""
    from analysis.studies import _trials

    raw = reduced("fine_grained_coarse", space={"arch": {"grid": ["resnet18", "vgg11"]}, "lr": {"grid": [0.1]},
                                                "weight_decay": {"grid": [5.0e-4]}})
    out = tmp_path / "fine"
    run_sweep(parse_spec(raw), out, quiet=True)
    t = _trials(analyse(out, "final"), ["test_fine_nmi", "test_fine_nmi_chance", "test_fine_probe_acc"])
    print(t[["arch", "test_fine_nmi", "test_fine_nmi_chance", "test_fine_probe_acc"]])
    assert (t.test_fine_nmi > 3 * t.test_fine_nmi_chance).all()
    assert (t.test_fine_probe_acc > 0.7).all()
