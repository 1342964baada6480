"""E.2 DFR — Deep Feature Reweighting (Kirichenko, Izmailov, Wilson, ICLR 2023), the last-layer
retraining studied by Le, Schlötterer, Seifert (2023).

The backbone trains with ERM for `epochs`; after the last epoch its penultimate embeddings are
frozen and the last layer is refitted on the group-balanced validation split with L1 logistic
regression (scikit-learn liblinear), following the reference `dfr_evaluate_spurious.py`:
- tuning: shuffle val; half A (`idx[n//2:]`) is balanced by subsampling every group to the
  smallest group's size, a StandardScaler is fitted on it, and C ∈ Cs is chosen by worst-group
  accuracy on half B;
- final: `n_refits` fits with the chosen C, each on a fresh balanced subsample of the whole val
  set, scaler fitted on the training embeddings; coef_ and intercept_ are averaged.
The averaged head replaces the classifier (mapped back to raw feature space), so every metric of
the final epoch's rows is the DFR model's. Extra columns: erm_worst_group_acc / dfr_worst_group_acc
(test), the test accuracy of each head in each group g = 2y + p (erm_acc_g<k>, dfr_acc_g<k>), dfr_C, and last-layer sparsity (fraction of zeros, Hoyer) before and after.

Controls for the last-layer study (Le et al.), computed on the same embeddings in every DFR trial:
L1 on the group-balanced set (DFR), L1 on the unbalanced set, and L2 on the balanced set, each
with its test worst-group accuracy and sparsity (`dfr_{l1,l2}_{bal,unbal}_{wga,sparsity,hoyer}`),
so sparsity can be attributed to the penalty or to the balancing. Options `head` and `balance`
pick which of them replaces the classifier. With the "saliency" metric set, the ERM head's
saliency (`spurious_share_before`, `saliency_panel_before`) is recorded before the head changes.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ..catalogue import method_defaults
from ..metrics import hoyer_sparsity, weight_sparsity, worst_group_accuracy
from ..metrics.saliency import saliency_summary
from .base import Method, register

CS = tuple(method_defaults("dfr")["Cs"])   # the reference's grid, declared in nccore.catalogue


def balanced_subsample(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices with every present group subsampled to the smallest group's size."""
    ids, counts = np.unique(groups, return_counts=True)
    if counts.min() == 1:
        warnings.warn("DFR: a group has a single validation sample", RuntimeWarning, stacklevel=2)
    return np.concatenate([rng.choice(np.flatnonzero(groups == g), counts.min(), replace=False) for g in ids])


def _lr(C: float, binary: bool, penalty: str = "l1", seed: int = 0):
    """L1 (or L2) logistic regression (liblinear, random_state fixed); one-vs-rest for more than
    two classes."""
    from sklearn.linear_model import LogisticRegression   # scikit-learn only where used: 1-2 s per worker start
    from sklearn.multiclass import OneVsRestClassifier

    lr = LogisticRegression(l1_ratio=1.0 if penalty == "l1" else 0.0, solver="liblinear", C=C,
                            class_weight={0: 1, 1: 1} if binary else None, max_iter=1000, random_state=seed)
    return lr if binary else OneVsRestClassifier(lr)


def _coef(clf) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.multiclass import OneVsRestClassifier

    if isinstance(clf, OneVsRestClassifier):
        return (np.vstack([e.coef_ for e in clf.estimators_]),
                np.concatenate([np.ravel(e.intercept_) for e in clf.estimators_]))
    return clf.coef_, clf.intercept_


