"""Transfer pre-training with an explicit geometric-complexity regulariser (the causal arm of the
GC-transfer study; Munn, Dherin, Gonzalvo, NeurIPS 2024; Dherin et al., NeurIPS 2022).

Same protocol as `transfer` (pre-train on the source classes, measure GC, target-class collapse
and few-shot nearest-class-mean accuracy after every epoch), but the training loss is

    L = CE(W f(x) + b, y) + λ · GC_hat,   GC_hat = (1/B) Σ_i ||J_f(x_i)ᵀ v_i||²,

with λ = the trial's `penalty` and one Rademacher probe v_i ∈ {±1}^d per sample (unbiased for
(1/B) Σ_i ||J_f(x_i)||_F², the Hutchinson estimate of §C), differentiated with
`create_graph=True`. `penalty: 0` is plain transfer pre-training (the control).

The penalty is computed on a second forward of the batch in eval mode (BatchNorm with its running
statistics), the mode in which the rows' GC is measured. Why not on the training forward: there
BatchNorm's batch statistics couple the samples, and in a first try the network lowered that
train-mode estimate while the eval-mode GC it is meant to lower rose by orders of magnitude.
"""
from __future__ import annotations

import torch

from .base import register
from .transfer import Transfer


def gc_penalty(features: torch.Tensor, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Differentiable Hutchinson estimate of the mean ||∂f(x_i)/∂x_i||_F² over the batch.

    features: (B, d) = f(x) computed from x with requires_grad; x: (B, ...). One Rademacher
    probe per sample: E_v ||Jᵀv||² = ||J||_F² when E[vvᵀ] = I."""
    v = torch.randint(0, 2, features.shape, generator=gen).to(features.device, features.dtype) * 2 - 1
    (g,) = torch.autograd.grad((features * v).sum(), x, create_graph=True)
    return g.pow(2).sum() / len(x)


@register("gc_reg")
class GCRegularised(Transfer):
    """Options: those of `transfer` (declared in nccore.catalogue); `penalty` = λ."""

    def setup(self) -> None:
        super().setup()
        self.gen = torch.Generator().manual_seed(self.cfg["seed"])
        self._gc = None

    def loss(self, x: torch.Tensor, y: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        if self.cfg["penalty"] > 0:
            self._gc = self.gc_estimate(x)
        return super().loss(x, y, g)

    def gc_estimate(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable GC estimate of the embedding on this batch, in eval mode (BatchNorm with
        its running statistics), so samples are independent and the penalised quantity is the
        one the rows report; the training forward (batch statistics) is separate."""
        self.model.eval()
        try:
            xg = x.detach().requires_grad_(True)
            with self.autocast():
                f = self.model.features(xg)
            return gc_penalty(f.float(), xg, self.gen)
        finally:
            self.train_mode()

    def penalty(self) -> torch.Tensor | None:
        gc, self._gc = self._gc, None
        return None if gc is None else self.cfg["penalty"] * gc

    def state_dict(self) -> dict:
        return {**super().state_dict(), "probe_rng": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "probe_rng" in state:
            self.gen.set_state(state["probe_rng"])
