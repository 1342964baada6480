"""The contract every architecture keeps (the timm-style feature / classifier split):
`features(x) -> (N, D)` penultimate post-pooling features — what NC metrics read — and a linear
`classifier` (nn.Linear(D, C)); forward(x) = classifier(features(x)).

Every input is handed to the body in the model's own memory format (`features` makes it so):
contiguous, or channels-last after `use_channels_last()`. A batch with other strides — e.g. the
channels-last strides that an advanced-indexing crop leaves — sends oneDNN's AVX2 1×1 stride-2
convolution backward down a path that writes past its workspace and corrupts the heap
(oneDNN issue uxlfoundation/oneDNN#6035: nhwc source, input channels < 8; reproduced in plain
PyTorch by bench/onednn_avx2_crash.py). channels-last on CPU is refused for the same reason
(`nccore.trial.Runtime`)."""
from __future__ import annotations

import torch
from torch import nn


def scaled(channels: int, width: float) -> int:
    """Channel count under a width multiplier (at least 4)."""
    return max(4, int(round(channels * width)))


def model_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x (N, C, H, W) in the memory format `model` takes (for callers of `model.body` directly)."""
    return x.contiguous(memory_format=getattr(model, "input_format", torch.contiguous_format))


class GlobalAvgPool(nn.Module):
    """Global average pooling (N, C, H, W) -> (N, C, 1, 1) as a mean over H and W: the same value as
    nn.AdaptiveAvgPool2d(1), but its CUDA backward has a deterministic implementation (the adaptive
    pool's has none, so `deterministic: true` would stop at it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


class FeatureClassifier(nn.Module):
    """Subclasses build `self.body` (image -> feature map) and call `self.head(channels, C)`."""
    body: nn.Module
    classifier: nn.Linear
    feature_dim: int
    input_format: torch.memory_format = torch.contiguous_format

    def head(self, channels: int, num_classes: int) -> None:
        """Global average pooling, the linear classifier, and the weight init."""
        self.pool = GlobalAvgPool()
        self.classifier = nn.Linear(channels, num_classes)
        self.feature_dim = channels
        self.init_weights()

    def use_channels_last(self) -> "FeatureClassifier":
        """Weights and every input in channels-last memory format (CUDA only: see the module doc)."""
        self.input_format = torch.channels_last
        return self.to(memory_format=torch.channels_last)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = model_input(self, x)   # a no-op when x is already in it
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
