"""The evaluation pass a trial runs after each epoch: one eval-mode forward over each split,
streaming features into `CollapseStats` and predictions into device tensors (no host sync per
batch), then the rows: one per split for "all" and one per subgroup.

Train-split metrics use a fixed stratified subsample (`metrics_train_samples`, drawn once per
trial); its features are kept for NC4 (whose reference is this split's own means, so it needs a
second look at the features) and for fine-label recovery. Val and test use the train means as
the NC4 reference, counted during their single pass.

Under label bias (`bias_kind: label`) the train rows also carry the NC metrics computed with the
clean (pre-flip) labels, suffixed `_clean`, beside the usual ones on the observed labels (the
labels the model is trained on), overall and per subgroup, and two numbers on
the flipped training samples: `memorisation` = the fraction predicted as their flipped (observed)
label, and `flipped_acc_clean` = the fraction predicted as their clean label. With two classes the
two add up to 1; with more they need not (a prediction can be neither).
"""
from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch
from torch import nn

from .catalogue import METRICS
from .data.base import Dataset, Split
from .metrics import fairness_summary, fine_recovery, geometric_complexity, group_metrics, linear_probe_accuracy
from .metrics.geometry import feature_variance
from .metrics.collapse import CollapseStats, alignment_from_stats, nc_metrics
from .metrics.saliency import saliency_summary

NC_KEYS = tuple(k for k, m in METRICS.items() if m.metric_set == "nc")   # declared in nccore.catalogue
# NC metrics that are also computed with the clean labels under label bias: those the catalogue
# declares a `<name>_clean` twin for (NC4 has none: it compares nearest-class-mean with the
# network's prediction, not the labels).
CLEAN_KEYS = tuple(k for k in NC_KEYS if f"{k}_clean" in METRICS)
# Up to this many (class, subgroup) cells the accumulators keep one d×d scatter per cell, so the rows
# carry the class-balanced NC1 (nc1_cb, nc1_tr_ratio_cb) beside the pooled one: binary tasks with a
# few subgroups (NC-fairness). Beyond it (CIFAR-100: 100 classes) the memory and the per-cell update
# cost C·S times the pooled accumulator's, and the rows leave those columns empty.
CLASS_BALANCED_MAX_CELLS = 16


# The exact GC (full Jacobian of the embedding, one VJP per feature dimension) is written at the final
# epoch when the embedding has at most this many dimensions (CPU-scale models: 64); on 128 inputs of a
# 64-dim ResNet-18 it costs about what the 8-probe estimate does.
EXACT_GC_MAX_DIM = 256
GC_KEYS = ("gc", "gc_norm", "gc_exact")   # on the train and test `all` rows; the other extras on test only


def _within(num_classes: int, num_sub: int) -> str:
    return "both" if num_classes * num_sub <= CLASS_BALANCED_MAX_CELLS else "pooled"


def stratified_sample(split: Split, subgroup: torch.Tensor, cap: int, seed: int) -> torch.Tensor:
    """Indices of at most `cap` rows, each (label, subgroup) cell sampled in proportion."""
    n = len(split)
    if n <= cap:
        return torch.arange(n)
    rng = np.random.default_rng(seed)
    cell = (split.y.cpu().numpy() * 1000 + subgroup.cpu().numpy())
    keep = []
    for c in np.unique(cell):
        idx = np.flatnonzero(cell == c)
        keep.append(rng.choice(idx, size=max(1, int(round(len(idx) * cap / n))), replace=False))
    return torch.from_numpy(np.sort(np.concatenate(keep)))


class _Pass:
    """Everything one forward pass over a split produces."""

    def __init__(self, stats, preds, loss, feats):
        self.stats, self.preds, self.loss, self.feats = stats, preds, loss, feats


@torch.no_grad()
def _forward_pass(model, split: Split, sub: torch.Tensor, num_classes: int, num_sub: int, bs: int,
                  autocast, reference=None, keep_features=False) -> _Pass:
    dev = split.y.device
    stats = CollapseStats(num_classes, model.feature_dim, num_sub, device=dev, within=_within(num_classes, num_sub))
    if reference is not None:
        stats.set_reference(*reference)
    preds, feats = [], []
    head = model.classifier   # once: a fused model (side-tuning) builds its head on access
    loss = torch.zeros((), dtype=torch.float64, device=dev)
    for i in range(0, len(split), bs):
        x = split.x[i:i + bs]   # model.features puts it in the model's memory format
        with autocast():
            f = model.features(x)
            z = head(f)
        f, z = f.float(), z.float()
        y = split.y[i:i + bs]
        stats.update(f, y, sub[i:i + bs], logits=z)
        loss += nn.functional.cross_entropy(z, y, reduction="sum").double()
        preds.append(z.argmax(1))
        if keep_features:
            feats.append(f)
    return _Pass(stats, torch.cat(preds), loss / max(len(split), 1), torch.cat(feats) if feats else None)