def fit_dfr(train_x, val_x, val_y, val_g, num_groups: int | None = None, Cs=CS, n_refits: int = 20, seed: int = 0,
            penalty: str = "l1", balance: bool = True):
    """DFR^Val. Arrays: train_x (N, d) (scaler of the final fit), val_x (M, d), val_y (M,), val_g (M,).
    Returns (coef (k, d), intercept (k,), scaler, best_C) with coef in standardised space.

    penalty "l2" and balance=False are the controls of the last-layer study: the same tuning and
    refits with an L2 penalty, or on the group-unbalanced val halves (then one final fit on all of
    val, since every refit would see the same data). Every fit uses random_state=seed."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.preprocessing import StandardScaler

    val_y, val_g = np.asarray(val_y), np.asarray(val_g)
    present = np.unique(val_g)
    if num_groups is not None and len(present) < num_groups:
        missing = sorted(set(range(num_groups)) - set(present.tolist()))
        raise ValueError(f"DFR: groups {missing} have no validation samples, so the group-balanced set would be "
                         f"empty; use a larger val split (n_val) or a lower bias level")
    if len(val_y) < 4:
        raise ValueError(f"DFR: {len(val_y)} validation samples; need at least 4")
    rng = np.random.default_rng(seed)
    binary = len(np.unique(val_y)) <= 2
    idx = rng.permutation(len(val_y))
    a, b = idx[len(idx) // 2:], idx[: len(idx) // 2]
    if balance:
        a = a[balanced_subsample(val_g[a], rng)]
    scaler = StandardScaler().fit(val_x[a])
    best_c, best_wga = Cs[0], -1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for C in Cs:
            clf = _lr(C, binary, penalty, seed).fit(scaler.transform(val_x[a]), val_y[a])
            wga = worst_group_accuracy(val_y[b], clf.predict(scaler.transform(val_x[b])), val_g[b])
            if wga > best_wga:
                best_c, best_wga = C, wga
        scaler = StandardScaler().fit(train_x)
        coefs, intercepts = [], []
        for _ in range(n_refits if balance else 1):
            s = balanced_subsample(val_g, rng) if balance else np.arange(len(val_y))
            coef, icpt = _coef(_lr(best_c, binary, penalty, seed).fit(scaler.transform(val_x[s]), val_y[s]))
            coefs.append(coef)
            intercepts.append(icpt)
    return np.mean(coefs, axis=0), np.mean(intercepts, axis=0), scaler, best_c


def group_accuracies(head: str, y, pred, g) -> dict:
    """{head}_acc_g{k}: accuracy of `pred` against `y` in each group k ∈ {0..3} present in g
    (binary tasks: g = 2y + p), so the per-group ERM → DFR changes can be read (Le et al.)."""
    return {f"{head}_acc_g{k}": float(np.mean(pred[g == k] == y[g == k])) for k in range(4) if (g == k).any()}


def as_linear_head(coef, intercept, scaler, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (W, b) acting on raw features: W = coef/σ, b = intercept − W·μ; a binary (1, d) head
    becomes the equivalent 2-class softmax head [−w/2; +w/2]."""
    w = coef / scaler.scale_
    b = intercept - w @ scaler.mean_
    if w.shape[0] == 1 and num_classes == 2:
        w, b = np.vstack([-w / 2, w / 2]), np.concatenate([-b / 2, b / 2])
    return torch.as_tensor(w, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)


@torch.no_grad()
def embed(model, x: torch.Tensor, bs: int = 512) -> np.ndarray:
    model.eval()
    return torch.cat([model.features(x[i:i + bs]).float() for i in range(0, len(x), bs)]).cpu().numpy()


@register("dfr")
class DFR(Method):
    def end_of_epoch(self, epoch: int) -> dict:
        if epoch + 1 < self.cfg["epochs"]:
            return {}
        m, d = self.model, self.data
        tr, va, te = d.splits["train"], d.splits["val"], d.splits["test"]
        xtr, xva, xte = embed(m, tr.x), embed(m, va.x), embed(m, te.x)
        yte, gte = te.y_clean.cpu().numpy(), te.g.cpu().numpy()
        out = {}
        if "saliency" in self.cfg["metrics"]:   # the ERM head's maps, before its head is replaced
            out.update({f"{k}_before": v for k, v in saliency_summary(m, te, seed=self.cfg["seed"]).items()})
        w_before = m.classifier.weight.detach().cpu().numpy().copy()   # the head is overwritten below
        erm_pred = (xte @ w_before.T + m.classifier.bias.detach().cpu().numpy()).argmax(1)
        chosen = (self.opts["head"], self.opts["balance"])
        for penalty, balance in sorted({("l1", True), ("l1", False), ("l2", True), chosen}):
            coef, icpt, scaler, C = fit_dfr(xtr, xva, va.y.cpu().numpy(), va.g.cpu().numpy(), d.num_groups,
                                            Cs=self.opts["Cs"], n_refits=self.opts["n_refits"],
                                            seed=self.cfg["seed"], penalty=penalty, balance=balance)
            w, b = as_linear_head(coef, icpt, scaler, d.num_classes)
            wga = worst_group_accuracy(yte, (xte @ w.numpy().T + b.numpy()).argmax(1), gte)
            v = f"dfr_{penalty}_{'bal' if balance else 'unbal'}"
            out.update({f"{v}_wga": wga, f"{v}_sparsity": weight_sparsity(coef), f"{v}_hoyer": hoyer_sparsity(coef)})
            if (penalty, balance) == chosen:
                out.update(group_accuracies("dfr", yte, (xte @ w.numpy().T + b.numpy()).argmax(1), gte))
                m.classifier.weight.data.copy_(w.to(self.device))
                m.classifier.bias.data.copy_(b.to(self.device))
                out.update({"dfr_worst_group_acc": wga, "dfr_C": C, "sparsity_after": weight_sparsity(coef),
                            "sparsity_after_1e-6": weight_sparsity(coef, tol=1e-6), "hoyer_after": hoyer_sparsity(coef)})
        out.update(group_accuracies("erm", yte, erm_pred, gte))
        out.update({"erm_worst_group_acc": worst_group_accuracy(yte, erm_pred, gte),
                    "sparsity_before": weight_sparsity(w_before), "hoyer_before": hoyer_sparsity(w_before)})
        return out
