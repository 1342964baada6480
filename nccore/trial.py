"""`run_trial(config)`: one trial from a plain dict, yielding a row per (epoch, split, group).

The loop reads top to bottom: build data (on the device), model and method; resume from the
checkpoint if one exists; then per epoch train (`method.update` per batch, no host sync), check
for divergence, evaluate, checkpoint, and yield the epoch's rows. nccore imports no Ray: the
sweep runner wraps `iter_epochs`.
"""
from __future__ import annotations

import contextlib
import math
import os
import platform
import random
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from . import __version__, checkpoint
from .catalogue import METRIC_SETS, config_columns, trial_metric_sets
from .config import CPU_CHANNELS_LAST, trial_id, validate_config
from .data import build_dataset
from .data.loader import TensorLoader
from .evaluate import evaluate, stratified_sample
from .methods import METHODS
from .models import build_model, family


@dataclass(frozen=True)
class Runtime:
    """Where and how a trial runs — state of the machine, not of the experiment. The config keys
    device / precision / channels_last say what the user asked for ('auto' allowed); `prepare`
    resolves them once through this object (no private keys in the config), and none of them is
    in the trial id (device) or the analysis axes. The rows record `device` (its name) and `amp`;
    timings are per-epoch row values (train_time, eval_time, images_per_s)."""
    device: str           # torch device string, 'auto' resolved
    precision: str        # autocast precision actually used
    channels_last: bool
    device_name: str

    @classmethod
    def resolve(cls, cfg: dict) -> "Runtime":
        """Fill the 'auto' settings: device (cuda if available), precision (bf16 on CUDA), channels_last (CUDA)."""
        device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg["device"] == "auto" else cfg["device"]
        cuda = device.startswith("cuda")
        precision = ("bf16" if cuda else "fp32") if cfg["precision"] == "auto" else cfg["precision"]
        cl = cuda if cfg["channels_last"] == "auto" else bool(cfg["channels_last"])
        if cl and not cuda:
            raise ValueError(f"config `channels_last` = True on device {device!r}: {CPU_CHANNELS_LAST}")
        return cls(device, precision, cl, _device_name(device), bool(cfg.get("deterministic")))

    deterministic: bool = False

    def columns(self) -> dict:
        return {"device": self.device_name, "amp": self.precision, "deterministic": self.deterministic}


def resolve_device(cfg: dict) -> dict:
    """The config with its 'auto' settings resolved to what this machine uses (see `Runtime`)."""
    rt = Runtime.resolve(cfg)
    return {**cfg, "device": rt.device, "precision": rt.precision, "channels_last": rt.channels_last}


