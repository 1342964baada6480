"""nccore.models: ResNet, DenseNet and VGG with the `features(x)` + linear `classifier` contract."""
from .registry import ARCHS, FAMILIES, build_model  # noqa: F401
