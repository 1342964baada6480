"""nccore.models: ResNet, DenseNet and VGG with the `features(x)` + linear `classifier` contract."""
from .registry import ARCHS, build_model, family  # noqa: F401
