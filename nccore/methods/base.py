"""The method contract (DomainBed style): one class per method, registered by name, with its
hyperparameters and defaults beside it.

A method owns the model being trained and its optimiser. The trial calls `update(x, y)` once per
mini-batch (`update(x, y, g)` with the batch's group ids when the method sets `uses_groups`); it
returns the detached data loss, so no host sync happens per step. `end_of_epoch()` runs after every
epoch, and the trial evaluates `eval_model()`. `state_dict()` / `load_state_dict()` cover
everything a resumed trial needs.

There is one training step, `Method.update`; methods change it only through its hooks:
`forward(x)` (the network being trained), `loss(x, y, g)` (the data loss), `penalty()` (a term
added to the loss before backward) and `after_step()` (e.g. a proximal step after the optimiser).
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from ..catalogue import method_defaults
from ..registry import Registry

METHODS = Registry("method", key="method")


def register(name: str):
    """`@register("erm")`: add a Method class to METHODS and give it its `name`."""
    def deco(cls):
        cls.name = name
        return METHODS.register(name)(cls)
    return deco


class Method:
    name = "base"
    # Options, their defaults and checks, and the method's family and fusability are declared in
    # nccore.catalogue.METHOD_INFO[name]; nccore.config.validate_config checks a trial's options
    # (per-method ranges of shared keys: Key.method_range) before the method is built.
    uses_groups = False  # True: update() receives the batch's group ids g (e.g. GroupDRO)

    def __init__(self, model: nn.Module, cfg: dict, data):
        self.model, self.cfg, self.data = model, cfg, data
        self.opts = {**method_defaults(self.name), **cfg.get("method_options", {})}
        self.device = next(model.parameters()).device
        self.finished = False   # a method may end training early (e.g. early stopping)
        self.setup()
        n = len(self.train_split())
        steps_per_epoch = max(1, n // min(cfg["batch_size"], n))
        self.params = [p for p in self.trainable_parameters() if p.requires_grad]
        self.optimizer = self.build_optimizer()
        self.scheduler = make_scheduler(self.optimizer, cfg, steps_per_epoch)

    def build_optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer(self.params, self.cfg)

    def setup(self) -> None:
        """Work before the optimiser is built (pre-training a base model, freezing, ...)."""

    def train_split(self):
        """The Split the trial's loader iterates (tuning methods return their tuning set)."""
        return self.data.splits["train"]

    def train_mode(self) -> None:
        self.model.train()

    def trainable_parameters(self):
        return self.model.parameters()

    def autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.cfg["precision"])
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the network being trained (a tuned copy, a fused model, ...)."""
        return self.model(x)

    def loss(self, x: torch.Tensor, y: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        """The data loss of one mini-batch: mean cross-entropy of `forward(x)`."""
        with self.autocast():
            logits = self.forward(x)
        return nn.functional.cross_entropy(logits.float(), y)

    def penalty(self) -> torch.Tensor | None:
        """A regulariser added to the loss before backward (None: none)."""
        return None

    def after_step(self) -> None:
        """Work after each optimiser step (e.g. the proximal step of a penalty)."""

    def update(self, x: torch.Tensor, y: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        """One optimiser step on a mini-batch; returns the detached data loss (no host sync)."""
        loss = self.loss(x, y, g)
        reg = self.penalty()
        self.optimizer.zero_grad(set_to_none=True)
        (loss if reg is None else loss + reg).backward()
        self.optimizer.step()
        self.after_step()
        self.scheduler.step()
        return loss.detach()

    def end_of_epoch(self, epoch: int) -> dict:
        """Hook after each training epoch; may return extra scalar columns for the rows."""
        return {}

    def eval_model(self) -> nn.Module:
        return self.model

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "finished": self.finished}

    def load_state_dict(self, state: dict) -> None:
        self.finished = state.get("finished", False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def make_optimizer(params, cfg: dict) -> torch.optim.Optimizer:
    if not params:
        raise ValueError("no trainable parameters")
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    cls = torch.optim.Adam if cfg["optimizer"] == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def make_scheduler(opt, cfg: dict, steps_per_epoch: int):
    total = max(1, cfg["epochs"] * steps_per_epoch)
    if cfg["schedule"] == "cosine":
        fn = lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))  # noqa: E731
    elif cfg["schedule"] == "step":  # ×0.1 at 50% and 75% of training
        fn = lambda step: 0.1 ** ((step >= total // 2) + (step >= 3 * total // 4))  # noqa: E731
    else:
        fn = lambda step: 1.0  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(opt, fn)
