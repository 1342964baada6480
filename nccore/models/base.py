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
    """Subclasses build `self.body` (image -> feature map) and call `self.head(channels, C)`."""
    body: nn.Module
    classifier: nn.Linear
    feature_dim: int

    def head(self, channels: int, num_classes: int) -> None:
        """Global average pooling, the linear classifier, and the weight init."""
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        self.feature_dim = channels
        self.init_weights()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
