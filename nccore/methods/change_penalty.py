"""E.3 Change-penalised tuning (Penzel, Stein, Denzler, VISAPP 2024).

Every weight tensor θ_l of the frozen base becomes θ_l⁰ + Δ_l with a zero-initialised change Δ_l,
so the tuned model equals the base exactly at step 0. Loss = CE on the tuning set + λ·Σ_l‖Δ_l‖²
with λ = the sweep's `penalty`. With `penalty_mode="proximal"` (default) the penalty is applied
as its exact proximal step after each optimiser step, Δ ← Δ / (1 + 2·lr·λ) (L1: soft-threshold),
which is stable for any λ — an explicit gradient 2λΔ diverges once 2·lr·λ > 2. `"explicit"` adds
λ‖Δ‖² to the loss. Either way, with SGD this is L2-SP fine-tuning (‖θ − θ⁰‖²) step for step.
Weight decay is not applied to Δ: the penalty is the regulariser.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call

from .base import make_optimizer, register
from .tuning import TuningMethod


class DeltaModel(nn.Module):
    """f(x; θ⁰ + Δ) with frozen θ⁰ (the base module) and trainable Δ (zeros)."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.names = [n for n, _ in base.named_parameters()]
        self.delta = nn.ParameterList([nn.Parameter(torch.zeros_like(p)) for _, p in base.named_parameters()])
        self.feature_dim = base.feature_dim

    def weights(self) -> dict:
        return {n: p + d for (n, p), d in zip(self.base.named_parameters(), self.delta)}

    def forward(self, x):
        return functional_call(self.base, self.weights(), (x,))

    def features(self, x):
        return functional_call(_Features(self.base), {f"m.{k}": v for k, v in self.weights().items()}, (x,))

    def norm(self) -> float:
        return float(torch.sqrt(sum((d.detach().double() ** 2).sum() for d in self.delta)))

    def materialise(self) -> nn.Module:
        """A plain copy of the base with θ⁰ + Δ (what evaluation and checkpoints of weights use)."""
        m = copy.deepcopy(self.base)
        with torch.no_grad():
            for (n, p), d in zip(m.named_parameters(), self.delta):
                p.add_(d)
        return m


class _Features(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m.features(x)


def penalty_step(params, lr: float, lam: float, norm: str) -> None:
    """Proximal step of λ·‖Δ‖² (shrink) or λ·‖Δ‖₁ (soft-threshold) for step size lr."""
    with torch.no_grad():
        for d in params:
            if norm == "l2":
                d.div_(1 + 2 * lr * lam)
            else:
                d.copy_(torch.sign(d) * torch.clamp(d.abs() - lr * lam, min=0))


@register("change_penalty")
class ChangePenalty(TuningMethod):
    # options (penalty_mode, norm, ...) and their accepted values: nccore.catalogue.METHOD_OPTIONS

    def prepare_tuning(self) -> None:
        self.delta_model = DeltaModel(self.model).to(self.device)

    def trainable_parameters(self):
        return self.delta_model.delta.parameters()

    def _penalty(self) -> torch.Tensor:
        if self.opts["norm"] == "l2":
            return sum((d ** 2).sum() for d in self.delta_model.delta)
        return sum(d.abs().sum() for d in self.delta_model.delta)

    def forward(self, x):
        return self.delta_model(x)

    def penalty(self):
        if self.opts["penalty_mode"] == "explicit":
            return self.cfg["penalty"] * self._penalty()
        return None

    def after_step(self) -> None:
        if self.opts["penalty_mode"] == "proximal" and self.cfg["penalty"] > 0:
            penalty_step(self.delta_model.delta, self.lr(), self.cfg["penalty"], self.opts["norm"])

    def build_optimizer(self):
        return make_optimizer(self.params, {**self.cfg, "weight_decay": 0.0})

    def eval_model(self):
        return self.delta_model.materialise()

    def extra_columns(self) -> dict:
        return {"delta_norm": self.delta_model.norm()}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "delta": self.delta_model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.delta_model.load_state_dict(state["delta"])

