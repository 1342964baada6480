"""Baselines of the collapse studies.

`untrained`: the architecture at its random initialisation — the lower bound a representation
probe must beat (the fine-structure study; an untrained network's features already carry much
of the input, Yang et al. do not report this baseline). No optimiser step is taken; the
training epochs only run forward passes in train mode, so BatchNorm's running statistics are
estimated on the training data (without that, eval mode would use the initial mean 0 / var 1).
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Method, register


@register("untrained")
class Untrained(Method):
    def update(self, x: torch.Tensor, y: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad(), self.autocast():
            logits = self.forward(x)
        return nn.functional.cross_entropy(logits.float(), y).detach()
