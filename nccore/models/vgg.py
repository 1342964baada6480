"""VGG-11/16 with batch norm (Simonyan & Zisserman 2015). For small images (CIFAR stem) the
max-pools stop once the map is 1×1 and a global average pool feeds one linear classifier (the
usual CIFAR VGG); the ImageNet stem keeps all five pools. `width` scales the channels."""
from __future__ import annotations

import math

from torch import nn

from .base import FeatureClassifier, scaled

CFGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(FeatureClassifier):
    def __init__(self, cfg: str, num_classes: int, width: float = 1.0, image_size: int = 32,
                 stem: str = "cifar", in_channels: int = 3):
        super().__init__()
        max_pools = 5 if stem != "cifar" else min(5, int(math.log2(max(image_size, 1))))
        layers, inp, pools = [], in_channels, 0
        for v in CFGS[cfg]:
            if v == "M":
                if pools < max_pools:
                    layers.append(nn.MaxPool2d(2, 2))
                pools += 1
                continue
            c = scaled(v, width)
            layers += [nn.Conv2d(inp, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            inp = c
        self.body = nn.Sequential(*layers)
        self.head(inp, num_classes)
