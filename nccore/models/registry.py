"""Architecture registry: name -> builder(num_classes, width, image_size, stem, in_channels).
Adding an architecture is adding one entry to ARCHS."""
from __future__ import annotations

from pathlib import Path

import torch

from .base import FeatureClassifier
from .densenet import DenseNet
from .resnet import ResNet
from .vgg import VGG

ARCHS = {
    "resnet18": lambda C, w, s, stem, ch: ResNet((2, 2, 2, 2), C, w, stem, ch),
    "resnet34": lambda C, w, s, stem, ch: ResNet((3, 4, 6, 3), C, w, stem, ch),
    "densenet121": lambda C, w, s, stem, ch: DenseNet((6, 12, 24, 16), C, w, stem, ch),
    "vgg11": lambda C, w, s, stem, ch: VGG("vgg11", C, w, s, stem, ch),
    "vgg16": lambda C, w, s, stem, ch: VGG("vgg16", C, w, s, stem, ch),
}
FAMILIES = {"resnet18": "resnet", "resnet34": "resnet", "densenet121": "densenet", "vgg11": "vgg", "vgg16": "vgg"}


def build_model(arch: str, num_classes: int, width: float = 1.0, image_size: int = 32, stem: str = "auto",
                in_channels: int = 3, weights: str | None = None) -> FeatureClassifier:
    """Build an architecture by name. stem="auto" takes the CIFAR stem for images ≤ 64 px.
    `weights`: a local state_dict file (e.g. ImageNet-pretrained); the classifier is kept fresh
    when its shape differs. A missing file or mismatched body raises ValueError before training."""
    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r}: unknown architecture; choose one of {sorted(ARCHS)}")
    if not width > 0:
        raise ValueError(f"width={width}: must be > 0")
    if stem == "auto":
        stem = "cifar" if image_size <= 64 else "imagenet"
    if stem not in ("cifar", "imagenet"):
        raise ValueError(f"stem={stem!r}: expected 'auto', 'cifar' or 'imagenet'")
    model = ARCHS[arch](num_classes, width, image_size, stem, in_channels)
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
