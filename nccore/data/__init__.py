"""nccore.data: the dataset contract, the embedded BiasedShapes generator, local-file loaders,
label-bias injection, and device-resident batching with GPU-side augmentation."""
from .base import Dataset, Split  # noqa: F401
from .bias import inject_label_bias  # noqa: F401
from .registry import DATASETS, build_dataset  # noqa: F401
from .synthetic import make_biased_shapes  # noqa: F401
