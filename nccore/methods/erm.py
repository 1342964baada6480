"""E.1 ERM: minimise the mean cross-entropy (SGD with momentum or Adam). Coarse-label training
(the fine-structure study) is ERM with `coarse: true`, which makes the dataset's target the
coarse label.

`train_erm` runs ERM epochs outside a trial's loop (a tuning method's base model, JTT's
identification run) through the same `Method.update` step."""
from __future__ import annotations

import torch
from torch import nn

from ..data.loader import TensorLoader
from .base import Method, register


@register("erm")
class ERM(Method):
    """Plain ERM; no options."""


def train_erm(model: nn.Module, cfg: dict, data, epochs: int, lr: float, seed_offset: int = 1) -> None:
    """`epochs` of ERM on data.splits["train"] with learning rate `lr` (the trial's optimiser,
    schedule and batch size); batches drawn from a generator seeded with seed + seed_offset."""
    if epochs < 1:
        return
    erm = ERM(model, {**cfg, "lr": lr, "epochs": epochs, "method_options": {}}, data)
    loader = TensorLoader(data.splits["train"], cfg["batch_size"], shuffle=True, augment=cfg["augment"],
                          gen=torch.Generator().manual_seed(cfg["seed"] + seed_offset), drop_last=True)
    for _ in range(epochs):
        erm.train_mode()
        for x, y in loader:
            erm.update(x, y)
