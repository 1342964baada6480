"""The one dataset contract every loader returns.

A `Split` holds images x (N, C, H, W) float32 in [0, 1] and int64 columns: y (the training
target, possibly label-biased), y_clean (before label bias), a (sensitive attribute), p (spurious
attribute), g (the group id worst-group metrics use), and, where defined, fine and coarse labels.
`flipped` marks rows whose label the label-bias injection changed.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor
    a: torch.Tensor
    p: torch.Tensor
    g: torch.Tensor
    y_clean: torch.Tensor
    flipped: torch.Tensor
    fine: torch.Tensor | None = None
    coarse: torch.Tensor | None = None
    spurious_mask: torch.Tensor | None = None   # (N, H, W) bool: pixels of the spurious attribute, where known

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device) -> "Split":
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if getattr(self, f.name) is not None})

    def subset(self, idx) -> "Split":
        idx = torch.as_tensor(idx, device=self.y.device)
        return replace(self, **{f.name: getattr(self, f.name)[idx] for f in fields(self)
                                if getattr(self, f.name) is not None})


@dataclass
class Dataset:
    name: str
    splits: dict[str, Split]
    num_classes: int
    num_groups: int          # values of g
    num_subgroups: int       # values of the attribute that per-subgroup NC rows use
    subgroup_attr: str       # "a" (sensitive) or "p" (spurious)
    meta: dict = field(default_factory=dict)

    def subgroup(self, split: Split) -> torch.Tensor:
        return getattr(split, self.subgroup_attr)


def make_split(x, y, a=None, p=None, g=None, fine=None, coarse=None, spurious_mask=None) -> Split:
    """Build a Split from arrays; a, p default to zeros, g to 2y + p for binary y else y·2 + p."""
    y = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    zeros = torch.zeros_like(y)
    a = zeros if a is None else torch.as_tensor(np.asarray(a), dtype=torch.int64)
    p = zeros if p is None else torch.as_tensor(np.asarray(p), dtype=torch.int64)
    g = 2 * y + p if g is None else torch.as_tensor(np.asarray(g), dtype=torch.int64)
    opt = lambda v: None if v is None else torch.as_tensor(np.asarray(v), dtype=torch.int64)  # noqa: E731
    x = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x.float()
    return Split(x=x, y=y, a=a, p=p, g=g, y_clean=y.clone(), flipped=torch.zeros_like(y, dtype=torch.bool),
                 fine=opt(fine), coarse=opt(coarse),
                 spurious_mask=None if spurious_mask is None else torch.as_tensor(np.asarray(spurious_mask, bool)))
