"""Transfer / few-shot (Munn, Dherin, Gonzalvo, NeurIPS 2024).

The model pre-trains with ERM on the source classes only (the first `n_source` classes; the rest
are held out as targets). After each epoch, with the embedding frozen:
- GC of the embedding on source training data (add "gc" to `metrics`; added by default here);
- target_nc1 and target_cdnv of the target-class test embeddings;
- n-way k-shot nearest-class-mean accuracy over `episodes` episodes with `queries` queries per
  class: prototype = mean support embedding, nearest prototype (Euclidean); mean ± 1.96·sd/√E.
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


@register("transfer")
class Transfer(Method):

    def setup(self) -> None:
        n_src = self.opts["n_source"]
        if not 2 <= n_src < self.data.num_classes:
            raise ValueError(f"method_options `n_source` = {n_src}: must be in [2, {self.data.num_classes - 1}] "
                             f"(the dataset has {self.data.num_classes} classes; use target: fine for BiasedShapes)")
        keep = lambda s, src: s.subset(torch.nonzero((s.y < n_src) == src).flatten())  # noqa: E731
        self.target = keep(self.data.splits["test"], False)
        self.data.splits = {k: keep(s, True) for k, s in self.data.splits.items()}
        if "gc" not in self.cfg["metrics"]:
            self.cfg["metrics"] = list(self.cfg["metrics"]) + ["gc"]

    def end_of_epoch(self, epoch: int) -> dict:
        f = embed(self.model, self.target.x)
        y = self.target.y.cpu().numpy()
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            nc = nc_metrics(f, y - y.min())
        n_way = min(self.opts["n_way"], len(np.unique(y)))
        out = {"target_nc1": nc["nc1"], "target_cdnv": nc["cdnv"]}
        for k in sorted({1, self.opts["k_shot"]}):
            acc, ci = ncm_episodes(f, y, n_way, k, self.opts["queries"], self.opts["episodes"], self.cfg["seed"])
            suffix = "" if k == self.opts["k_shot"] else f"_{k}shot"
            out[f"fewshot_acc{suffix}"], out[f"fewshot_ci{suffix}"] = acc, ci
        return out
