"""Transfer / few-shot (Munn, Dherin, Gonzalvo, NeurIPS 2024).

The model pre-trains with ERM on the source classes only; the rest are held out as targets. Which
classes are source is the option `target_arm` (see `split_classes`): the first `n_source` classes
(default), or a compatible / incompatible arm built from the dataset's coarse families. Both arms
score the same target classes (ring, hollow square, X on BiasedShapes); compatible sources hold each
target's sibling (disk, square, plus), incompatible sources come from families with no target. Source and target labels are renumbered 0..k-1 in class
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
from ..transfer_arms import class_families, split_classes
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
        src, tgt = split_classes(classes, self.opts["n_source"], self.opts["target_arm"], fams,
                                 self.opts["n_target"])
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
