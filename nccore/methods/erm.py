"""E.1 ERM: minimise the mean cross-entropy (SGD with momentum or Adam). Coarse-label training
(the fine-structure study) is ERM with `coarse: true`, which makes the dataset's target the
coarse label."""
from .base import Method, register


@register("erm")
class ERM(Method):
    hparams: dict = {}