@contextlib.contextmanager
def kernels(deterministic: bool):
    """Run a block with deterministic kernels when asked (config key `deterministic`): torch's
    deterministic algorithms, oneDNN off on the CPU (it picks its algorithm by problem shape, so a
    fused grouped convolution and a plain one differ), cuDNN deterministic without autotuning, and
    cuBLAS's fixed workspace. These are process-wide flags; they are restored when the block ends,
    so a Ray worker reused for another trial gets them back as they were."""
    if not deterministic:
        yield
        return
    # cuBLAS reads this when its handle is created: set it before the trial's first CUDA matmul
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True)
    try:
        with torch.backends.mkldnn.flags(enabled=False), \
                torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=False, deterministic=True):
            yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare(config: dict):
    """Validated config, dataset (on device), model and method — the pieces a trial trains."""
    cfg = resolve_device(validate_config(config))
    # the metric sets the trial computes, derived once (fine with coarse labels, gc with transfer)
    cfg["metrics"] = [m for m in METRIC_SETS if m in trial_metric_sets(cfg["metrics"], cfg["coarse"], cfg["method"])]
    seed_everything(cfg["seed"])
    data_opts = dict(cfg["data"], **({"target": "coarse"} if cfg["coarse"] else {}))
    data = build_dataset(cfg["dataset"], data_opts, cfg["bias_level"], cfg["bias_kind"], cfg["group_by"], cfg["seed"])
    dev = torch.device(cfg["device"])
    data.splits = {k: s.to(dev) for k, s in data.splits.items()}
    x = data.splits["train"].x
    model = build_model(cfg["arch"], data.num_classes, cfg["width"], x.shape[-1], cfg["stem"], x.shape[1],
                        cfg["weights"]).to(dev)
    if cfg["channels_last"]:
        model = model.use_channels_last()   # every input is converted by model.features
    if cfg["compile"]:
        model.compile()   # in place: the training forward is compiled, state_dict keys stay the same
    if cfg["init_from"]:
        load_init(model, cfg["init_from"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    method = METHODS[cfg["method"]](model, cfg, data)
    split = method.train_split()
    loader = TensorLoader(split, min(cfg["batch_size"], len(split)), shuffle=True, augment=cfg["augment"],
                          gen=gen, drop_last=True, groups=method.uses_groups)
    return cfg, data, model, method, loader, gen


def load_init(model, path) -> None:
    """Start from an earlier trial's checkpoint or a weights file (same architecture)."""
    state = checkpoint.load_model_state(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"init_from={str(path)!r} does not fit this model ({str(e).splitlines()[0]}); "
                         f"use the checkpoint of a trial with the same arch, width and classes") from e


def run_trial(config: dict) -> Iterator[dict]:
    """Yield one dict per (epoch, split, group) row; see `iter_epochs`."""
    for _, rows in iter_epochs(config):
        yield from rows


def iter_epochs(config: dict, sink=None) -> Iterator[tuple[int, list[dict]]]:
    """Yield (epoch, rows) after every epoch. With `checkpoint_dir`, the state after each epoch is
    saved there before its rows are yielded, and a trial whose directory already holds a
    checkpoint continues from it (same rows as an uninterrupted run on CPU). `sink(epoch, rows)`,
    if given, is called before the checkpoint is written, so a crash between the two re-runs the
    epoch rather than losing its rows. With `deterministic: true` all of it runs under `kernels`."""
    with kernels(bool(config.get("deterministic"))):
        yield from _epochs(config, sink)


def _epochs(config: dict, sink) -> Iterator[tuple[int, list[dict]]]:
    cfg, data, model, method, loader, gen = prepare(config)
    tid = cfg["trial_id"] or trial_id(config)
    train_idx = stratified_sample(data.splits["train"], data.subgroup(data.splits["train"]),
                                  cfg["metrics_train_samples"], cfg["seed"])
    start = 0
    state = checkpoint.load(cfg["checkpoint_dir"])
    if state is not None:
        method.load_state_dict(state["method"])
        checkpoint.set_rng_state(state["rng"], gen)
        start = state["epoch"] + 1
    fixed = fixed_columns(tid, cfg)
    for epoch in range(start, cfg["epochs"]):
        if method.finished:
            break
        t0 = time.perf_counter()
        method.train_mode()
        loss_sum = torch.zeros((), device=cfg["device"])
        for x, y, *g in loader:   # g: the batch's group ids, for methods with uses_groups
            loss_sum += method.update(x, y, *g)
        train_loss = float(loss_sum) / max(len(loader), 1)       # the one host sync of the epoch
        extra = method.end_of_epoch(epoch)
        rows = epoch_rows(cfg, fixed, method, data, train_idx, epoch, train_loss, time.perf_counter() - t0,
                          len(loader), extra)
        if sink is not None:
            sink(epoch, rows)
        if rows[0]["status"] == "diverged":
            yield epoch, rows
            return
        if cfg["checkpoint_dir"]:
            checkpoint.save(cfg["checkpoint_dir"], {"epoch": epoch, "method": method.state_dict(),
                                                     "rng": checkpoint.rng_state(gen), "config": config})
        yield epoch, rows


def fixed_columns(tid: str, cfg: dict) -> dict:
    """The columns every row of a trial carries: its id, config axes, family and runtime."""
    return {"trial_id": tid, **{k: cfg[k] for k in config_columns()}, "family": family(cfg["arch"]),
            **Runtime.resolve(cfg).columns()}


def epoch_rows(cfg: dict, fixed: dict, method, data, train_idx: torch.Tensor, epoch: int, train_loss: float,
               train_time: float, steps: int, extra: dict) -> list[dict]:
    """The rows of one trained epoch, for a plain trial and for a fused member alike: a `diverged`
    train row when the loss is not finite; the train row alone when no evaluation is due
    (`eval_every`); else one row per split × (all, each subgroup). `extra`: the method's
    end-of-epoch columns."""
    base = {**fixed, "epoch": epoch, "lr_now": method.lr(), "train_loss": train_loss, "train_time": train_time,
            "images_per_s": steps * cfg["batch_size"] / max(train_time, 1e-9),
            "metrics_train_samples": len(train_idx), **extra}
    if not math.isfinite(train_loss):
        return [{**base, "split": "train", "group": "all", "status": "diverged"}]
    if not eval_due(cfg, epoch, method.finished):
        return [{**base, "split": "train", "group": "all", "status": "ok"}]
    t1 = time.perf_counter()
    rows = evaluate(method.eval_model(), data, cfg, train_idx, method.autocast, epoch)
    base["eval_time"] = time.perf_counter() - t1
    return [{**base, **r, "status": "ok"} for r in rows]


def eval_due(cfg: dict, epoch: int, finished: bool = False) -> bool:
    """Evaluate after this epoch? Every `eval_every` epochs and after the last (or a method's early stop)."""
    return finished or (epoch + 1) % cfg["eval_every"] == 0 or epoch + 1 == cfg["epochs"]


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


def environment(cfg: dict | None = None) -> dict:
    """Library versions and determinism flags a result row needs to be reproduced: the cuDNN flags
    the trial of `cfg` runs with (`kernels` sets them for `deterministic: true`)."""
    det = bool((cfg or {}).get("deterministic"))
    return {"torch_version": torch.__version__, "ncsweep_version": __version__,
            "cudnn_deterministic": det or bool(torch.backends.cudnn.deterministic),
            "cudnn_benchmark": not det and bool(torch.backends.cudnn.benchmark)}
