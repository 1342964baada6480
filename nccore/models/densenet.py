"""DenseNet-121 (Huang et al. 2017) from torchvision's dense blocks and transitions. CIFAR stem:
one 3×3 conv to 2·growth channels, no pooling; ImageNet stem: 7×7/2 conv + max-pool.
`width` scales the growth rate (32·width) and so every layer."""
from __future__ import annotations

from torch import nn

from .base import FeatureClassifier, scaled


class DenseNet(FeatureClassifier):
    def __init__(self, blocks=(6, 12, 24, 16), num_classes: int = 10, width: float = 1.0, stem: str = "cifar",
                 in_channels: int = 3, bn_size: int = 4):
        from torchvision.models.densenet import _DenseBlock, _Transition   # ~1.5 s to import: when built

        super().__init__()
        growth = scaled(32, width)
        c = 2 * growth
        if stem == "cifar":
            layers = [nn.Conv2d(in_channels, c, 3, 1, 1, bias=False)]
        else:
            layers = [nn.Conv2d(in_channels, c, 7, 2, 3, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                      nn.MaxPool2d(3, 2, 1)]
        for i, n in enumerate(blocks):
            layers.append(_DenseBlock(n, c, bn_size, growth, drop_rate=0.0))
            c += n * growth
            if i < len(blocks) - 1:
                layers.append(_Transition(c, c // 2))
                c //= 2
        layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.head(c, num_classes)
