"""Which configurations can train fused (`nccore.fused`), and which can share a group — plain
config checks, without torch, so that `ncsweep validate` and `--dry-run` can say how a `fuse`
spec groups (sweeps/fuse.py) without loading it.

Only ERM with SGD fuses; members of a group may differ in the catalogue's fuse axes
(`Key.fuse_axis`) and their own trial id and checkpoint directory, and must agree on every other key.
"""
from __future__ import annotations

from .catalogue import fusable_methods, fuse_axes
from .config import validate_config

FUSABLE_OPTIMIZERS = ("sgd",)
PER_MEMBER = fuse_axes() + ("trial_id", "checkpoint_dir")


def why_not_fusable(config: dict) -> str | None:
    """None if `config` can train in a fused group, else the reason it runs unfused."""
    cfg = validate_config(config)
    if cfg["method"] not in fusable_methods():     # catalogue: MethodInfo.fusable
        return f"method {cfg['method']!r} trains with its own loop (only {list(fusable_methods())} fuse)"
    if cfg["optimizer"] not in FUSABLE_OPTIMIZERS:
        return f"optimizer {cfg['optimizer']!r} (fused mode implements SGD only)"
    return None


def fuse_key(config: dict) -> str:
    """Configs with equal keys can share a fused group: all keys but the fuse axes agree."""
    cfg = validate_config(config)
    return repr(sorted((k, repr(v)) for k, v in cfg.items() if k not in PER_MEMBER))
