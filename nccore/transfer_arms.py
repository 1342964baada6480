"""Which classes a transfer trial trains on and which it scores (Munn et al.'s compatible vs
incompatible targets), from a dataset's class families. numpy only: the spec validator runs
`split_classes` on the catalogue's declared hierarchy (`CLASS_HIERARCHY`) before any trial starts."""
from __future__ import annotations

import numpy as np

from .catalogue import CLASS_HIERARCHY


def declared_families(dataset: str, target: str) -> dict[int, int] | None:
    """A class -> family map with the family sizes the catalogue declares for a dataset's training
    target, or None where it declares no families. The classes are numbered family by family here;
    the real numbering comes from the data (CIFAR-100's is not in families), but whether
    `split_classes` can build an arm depends only on the sizes, which is what the validator asks."""
    shape = CLASS_HIERARCHY.get(dataset, {}).get(target)
    if shape is None:
        return None
    n_fam, size = shape
    return {c: c // size for c in range(n_fam * size)}


def class_families(labels: np.ndarray, coarse: np.ndarray | None) -> dict[int, int] | None:
    """Class -> coarse family, from paired label / coarse columns; None without coarse labels or
    when a class's rows disagree on their family (no hierarchy)."""
    if coarse is None:
        return None
    fam = {}
    for c in np.unique(labels):
        f = np.unique(coarse[labels == c])
        if len(f) != 1:
            return None
        fam[int(c)] = int(f[0])
    return fam


def split_classes(classes, n_source: int, arm: str, families: dict[int, int] | None = None,
                  n_target: int = 0) -> tuple[list[int], list[int]]:
    """(source classes, target classes) of a transfer arm.

    first: the n_source smallest classes are source, all others targets.
    compatible / incompatible share one target set, so the arms differ only in the source classes:
      targets are the second class of each of the first n_target families with ≥ 2 classes
      (n_target 0: n_source of them). compatible: the source holds each target's first sibling, then,
      if n_source is larger, classes of the families without a target, one per family in turn.
      incompatible: the source holds n_source classes of the families without a target, one per family
      in turn (first classes of every family, then second classes, ...), so no target has a relative
      in the source.
    Classes left over are in neither (not trained on, not scored)."""
    classes = sorted(int(c) for c in classes)
    if arm == "first":
        if not 2 <= n_source < len(classes):
            raise ValueError(f"method_options `n_source` = {n_source}: must be in [2, {len(classes) - 1}] (the "
                             f"dataset has {len(classes)} classes; use target: fine for BiasedShapes)")
        return classes[:n_source], classes[n_source:]
    if arm not in ("compatible", "incompatible"):
        raise ValueError(f"method_options `target_arm` = {arm!r}: use first, compatible or incompatible")
    if families is None:
        raise ValueError(f"target_arm {arm!r} needs coarse families of the classes (e.g. BiasedShapes with "
                         "target: fine); this dataset has none")
    n_target = n_target or n_source
    groups: dict[int, list[int]] = {}
    for c in classes:
        groups.setdefault(families[c], []).append(c)
    fams = [groups[f] for f in sorted(groups)]
    pairs = [m for m in fams if len(m) >= 2][:n_target]
    if len(pairs) < n_target:
        raise ValueError(f"target_arm {arm} with n_target = {n_target} needs {n_target} families of ≥ 2 classes; "
                         f"the dataset has {len(pairs)}: lower method_options n_target")
    target = [m[1] for m in pairs]
    rest = [m for m in fams if not any(m is p for p in pairs)]
    in_turn = [m[i] for i in range(max(map(len, rest), default=0)) for m in rest if i < len(m)]
    source = ([m[0] for m in pairs] if arm == "compatible" else []) + in_turn
    if len(source) < n_source:
        raise ValueError(f"target_arm {arm} with n_source = {n_source} and n_target = {n_target}: the families "
                         f"without a target hold {len(in_turn)} classes, so the source can have at most "
                         f"{len(source)}: lower n_source or n_target")
    return source[:n_source], target
