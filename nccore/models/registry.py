"""Architecture registry: name -> builder(num_classes, width, image_size, stem, in_channels).
Adding an architecture is adding one function decorated with `@ARCHS.register(name)` and its
family to `nccore.catalogue.ARCH_FAMILIES` (tests/test_catalogue.py checks the two agree)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..catalogue import ARCH_FAMILIES
from ..registry import Registry
from .base import FeatureClassifier
from .densenet import DenseNet
from .resnet import ResNet
from .vgg import VGG

ARCHS = Registry("architecture", key="arch")


@ARCHS.register("resnet18")
def resnet18(num_classes, width, image_size, stem, in_channels):
    return ResNet((2, 2, 2, 2), num_classes, width, stem, in_channels)


@ARCHS.register("resnet34")
def resnet34(num_classes, width, image_size, stem, in_channels):
    return ResNet((3, 4, 6, 3), num_classes, width, stem, in_channels)


@ARCHS.register("densenet121")
def densenet121(num_classes, width, image_size, stem, in_channels):
    return DenseNet((6, 12, 24, 16), num_classes, width, stem, in_channels)


@ARCHS.register("vgg11")
def vgg11(num_classes, width, image_size, stem, in_channels):
    return VGG("vgg11", num_classes, width, image_size, stem, in_channels)


@ARCHS.register("vgg16")
def vgg16(num_classes, width, image_size, stem, in_channels):
    return VGG("vgg16", num_classes, width, image_size, stem, in_channels)


def family(arch: str) -> str:
    """The architecture family of a registered arch ("resnet", "densenet", "vgg"), declared with the
    arch names in the catalogue, which validates specs without importing torch."""
    ARCHS[arch]
    return ARCH_FAMILIES[arch]


def build_model(arch: str, num_classes: int, width: float = 1.0, image_size: int = 32, stem: str = "auto",
                in_channels: int = 3, weights: str | None = None) -> FeatureClassifier:
    """Build an architecture by name. stem="auto" takes the CIFAR stem for images ≤ 64 px.
    `weights`: a local state_dict file (e.g. ImageNet-pretrained); the classifier is kept fresh
    when its shape differs. A missing file or mismatched body raises ValueError before training."""
    builder = ARCHS[arch]
    if not width > 0:
        raise ValueError(f"width={width}: must be > 0")
    if stem == "auto":
        stem = "cifar" if image_size <= 64 else "imagenet"
    if stem not in ("cifar", "imagenet"):
        raise ValueError(f"stem={stem!r}: expected 'auto', 'cifar' or 'imagenet'")
    model = builder(num_classes, width, image_size, stem, in_channels)
    if weights:
        load_weights(model, weights)
    return model


def load_weights(model: FeatureClassifier, path: str) -> None:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"weights={path!r}: file not found (expected a torch state_dict saved with torch.save)")
    state = torch.load(p, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    own = model.state_dict()
    body = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    bad = [k for k, v in body.items() if k not in own or own[k].shape != v.shape]
    if bad or not body:
        raise ValueError(f"weights={path!r} do not fit this architecture: {len(bad)} mismatched tensors "
                         f"(first: {bad[:3]}); build the model with the arch/width/stem they were saved from")
    head = {k: v for k, v in state.items() if k.startswith("classifier.") and own[k].shape == v.shape}
    model.load_state_dict({**own, **body, **head})
