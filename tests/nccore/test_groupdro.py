"""GroupDRO's exponentiated-gradient group weights, checked by hand."""
import math

import pytest
import torch

from nccore.methods.groupdro import group_losses, update_group_weights


def test_one_step_by_hand():
    # q = (1/2, 1/2), group losses (1, 0), η = ln 2: q ∝ (½·2, ½·1) → (2/3, 1/3)
    q = update_group_weights(torch.tensor([0.5, 0.5], dtype=torch.float64), torch.tensor([1.0, 0.0],
                             dtype=torch.float64), math.log(2))
    assert q.tolist() == pytest.approx([2 / 3, 1 / 3], abs=1e-12)
    # second step with losses (0, 2): q ∝ (2/3, 1/3·4) → (1/3, 2/3)
    q = update_group_weights(q, torch.tensor([0.0, 2.0], dtype=torch.float64), math.log(2))
    assert q.tolist() == pytest.approx([1 / 3, 2 / 3], abs=1e-12)


def test_equal_group_losses_keep_the_weights_uniform():
    q = torch.full((4,), 0.25, dtype=torch.float64)
    for _ in range(5):
        q = update_group_weights(q, torch.full((4,), 0.7, dtype=torch.float64), 0.3)
    assert q.tolist() == pytest.approx([0.25] * 4, abs=1e-12)


def test_group_losses_average_within_groups_and_zero_for_absent():
    per = torch.tensor([1.0, 3.0, 5.0, 2.0])
    g = torch.tensor([0, 0, 2, 2])
    assert group_losses(per, g, 4).tolist() == [2.0, 0.0, 3.5, 0.0]


def test_groupdro_trial_runs_with_group_ids_per_batch():
    from nccore.trial import run_trial

    rows = list(run_trial({"method": "groupdro", "arch": "vgg11", "width": 0.125, "epochs": 1, "bias_level": 0.9,
                           "metrics": ["fairness"], "batch_size": 64, "method_options": {"eta": 0.1},
                           "data": {"n_train": 256, "n_val": 64, "n_test": 64, "image_size": 8}}))
    te = [r for r in rows if r["split"] == "test" and r["group"] == "all"][-1]
    assert 0.25 < te["gdro_max_weight"] <= 1.0 and te["gdro_max_group"] in range(4)   # q moved off uniform
