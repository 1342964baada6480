"""E.4 MAS — Memory Aware Synapses (Aljundi et al., ECCV 2018) as a debiasing baseline.

Importance Ω_j = (1/N) Σ_k |∂‖F(x_k; θ)‖₂² / ∂θ_j|, per-sample gradients of the squared L2 norm
of the output on unlabeled data (by default `mas_samples` images of the original, biased,
training distribution), exact with torch.func (`batchwise=True` accumulates |batch gradient| as
the official code does). Fine-tuning loss = CE on the tuning set + λ Σ_j Ω_j (θ_j − θ*_j)², with
λ = the sweep's `penalty` and θ* the base weights. The model itself is tuned (BN frozen).

`penalty_mode="explicit"` (default, the published form) adds the penalty to the loss; its gradient
step diverges once 2·lr·λ·max Ω > 2 (the spec's λ = 10 did). `"proximal"` applies the penalty's
exact proximal step after each optimiser step instead, elementwise
θ_j ← θ*_j + (θ_j − θ*_j) / (1 + 2·lr·λ·Ω_j), as change_penalty does with Ω ≡ 1: stable for any λ,
so MAS strengths can be calibrated on the same ‖Δ‖ ratios as change_penalty's λ.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from .base import register
from .tuning import TuningMethod


def mas_importance(model: nn.Module, x: torch.Tensor, batchwise: bool = False, chunk: int = 64) -> dict:
    """Ω per named parameter of `model` (eval mode) over inputs x (N, ...)."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b for n, b in model.named_buffers()}
    omega = {n: torch.zeros_like(p) for n, p in params.items()}

    def sq_norm(p, xi):
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return (out ** 2).sum()

    for xb in x.split(chunk):
        if batchwise:
            g = grad(lambda p: sum(sq_norm(p, xi) for xi in xb) / len(xb))(params)
            for n in omega:
                omega[n] += g[n].abs() * len(xb)
        else:
            g = vmap(grad(sq_norm), in_dims=(None, 0))(params, xb)
            for n in omega:
                omega[n] += g[n].abs().sum(0)
    return {n: o / len(x) for n, o in omega.items()}


def mas_proximal_step(model: nn.Module, anchor: dict, omega: dict, lr: float, lam: float) -> None:
    """Proximal step of λ Σ_j Ω_j (θ_j − θ*_j)² for step size lr: the minimiser of
    λ Ω (u − θ*)² + (u − θ)²/(2 lr), i.e. θ* + (θ − θ*)/(1 + 2 lr λ Ω), for every weight."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            a = anchor[n]
            p.copy_(a + (p - a) / (1 + 2 * lr * lam * omega[n]))


@register("mas")
class MAS(TuningMethod):

    def prepare_tuning(self) -> None:
        tr = self.data.splits["train"]
        self.omega = mas_importance(self.model, tr.x[: self.opts["mas_samples"]], self.opts["batchwise"])
        self.anchor = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        for p in self.model.parameters():
            p.requires_grad_(True)

    def penalty(self):
        if self.opts["penalty_mode"] == "proximal":
            return None
        reg = sum((self.omega[n] * (p - self.anchor[n]) ** 2).sum() for n, p in self.model.named_parameters())
        return self.cfg["penalty"] * reg

    def after_step(self) -> None:
        if self.opts["penalty_mode"] == "proximal" and self.cfg["penalty"] > 0:
            mas_proximal_step(self.model, self.anchor, self.omega, self.lr(), self.cfg["penalty"])

    def extra_columns(self) -> dict:
        sq = sum(((p.detach() - self.anchor[n]).double() ** 2).sum() for n, p in self.model.named_parameters())
        return {"delta_norm": float(torch.sqrt(sq))}