def evaluate(model, data: Dataset, cfg: dict, train_idx: torch.Tensor, autocast=contextlib.nullcontext,
             epoch: int = 0) -> list[dict]:
    """Rows for every split × (all, each subgroup) with every enabled metric (see module doc)."""
    model.eval()
    bs, metrics = cfg["eval_batch_size"], set(cfg["metrics"])
    want_fine = "fine" in metrics and data.splits["test"].fine is not None and _fine_due(cfg, epoch)
    head = model.classifier
    w = head.weight.detach().double()
    b = head.bias.detach().double() if head.bias is not None else None
    rows, passes, reference = [], {}, None
    for name in ("train", "val", "test"):
        split = data.splits[name]
        if name == "train":
            split = split.subset(train_idx.to(split.y.device))
        sub = data.subgroup(split)
        keep = name == "train" or (name == "test" and want_fine)
        ps = _forward_pass(model, split, sub, data.num_classes, data.num_subgroups, bs, autocast,
                           reference, keep_features=keep)
        if name == "train":
            reference = (ps.stats.class_means(), ps.stats.group_class_means())
            ps.stats.set_reference(*reference)
            for i in range(0, len(split), bs):
                f = ps.feats[i:i + bs]
                ps.stats.add_ncc(f, split.y[i:i + bs], sub[i:i + bs], logits=f.double() @ w.T + (0 if b is None else b))
        passes[name] = ps
        clean = name == "train" and cfg.get("bias_kind") == "label" and "nc" in metrics
        rows += _split_rows(name, split, sub, ps, w, b, metrics, clean)
    extra = {}
    if "gc" in metrics:
        extra.update(_gc(model, data.splits["train"], train_idx, cfg, final=epoch + 1 == cfg["epochs"]))
    if "saliency" in metrics:   # CAM / Grad-CAM on the test split, where its spurious region is known
        extra.update(saliency_summary(model, data.splits["test"], seed=cfg["seed"]))
    if want_fine:
        extra.update(_fine(data, train_idx, passes))
    for r in rows:
        if r["group"] == "all" and (r["split"] == "test" or (r["split"] == "train" and "gc" in extra)):
            r.update({k: v for k, v in extra.items() if k in GC_KEYS or r["split"] == "test"})
    return rows


def _split_rows(name, split: Split, sub, ps: _Pass, w, b, metrics, clean: bool = False) -> list[dict]:
    y, yc = split.y.cpu().numpy(), split.y_clean.cpu().numpy()
    pred, subn, g = ps.preds.cpu().numpy(), sub.cpu().numpy(), split.g.cpu().numpy()
    flipped = split.flipped.cpu().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN metrics of tiny groups are expected
        top = {"split": name, "group": "all", "n": len(y), "loss": float(ps.loss),
               "acc": float(np.mean(pred == y)), "acc_clean": float(np.mean(pred == yc)),
               "majority_acc": float(np.bincount(y).max() / len(y)) if len(y) else float("nan")}
        per = {s: {"split": name, "group": str(s)} for s in range(ps.stats.S)}
        if "nc" in metrics:
            top.update(_pick(ps.stats.metrics(w, b)))
            for s, m in ps.stats.metrics_by_group(w, b).items():
                per[s].update(_pick(m))
            al = alignment_from_stats(ps.stats)
            for s in per:
                cos = list(al["align_cos"][s].values())
                per[s].update(align_cos=float(np.mean(cos)) if cos else float("nan"),
                              align_dist=al["align_dist"][s], axis_cos=al["axis_cos"][s],
                              axis_ratio=al["axis_ratio"][s], subgroup_offset=al["subgroup_offset"][s])
            if clean:
                ctop, cper = _clean_label_nc(ps.feats, split.y_clean, sub, ps.stats.C, ps.stats.S, w, b)
                top.update(ctop)
                for s in per:
                    per[s].update(cper.get(s, {}))
        if "fairness" in metrics:
            top.update(fairness_summary(yc, pred, g))
            for s, m in group_metrics(yc, pred, subn).items():
                per[s].update(m)
        for s in per:
            per[s].setdefault("n", int((subn == s).sum()))
        if name == "train" and flipped.any():
            top.update(memorisation(pred, y, yc, flipped))
            for s in per:
                m = subn == s
                per[s].update(memorisation(pred[m], y[m], yc[m], flipped[m]),
                              acc_observed=float(np.mean(pred[m] == y[m])) if m.any() else float("nan"))
    return [top] + [per[s] for s in per if per[s]["n"] > 0]


