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
from torch import nn

from ..data.loader import TensorLoader
from .base import Method, make_optimizer, make_scheduler


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
    hparams = {"pretrain_epochs": 5, "pretrain_lr": 0.05, "n_tune": 8, "early_stop": True}

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
        cfg = {**self.cfg, "lr": self.opts["pretrain_lr"], "epochs": self.opts["pretrain_epochs"]}
        split = self.data.splits["train"]
        loader = TensorLoader(split, cfg["batch_size"], shuffle=True, augment=cfg["augment"],
                              gen=torch.Generator().manual_seed(cfg["seed"] + 1), drop_last=True)
        opt = make_optimizer(list(self.model.parameters()), cfg)
        sched = make_scheduler(opt, cfg, len(loader))
        self.model.train()
        for _ in range(cfg["epochs"]):
            for x, y in loader:
                loss = nn.functional.cross_entropy(self.model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()

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
