"""Transfer / few-shot (Munn, Dherin, Gonzalvo, NeurIPS 2024).

The model pre-trains with ERM on the source classes only; the rest are held out as targets. Which
classes are source is the option `target_arm` (see `split_classes`): the first `n_source` classes
(default), or a compatible / incompatible arm built from the dataset's coarse families: compatible
targets are siblings of source classes (disk in source, ring in target), incompatible targets come
from families no source class belongs to. Source and target labels are renumbered 0..k-1 in class
order. After each epoch, with the embedding frozen:
- GC of the embedding on source training data (add "gc" to `metrics`; added by default here);
- target_nc1 and target_cdnv of the target-class test embeddings;
- n-way k-shot nearest-class-mean accuracy over `episodes` episodes with `queries` queries per
  class: prototype = mean support embedding, nearest prototype (Euclidean); mean ± 1.96·sd/√E.
- target_shared: share of target classes whose family has a source class (1 compatible, 0
  incompatible; NaN without coarse labels).
The trial's usual rows cover the source classes.
"""
from __future__ import annotations

import numpy as np
import torch

from ..metrics import nc_metrics
from .base import Method, register
from .dfr import embed


def ncm_episodes(feats: np.ndarray, labels: np.ndarray, n_way: int, k_shot: int, queries: int, episodes: int,
                 seed: int = 0) -> tuple[float, float]:
    """Mean accuracy and 95% half-width of nearest-class-mean classification over episodes."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    if len(classes) < n_way:
        raise ValueError(f"{n_way}-way episodes need {n_way} target classes; {len(classes)} held out")
    pools = {c: np.flatnonzero(labels == c) for c in classes}
    small = min(len(v) for v in pools.values())
    if small < k_shot + 1:
        raise ValueError(f"a target class has {small} images; {k_shot}-shot episodes need at least {k_shot + 1}")
    q = min(queries, small - k_shot)
    accs = []
    for _ in range(episodes):
        way = rng.choice(classes, n_way, replace=False)
        protos, qx, qy = [], [], []
        for j, c in enumerate(way):
            idx = rng.choice(pools[c], k_shot + q, replace=False)
            protos.append(feats[idx[:k_shot]].mean(0))
            qx.append(feats[idx[k_shot:]])
            qy += [j] * q
        d = ((np.concatenate(qx)[:, None, :] - np.stack(protos)[None]) ** 2).sum(-1)
        accs.append(np.mean(d.argmin(1) == np.array(qy)))
    accs = np.array(accs)
    return float(accs.mean()), float(1.96 * accs.std(ddof=1) / np.sqrt(len(accs))) if len(accs) > 1 else float("nan")


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


def split_classes(classes, n_source: int, arm: str, families: dict[int, int] | None = None
                  ) -> tuple[list[int], list[int]]:
    """(source classes, target classes) of a transfer arm.

    first: the n_source smallest classes are source, all others targets.
    compatible: the families in order (classes sorted inside each); from each of the first n_source
      families with ≥ 2 classes, its first class goes to source and its second to target.
    incompatible: whole families, in order, go to source until it has n_source classes, then the next
      whole families go to target until it has n_source classes; no family is on both sides.
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
    groups: dict[int, list[int]] = {}
    for c in classes:
        groups.setdefault(families[c], []).append(c)
    fams = [groups[f] for f in sorted(groups)]
    if arm == "compatible":
        pairs = [m for m in fams if len(m) >= 2][:n_source]
        if len(pairs) < n_source:
            raise ValueError(f"target_arm compatible with n_source = {n_source} needs {n_source} families of ≥ 2 "
                             f"classes; the dataset has {len(pairs)}")
        return [m[0] for m in pairs], [m[1] for m in pairs]
    source, target = [], []
    for m in fams:
        side = source if len(source) < n_source else target
        if len(side) < n_source:
            side.extend(m)
    if len(source) != n_source or len(target) != n_source:
        raise ValueError(f"target_arm incompatible with n_source = {n_source}: whole families (sizes "
                         f"{[len(m) for m in fams]}) do not make {n_source} source and {n_source} target classes")
    return source, target


def _only(split, classes: list[int]):
    """The rows of `classes`, labels renumbered 0..k-1 in the order given."""
    keep = torch.isin(split.y, torch.as_tensor(classes, device=split.y.device))
    sub = split.subset(torch.nonzero(keep).flatten())
    lut = torch.full((max(classes) + 1,), -1, dtype=torch.int64, device=sub.y.device)
    lut[torch.as_tensor(classes, device=sub.y.device)] = torch.arange(len(classes), device=sub.y.device)
    sub.y, sub.y_clean = lut[sub.y], lut[sub.y_clean]
    return sub


@register("transfer")
class Transfer(Method):

    def setup(self) -> None:
        tr = self.data.splits["train"]
        y = tr.y.cpu().numpy()
        fams = class_families(y, None if tr.coarse is None else tr.coarse.cpu().numpy())
        classes = range(self.data.num_classes)
        src, tgt = split_classes(classes, self.opts["n_source"], self.opts["target_arm"], fams)
        self.shared = (float("nan") if fams is None
                       else float(np.mean([fams.get(c) in {fams.get(s) for s in src} for c in tgt])))
        self.target = _only(self.data.splits["test"], tgt)
        self.data.splits = {k: _only(s, src) for k, s in self.data.splits.items()}
        if "gc" not in self.cfg["metrics"]:
            self.cfg["metrics"] = list(self.cfg["metrics"]) + ["gc"]

    def end_of_epoch(self, epoch: int) -> dict:
        f = embed(self.model, self.target.x)
        y = self.target.y.cpu().numpy()
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            nc = nc_metrics(f, y)
        n_way = min(self.opts["n_way"], len(np.unique(y)))
        out = {"target_nc1": nc["nc1"], "target_cdnv": nc["cdnv"], "target_shared": self.shared}
        for k in sorted({1, self.opts["k_shot"]}):
            acc, ci = ncm_episodes(f, y, n_way, k, self.opts["queries"], self.opts["episodes"], self.cfg["seed"])
            suffix = "" if k == self.opts["k_shot"] else f"_{k}shot"
            out[f"fewshot_acc{suffix}"], out[f"fewshot_ci{suffix}"] = acc, ci
        return out
