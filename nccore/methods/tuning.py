"""Shared machinery of the debiasing-by-tuning methods (change-penalised tuning, MAS,
side-tuning; SCIENCE.md §E.3-E.5), as in Penzel, Stein, Denzler (VISAPP 2024):

- a base model: the trial's model after `pretrain_epochs` of ERM on the (biased) training split,
  or the checkpoint / weights named by `init_from` (then `pretrain_epochs` is ignored);
- a tuning set of `n_tune` bias-contradicting training samples (group y ≠ p), drawn with the
  trial's seed and spread over the classes;
- one trial epoch = one pass over the tuning set (`epochs` is the cap); early stopping ends
  training at the first epoch after which every tuning sample is classified correctly.
The penalty strength comes from the sweep's `penalty` axis. BatchNorm statistics stay frozen.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import Method
from .erm import train_erm


def tuning_indices(y: np.ndarray, p: np.ndarray, n_tune: int, seed: int) -> np.ndarray:
    """n_tune bias-contradicting rows (p ≠ y mod 2 for the spurious attribute), classes alternating."""
    rng = np.random.default_rng(seed)
    contra = np.flatnonzero(p != y % 2)
    if len(contra) < n_tune:
        raise ValueError(f"n_tune={n_tune}: only {len(contra)} bias-contradicting training samples exist; "
                         f"lower n_tune or the bias level")
    by_class = [rng.permutation(contra[y[contra] == c]).tolist() for c in np.unique(y[contra])]
    out = []
    while len(out) < n_tune:
        for lst in by_class:
            if lst and len(out) < n_tune:
                out.append(lst.pop())
    return np.sort(np.array(out))


class TuningMethod(Method):

    def setup(self) -> None:
        if not self.cfg["init_from"]:
            self._pretrain()
        self.model.eval()
        for prm in self.model.parameters():
            prm.requires_grad_(False)
        tr = self.data.splits["train"]
        idx = tuning_indices(tr.y.cpu().numpy(), tr.p.cpu().numpy(), self.opts["n_tune"], self.cfg["seed"])
        self.tune_set = tr.subset(torch.as_tensor(idx))
        self.prepare_tuning()

    def prepare_tuning(self) -> None:
        """Build the trainable parts (Δ, side network, importance weights)."""
        raise NotImplementedError

    def _pretrain(self) -> None:
        train_erm(self.model, self.cfg, self.data, self.opts["pretrain_epochs"], self.opts["pretrain_lr"])

    def train_split(self):
        return self.tune_set

    def train_mode(self) -> None:
        self.model.eval()   # BatchNorm statistics of the base stay frozen

    @torch.no_grad()
    def tune_accuracy(self) -> float:
        m = self.eval_model()
        m.eval()
        return float((m(self.tune_set.x).argmax(1) == self.tune_set.y).float().mean())

    def end_of_epoch(self, epoch: int) -> dict:
        acc = self.tune_accuracy()
        if self.opts["early_stop"] and acc == 1.0:
            self.finished = True
        return {"tune_acc": acc, "n_tune": len(self.tune_set), "early_stopped": self.finished, **self.extra_columns()}

    def extra_columns(self) -> dict:
        return {}
