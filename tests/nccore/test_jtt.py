"""JTT's error set and upsampling on constructed cases; λ_up = 1 is ERM."""
import numpy as np
import torch
from torch import nn

from nccore.methods.jtt import error_set, upsample_indices
from nccore.trial import run_trial


def test_a_model_reading_the_spurious_feature_errs_exactly_on_the_minority_group():
    # features (core, spurious); labels y; the minority group is where spurious ≠ label
    y = torch.tensor([0, 0, 0, 1, 1, 1, 0, 1])
    sp = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0])          # last two rows contradict the bias
    x = torch.stack([2 * y - 1, 2 * sp - 1], 1).float()
    model = nn.Linear(2, 2)
    with torch.no_grad():                                # logits (−s, +s): reads the spurious coordinate only
        model.weight.copy_(torch.tensor([[0.0, -1.0], [0.0, 1.0]]))
        model.bias.zero_()
    err = error_set(model, x, y)
    assert err.nonzero().flatten().tolist() == [6, 7]


def test_upsampling_repeats_each_error_upweight_times_in_total():
    idx = upsample_indices(np.array([False, True, False, True]), upweight=3)
    assert np.bincount(idx).tolist() == [1, 3, 1, 3]
    assert upsample_indices(np.array([True, False]), upweight=1).tolist() == [0, 1]


def test_upweight_one_is_exactly_erm():
    cfg = {"arch": "vgg11", "width": 0.125, "epochs": 1, "bias_level": 0.9, "metrics": ["fairness"], "seed": 3,
           "batch_size": 64, "data": {"n_train": 256, "n_val": 64, "n_test": 64, "image_size": 8}}
    erm = [r for r in run_trial({**cfg, "method": "erm"}) if r["split"] == "test" and r["group"] == "all"][-1]
    jtt = [r for r in run_trial({**cfg, "method": "jtt", "method_options": {"upweight": 1}})
           if r["split"] == "test" and r["group"] == "all"][-1]
    assert jtt["train_loss"] == erm["train_loss"] and jtt["loss"] == erm["loss"]
    assert 0 <= jtt["jtt_error_rate"] <= 1
