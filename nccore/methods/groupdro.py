"""E.6 GroupDRO (Sagawa, Koh, Hashimoto, Liang, ICLR 2020), online algorithm (their Algorithm 1).

Per mini-batch: group losses L_g = mean CE over the batch's samples of group g (0 for a group
absent from the batch, as in the reference loss computer, so its weight is only renormalised);
weights q_g ← q_g · exp(η · L_g), then q ← q / Σ_g q_g; the loss minimised is Σ_g q_g L_g.
q starts uniform and is part of the method's state (a resumed trial continues with it). η is the
option `eta`; the paper pairs GroupDRO with strong L2 (the trial's `weight_decay`) and early
stopping on validation worst-group accuracy (the analysis' epoch selection). Groups are the
training split's g (2y + p for binary y), the only method here that reads training group labels.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Method, register


def group_losses(per_sample: torch.Tensor, g: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Mean of per_sample (B,) within each group id of g (B,); 0 for absent groups. Returns (G,)."""
    sums = torch.zeros(num_groups, dtype=per_sample.dtype, device=per_sample.device).index_add(0, g, per_sample)
    counts = torch.bincount(g, minlength=num_groups).to(per_sample.dtype)
    return sums / counts.clamp(min=1)


def update_group_weights(q: torch.Tensor, losses: torch.Tensor, eta: float) -> torch.Tensor:
    """Exponentiated-gradient step on the simplex: q ∝ q · exp(η · L)."""
    q = q * torch.exp(eta * losses.detach())
    return q / q.sum()


@register("groupdro")
class GroupDRO(Method):
    uses_groups = True

    def setup(self) -> None:
        G = self.data.num_groups
        self.q = torch.full((G,), 1.0 / G, device=self.device)

    def loss(self, x, y, g=None):
        if g is None:
            raise ValueError("GroupDRO needs the batch's group ids: update(x, y, g)")
        with self.autocast():
            logits = self.forward(x)
        per = nn.functional.cross_entropy(logits.float(), y, reduction="none")
        gl = group_losses(per, g, len(self.q))
        self.q = update_group_weights(self.q, gl, self.opts["eta"])
        return (self.q * gl).sum()

    def end_of_epoch(self, epoch: int) -> dict:
        q = self.q.cpu().tolist()
        return {"gdro_max_weight": max(q), "gdro_max_group": int(max(range(len(q)), key=q.__getitem__))}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "q": self.q.clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.q = state["q"].to(self.device)