def _pick(m: dict, keys=NC_KEYS, suffix: str = "") -> dict:
    return {k + suffix: float(m[k]) for k in keys if k in m}


def memorisation(pred: np.ndarray, y_observed: np.ndarray, y_clean: np.ndarray, flipped: np.ndarray) -> dict:
    """On the flipped training samples only (Mouheb et al.):
    memorisation = mean(pred == observed label), flipped_acc_clean = mean(pred == clean label),
    n_flipped = their count. Arrays (N,); empty dict when no sample of the slice is flipped."""
    f = np.asarray(flipped, bool)
    if not f.any():
        return {}
    return {"memorisation": float(np.mean(pred[f] == y_observed[f])),
            "flipped_acc_clean": float(np.mean(pred[f] == y_clean[f])), "n_flipped": int(f.sum())}


def _clean_label_nc(feats, y_clean, sub, num_classes, num_sub, w, b) -> tuple[dict, dict]:
    """NC metrics of the same features grouped by the clean labels: overall and per subgroup."""
    stats = CollapseStats(num_classes, feats.shape[1], num_sub, device=feats.device,
                          within=_within(num_classes, num_sub))
    stats.update(feats, y_clean, sub)
    top = _pick(stats.metrics(w, b), CLEAN_KEYS, "_clean")
    per = {s: _pick(m, CLEAN_KEYS, "_clean") for s, m in stats.metrics_by_group(w, b).items()}
    return top, per


def _fine_due(cfg, epoch) -> bool:
    every = cfg["fine_every"]
    return epoch + 1 == cfg["epochs"] or (every > 0 and (epoch + 1) % every == 0)


def _fine(data: Dataset, train_idx, passes) -> dict:
    """Fine-label recovery from penultimate features: k-means fitted on the
    train subsample inside each coarse class, test features assigned; a linear probe on fine
    labels; fine NC1 inside each coarse class (test features)."""
    tr = data.splits["train"].subset(train_idx.to(data.splits["train"].y.device))
    te = data.splits["test"]
    ftr, fte = passes["train"].feats.cpu(), passes["test"].feats.cpu()
    rec = fine_recovery(fte, te.coarse, te.fine, train_features=ftr, train_coarse=tr.coarse)
    out = {f"fine_{k}": v for k, v in rec.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["fine_probe_acc"] = linear_probe_accuracy(ftr, tr.fine.cpu(), fte, te.fine.cpu())
        nc1 = [nc_metrics(fte[te.coarse.cpu() == k], te.fine.cpu()[te.coarse.cpu() == k])["nc1"]
               for k in te.coarse.unique().tolist()]
    out["fine_nc1"] = float(np.nanmean(nc1)) if np.isfinite(nc1).any() else float("nan")
    return out


def _gc(model, split: Split, train_idx, cfg, final: bool) -> dict:
    """GC of the embedding map (model.features) on a fixed train subsample: `gc` (Hutchinson,
    `gc_probes` probes), `gc_norm` = gc / tr Cov(f(X)) on the same inputs (unchanged when the
    features are rescaled), and at the final epoch `gc_exact` (full Jacobian) where the embedding
    has at most EXACT_GC_MAX_DIM dimensions."""
    x = split.x[train_idx[: cfg["gc_samples"]].to(split.y.device)]
    out = {"gc": geometric_complexity(model.features, x, num_probes=cfg["gc_probes"], seed=cfg["seed"])}
    with torch.no_grad():
        var = feature_variance(torch.cat([model.features(xb).float() for xb in x.split(cfg["eval_batch_size"])]))
    out["gc_norm"] = out["gc"] / var if var > 0 else float("nan")
    if final and model.feature_dim <= EXACT_GC_MAX_DIM:
        out["gc_exact"] = geometric_complexity(model.features, x, num_probes=None)
    return out
