"""Shared machinery of the debiasing-by-tuning methods (change-penalised tuning, MAS,
side-tuning), as in Penzel, Stein, Denzler (VISAPP 2024):

- a base model: the trial's model after `pretrain_epochs` of ERM on the (biased) training split,
  or the checkpoint / weights named by `init_from` (then `pretrain_epochs` is ignored);
- a tuning set drawn from the training split with the trial's seed: `n_tune` bias-contradicting
  samples from each bias-contradicting group (p ≠ y mod 2) mixed with `n_ordinary` (default:
  n_tune) ordinary samples from each bias-aligned group;
- one trial epoch = one pass over the tuning set (`epochs` is the cap). Early stopping
  (`stop_on: val`, default) reads the held-out val split: worst-group accuracy after every epoch,
  stop after `patience` epochs without improvement, and the best epoch's weights are restored
  before the final rows (so the last rows are the selected model's); `stop_on: tune` stops at
  the first epoch after which every tuning sample is classified correctly (the tuning set then
  decides, which lets an unpenalised model flip the shortcut and stop at once).
The frozen base is measured once: `base_worst_group_acc` (test), `base_val_worst_group_acc`, and
`base_probe_wga` — test worst-group accuracy of an L2 logistic probe fitted on the base's features
of the group-balanced val split (does the base encode the core feature?). The penalty strength
comes from the sweep's `penalty` axis. BatchNorm statistics stay frozen.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint
from ..catalogue import keys_determining
from ..metrics import worst_group_accuracy
from ..metrics.saliency import saliency_summary
from .base import Method
from .erm import train_erm


def tuning_indices(y: np.ndarray, p: np.ndarray, n_tune: int, seed: int, n_ordinary: int = 0) -> np.ndarray:
    """n_tune rows from every bias-contradicting (y, p) group (p ≠ y mod 2) and n_ordinary rows from
    every bias-aligned group, seeded; sorted indices."""
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(y):
        for q in np.unique(p):
            rows = np.flatnonzero((y == c) & (p == q))
            k = n_tune if q != c % 2 else n_ordinary
            if k and len(rows) < k:
                kind = "bias-contradicting" if q != c % 2 else "ordinary"
                raise ValueError(f"{'n_tune' if q != c % 2 else 'n_ordinary'}={k}: only {len(rows)} {kind} training "
                                 f"samples with y={c}, p={q}; lower it or the bias level")
            out.append(rng.permutation(rows)[:k])
    return np.sort(np.concatenate(out))


def base_cache_path(cfg: dict, opts: dict) -> Path | None:
    """Where the base of this config is cached: beside the trial checkpoints of the run directory
    (<run>/checkpoints/_bases/<hash>.pt), so the λ × n × method grid of one seed trains its base once.
    None without a checkpoint_dir (a bare run_trial)."""
    if not cfg.get("checkpoint_dir"):
        return None
    key = {k: cfg.get(k) for k in keys_determining("base")}   # catalogue: Key.determines
    key.update(pretrain_epochs=opts["pretrain_epochs"], pretrain_lr=opts["pretrain_lr"])
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return checkpoint.join(checkpoint.parent(cfg["checkpoint_dir"]), "_bases", f"{digest}.pt")


class TuningMethod(Method):

    def setup(self) -> None:
        if not self.cfg["init_from"]:
            self._pretrain()
        self.model.eval()
        for prm in self.model.parameters():
            prm.requires_grad_(False)
        tr = self.data.splits["train"]
        n_ord = self.opts["n_ordinary"] if self.opts["n_ordinary"] is not None else self.opts["n_tune"]
        idx = tuning_indices(tr.y.cpu().numpy(), tr.p.cpu().numpy(), self.opts["n_tune"], self.cfg["seed"], n_ord)
        self.tune_set = tr.subset(torch.as_tensor(idx))
        self.base_columns = self._measure_base()
        self.best, self.since_best = None, 0
        self.prepare_tuning()

    def prepare_tuning(self) -> None:
        """Build the trainable parts (Δ, side network, importance weights)."""
        raise NotImplementedError

    def _pretrain(self) -> None:
        """ERM pre-training of the base, cached across the trials of one run directory that share it."""
        path = base_cache_path(self.cfg, self.opts)
        data = checkpoint.read_file(path) if path is not None else None
        if data is not None:
            try:
                self.model.load_state_dict(torch.load(io.BytesIO(data), map_location=self.device))
                return
            except (RuntimeError, EOFError, OSError):   # a damaged cache file: train again
                pass
        train_erm(self.model, self.cfg, self.data, self.opts["pretrain_epochs"], self.opts["pretrain_lr"])
        if path is not None:
            buf = io.BytesIO()
            torch.save(self.model.state_dict(), buf)
            checkpoint.write_file(path, buf.getvalue())

    def _measure_base(self) -> dict:
        from .dfr import embed, fit_dfr

        te, va = self.data.splits["test"], self.data.splits["val"]
        out = {"base_worst_group_acc": _wga(self.model, te), "base_val_worst_group_acc": _wga(self.model, va)}
        try:
            coef, icpt, sc, _ = fit_dfr(embed(self.model, va.x), embed(self.model, va.x), va.y_clean.cpu().numpy(),
                                        va.g.cpu().numpy(), self.data.num_groups, n_refits=5, seed=self.cfg["seed"],
                                        penalty="l2")
            xte = sc.transform(embed(self.model, te.x))
            z = xte @ coef.T + icpt
            pred = (z[:, 0] > 0).astype(int) if z.shape[1] == 1 else z.argmax(1)
            out["base_probe_wga"] = worst_group_accuracy(te.y_clean.cpu().numpy(), pred, te.g.cpu().numpy())
        except ValueError:   # a group without val samples: no balanced probe
            out["base_probe_wga"] = float("nan")
        if "saliency" in self.cfg["metrics"]:
            out.update({f"{k}_before": v for k, v in saliency_summary(self.model, te, seed=self.cfg["seed"]).items()})
        return out

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
        last = epoch + 1 >= self.cfg["epochs"]
        out = {"tune_acc": acc, "n_tune": len(self.tune_set), "n_tune_per_group": self.opts["n_tune"]}
        if self.opts["early_stop"] and self.opts["stop_on"] == "tune":
            self.finished = acc == 1.0
        elif self.opts["early_stop"]:
            val = _wga(self.eval_model(), self.data.splits["val"])
            if self.best is None or val > self.best[0]:
                self.best, self.since_best = (val, epoch, [p.detach().clone() for p in self.params]), 0
            else:
                self.since_best += 1
            if self.since_best >= self.opts["patience"] or last:
                with torch.no_grad():
                    for p, b in zip(self.params, self.best[2]):
                        p.copy_(b)
                self.finished = True
            out.update(val_worst_group_acc_best=self.best[0], best_epoch=self.best[1])
        out["early_stopped"] = self.finished and not last
        if self.finished or last:
            out.update(self.base_columns)
        else:
            out.update({k: v for k, v in self.base_columns.items() if not k.startswith("saliency_panel")})
        return {**out, **self.extra_columns()}

    def extra_columns(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "best": self.best, "since_best": self.since_best}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.best, self.since_best = state.get("best"), state.get("since_best", 0)


@torch.no_grad()
def _wga(model, split, bs: int = 512) -> float:
    model.eval()
    pred = torch.cat([model(split.x[i:i + bs]).argmax(1) for i in range(0, len(split), bs)])
    return worst_group_accuracy(split.y_clean.cpu().numpy(), pred.cpu().numpy(), split.g.cpu().numpy())
