"""E.7 JTT — Just Train Twice (Liu, Haghgoo, Chen, Raghunathan, Koh, Sagawa, Liang, Finn, ICML 2021).

Stage 1 (in `setup`): ERM for `id_epochs` epochs from the trial's initial weights; the error set
E = training samples it misclassifies (eval mode, observed labels). Stage 2: the weights go back
to the same initial values and the trial trains ERM on the training split with every sample of E
repeated `upweight` (λ_up) times in total — the paper's upsampling. No group labels are used in
training; model selection (validation worst-group accuracy) is the analysis' epoch rule. With
λ_up = 1 stage 2 is exactly the ERM trial of the same seed.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from .base import Method, register
from .erm import train_erm


@torch.no_grad()
def error_set(model, x: torch.Tensor, y: torch.Tensor, bs: int = 512) -> torch.Tensor:
    """Boolean (N,) mask of the samples the model (eval mode) misclassifies."""
    model.eval()
    pred = torch.cat([model(x[i:i + bs]).argmax(1) for i in range(0, len(x), bs)])
    return pred != y


def upsample_indices(errors: np.ndarray, upweight: int) -> np.ndarray:
    """Every index once, then the error indices upweight − 1 more times (λ_up copies in total)."""
    n = len(errors)
    extra = np.repeat(np.flatnonzero(errors), max(int(upweight) - 1, 0))
    return np.concatenate([np.arange(n), extra])


@register("jtt")
class JTT(Method):

    def setup(self) -> None:
        init = copy.deepcopy(self.model.state_dict())
        train_erm(self.model, self.cfg, self.data, self.opts["id_epochs"], self.cfg["lr"])
        tr = self.data.splits["train"]
        err = error_set(self.model, tr.x, tr.y).cpu().numpy()
        self.model.load_state_dict(init)
        self.errors = err
        self.upsampled = tr.subset(torch.as_tensor(upsample_indices(err, self.opts["upweight"])))

    def train_split(self):
        return self.upsampled

    def end_of_epoch(self, epoch: int) -> dict:
        g = self.data.splits["train"].g.cpu().numpy()
        minority = np.isin(g, [1, 2]) if self.data.num_groups == 4 else np.zeros_like(self.errors)
        share = float(self.errors[minority].sum() / max(self.errors.sum(), 1))
        return {"jtt_error_rate": float(self.errors.mean()), "jtt_error_minority_share": share}
