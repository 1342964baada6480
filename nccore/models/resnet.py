"""ResNet-18/34 (He et al. 2016) with a CIFAR stem (3×3 conv, no max-pool) for small images or
the ImageNet stem (7×7/2 conv + max-pool), built from torchvision's BasicBlock.
`width` scales every stage's channels (64·width, …, 512·width)."""
from __future__ import annotations

from torch import nn

from .base import FeatureClassifier, scaled


class ResNet(FeatureClassifier):
    def __init__(self, layers, num_classes: int, width: float = 1.0, stem: str = "cifar", in_channels: int = 3):
        from torchvision.models.resnet import BasicBlock   # torchvision.models costs ~1.5 s to import: when built

        super().__init__()
        chans = [scaled(c, width) for c in (64, 128, 256, 512)]
        if stem == "cifar":
            stem_layers = (nn.Conv2d(in_channels, chans[0], 3, 1, 1, bias=False),
                           nn.BatchNorm2d(chans[0]), nn.ReLU(inplace=True))
        else:
            stem_layers = (nn.Conv2d(in_channels, chans[0], 7, 2, 3, bias=False),
                           nn.BatchNorm2d(chans[0]), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages, inp = [], chans[0]
        for i, (c, n) in enumerate(zip(chans, layers)):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or inp != c:
                down = nn.Sequential(nn.Conv2d(inp, c, 1, stride, bias=False), nn.BatchNorm2d(c))
            blocks = [BasicBlock(inp, c, stride, down)] + [BasicBlock(c, c) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            inp = c
        self.body = nn.Sequential(nn.Sequential(*stem_layers), *stages)
        self.head(inp, num_classes)
