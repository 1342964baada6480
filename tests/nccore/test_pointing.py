"""Pointing game against the object mask (`pointing_acc`, `pointing_worst`): by hand on maps, and
through `saliency_summary` with hand-built CAM models on noise-free BiasedShapes, whose object mask
(the shape) is exact."""
import numpy as np
import torch
from torch import nn

from nccore.data import build_dataset
from nccore.metrics.saliency import pointing_hits, saliency_summary


def test_pointing_hits_by_hand():
    maps = torch.zeros(4, 3, 3)
    maps[0, 1, 2] = 5.0                    # peak on the object
    maps[1, 0, 0] = 2.0                    # peak off it
    maps[2] -= 1.0                         # nothing positive: points nowhere
    maps[3, 0, 1] = maps[3, 2, 2] = 1.0    # a tie: the first in row-major order, (0, 1), counts
    mask = torch.zeros(4, 3, 3, dtype=torch.bool)
    mask[:, 1, 2] = True
    mask[3, 0, 1] = True
    out = pointing_hits(maps, mask)
    assert out[[0, 1, 3]].tolist() == [1.0, 0.0, 1.0] and np.isnan(out[2])


class _Colour(nn.Module):
    def __init__(self, on_object: bool):
        super().__init__()
        self.on_object = on_object

    def forward(self, x):
        d = (x[:, 2] - x[:, 0]) ** 2
        return (1 - d if self.on_object else 0.5 + d)[:, None]


class _Lens(nn.Module):
    """body → global average pool → linear head, whose CAM is the body's one map: 1 − (blue − red)²
    (1 on BiasedShapes' grey shape, 0.51 on either background) or its negation plus 1 (peaks on the
    background)."""

    def __init__(self, on_object: bool):
        super().__init__()
        self.body = _Colour(on_object)
        self.pool, self.classifier = nn.AdaptiveAvgPool2d(1), nn.Linear(1, 2)
        with torch.no_grad():
            self.classifier.weight.fill_(1.0)
            self.classifier.bias.copy_(torch.tensor([0.0, 1e-3]))

    def forward(self, x):
        return self.classifier(self.pool(self.body(x)).flatten(1))


def test_a_map_on_the_shape_always_hits_and_one_on_the_background_never_does():
    test = build_dataset("biased_shapes", {"n_train": 8, "n_val": 8, "n_test": 64, "image_size": 16, "noise": 0.0},
                         seed=0).splits["test"]
    hit = saliency_summary(_Lens(True).eval(), test, max_per_group=16)
    miss = saliency_summary(_Lens(False).eval(), test, max_per_group=16)
    assert hit["pointing_acc"] == 1.0 and hit["pointing_worst"] == 1.0
    assert miss["pointing_acc"] == 0.0 and miss["pointing_worst"] == 0.0
    assert hit["spurious_share"] < miss["spurious_share"]
