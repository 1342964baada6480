"""E.5 Side-tuning (Zhang, Sax, Zamir, Guibas, Malik, ECCV 2020) as a debiasing baseline.

Frozen base B, trainable side network S initialised as a copy of B, fused at the logits:
r(x) = α·B(x) + (1 − α)·S(x), with α = the sweep's `penalty` (∈ [0, 1]; 1 = base only).
For NC metrics the fused model exposes features(x) = [B.features(x); S.features(x)] and a linear
classifier [α·W_B, (1 − α)·W_S] with bias α·b_B + (1 − α)·b_S, which gives exactly r(x).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..models.base import GlobalAvgPool
from .base import register
from .tuning import TuningMethod


class SideTuned(nn.Module):
    def __init__(self, base: nn.Module, side: nn.Module, alpha: float):
        super().__init__()
        self.base, self.side, self.alpha = base, side, float(alpha)
        self.feature_dim = base.feature_dim + side.feature_dim
        # body/pool mirror features(x) = pool([B.body(x); S.body(x)]), so CAM applies to the fused model
        # (not registered as submodules: base and side are already).
        object.__setattr__(self, "body", _CatBody(base, side))
        self.pool = GlobalAvgPool()

    def forward(self, x):
        return self.alpha * self.base(x) + (1 - self.alpha) * self.side(x)

    def features(self, x):
        return torch.cat([self.base.features(x), self.side.features(x)], dim=1)

    @property
    def classifier(self) -> nn.Linear:
        a, b, s = self.alpha, self.base.classifier, self.side.classifier
        head = nn.Linear(self.feature_dim, b.out_features).to(b.weight.device)
        with torch.no_grad():
            head.weight.copy_(torch.cat([a * b.weight, (1 - a) * s.weight], dim=1))
            head.bias.copy_(a * b.bias + (1 - a) * s.bias)
        return head


class _CatBody(nn.Module):
    def __init__(self, base, side):
        super().__init__()
        object.__setattr__(self, "parts", (base, side))

    def forward(self, x):
        return torch.cat([m.body(x) for m in self.parts], dim=1)


@register("side_tuning")
class SideTuning(TuningMethod):
    # the range of α (`penalty` in [0, 1]) is declared in nccore.catalogue (CONFIG["penalty"].method_range)
    def prepare_tuning(self) -> None:
        side = copy.deepcopy(self.model)
        for p in side.parameters():
            p.requires_grad_(True)
        self.fused = SideTuned(self.model, side, self.cfg["penalty"])

    def trainable_parameters(self):
        return self.fused.side.parameters()

    def forward(self, x):
        return self.fused(x)

    def eval_model(self):
        return self.fused

    def extra_columns(self) -> dict:
        sq = sum(((s.detach() - b.detach()).double() ** 2).sum()
                 for s, b in zip(self.fused.side.parameters(), self.fused.base.parameters()))
        return {"delta_norm": float(torch.sqrt(sq))}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "side": self.fused.side.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.fused.side.load_state_dict(state["side"])
