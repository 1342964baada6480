"""The contract every architecture keeps (the timm-style feature / classifier split):
`features(x) -> (N, D)` penultimate post-pooling features — what NC metrics read — and a linear
`classifier` (nn.Linear(D, C)); forward(x) = classifier(features(x))."""
from __future__ import annotations

import torch
from torch import nn


def scaled(channels: int, width: float) -> int:
    """Channel count under a width multiplier (at least 4)."""
    return max(4, int(round(channels * width)))


class FeatureClassifier(nn.Module):
    classifier: nn.Linear
    feature_dim: int

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
