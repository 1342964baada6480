"""Trial configuration: defaults, validation at the edge, and the stable trial id.

A trial config is a plain dict. `validate_config` fills defaults and checks every key once,
raising ValueError that names the key, the bad value and what is allowed — before any work.
"""
from __future__ import annotations

import difflib
import hashlib
import json

DEFAULTS: dict = {
    "dataset": "biased_shapes",   # registry name (nccore.data.DATASETS)
    "data": {},                   # dataset options (n_train, image_size, root, target, ...)
    "bias_level": 0.0,            # β (bias_kind=spurious) or label-flip rate (bias_kind=label), in [0, 1]
    "bias_kind": "spurious",
    "group_by": "spurious",       # attribute of the per-subgroup rows: spurious (p) or sensitive (a)
    "coarse": False,              # coarse-label training: target = coarse labels, fine recovery measured
    "arch": "resnet18",
    "width": 0.25,
    "stem": "auto",
    "weights": None,              # local state_dict to start the backbone from
    "method": "erm",
    "method_options": {},
    "penalty": 0.0,               # the method's penalty / blend strength (λ, MAS λ, side-tuning α, ...)
    "init_from": None,            # checkpoint of an earlier trial (state.pt) or weights file to start from
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "schedule": "cosine",
    "epochs": 5,
    "batch_size": 128,
    "augment": True,
    "seed": 0,
    "device": "auto",
    "precision": "auto",          # auto: bf16 autocast on CUDA, fp32 on CPU
    "channels_last": "auto",
    "compile": False,
    "metrics": ["nc", "fairness"],  # also: gc, fine (auto with coarse)
    "metrics_train_samples": 5000,   # stratified train subsample for train-split metrics (rows record it)
    "eval_batch_size": 512,
    "fine_every": 0,              # fine recovery every k epochs (0: final epoch only)
    "gc_samples": 128,
    "gc_probes": 8,
    "checkpoint_dir": None,
    "trial_id": None,
}

CHOICES = {
    "bias_kind": ("spurious", "label"),
    "group_by": ("spurious", "sensitive"),
    "optimizer": ("sgd", "adam", "adamw"),
    "schedule": ("cosine", "constant", "step"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "channels_last": ("auto", True, False),
    "compile": (True, False),
    "coarse": (True, False),
    "augment": (True, False),
    "stem": ("auto", "cifar", "imagenet"),
}
METRIC_SETS = ("nc", "fairness", "gc", "fine")
# Keys that do not change what a trial computes: left out of its id.
_NOT_IN_ID = ("checkpoint_dir", "trial_id", "device", "eval_batch_size")
_ALIASES = {"learning_rate": "lr", "wd": "weight_decay", "architecture": "arch", "model": "arch",
            "bias": "bias_level", "num_epochs": "epochs", "bs": "batch_size", "lambda": "penalty"}


def _err(key, value, allowed) -> ValueError:
    return ValueError(f"config `{key}` = {value!r}: {allowed}")


def validate_config(config: dict) -> dict:
    """Return the full config (defaults filled in) or raise ValueError naming the problem."""
    from .data import DATASETS
    from .methods import METHODS
    from .models import ARCHS

    unknown = [k for k in config if k not in DEFAULTS]
    if unknown:
        k = unknown[0]
        near = [_ALIASES[k]] if k in _ALIASES else difflib.get_close_matches(k, DEFAULTS, n=1)
        hint = f"did you mean `{near[0]}`?" if near else f"known keys: {sorted(DEFAULTS)}"
        raise _err(k, config[k], f"unknown key; {hint}")
    cfg = {**DEFAULTS, **config}
    for key, allowed in (("dataset", DATASETS), ("arch", ARCHS), ("method", METHODS)):
        if cfg[key] not in allowed:
            raise _err(key, cfg[key], f"unknown {key}; choose one of {sorted(allowed)}")
    for key, allowed in CHOICES.items():
        if cfg[key] not in allowed:
            raise _err(key, cfg[key], f"choose one of {list(allowed)}")
    _number(cfg, "bias_level", lo=0.0, hi=1.0)
    _number(cfg, "lr", lo=0.0, lo_open=True)
    _number(cfg, "weight_decay", lo=0.0)
    _number(cfg, "momentum", lo=0.0, hi=1.0)
    _number(cfg, "penalty", lo=0.0)
    _number(cfg, "width", lo=0.0, lo_open=True)
    for key in ("epochs", "batch_size", "eval_batch_size", "metrics_train_samples", "gc_samples", "gc_probes"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
            raise _err(key, cfg[key], "must be a positive integer")
    bad = [m for m in cfg["metrics"] if m not in METRIC_SETS]
    if bad:
        raise _err("metrics", cfg["metrics"], f"unknown metric set {bad[0]!r}; choose from {list(METRIC_SETS)}")
    for key in ("data", "method_options"):
        if not isinstance(cfg[key], dict):
            raise _err(key, cfg[key], "must be a mapping")
    METHODS[cfg["method"]].check_options(cfg["method_options"])
    METHODS[cfg["method"]].check_config(cfg)
    return cfg


def _number(cfg, key, lo=None, hi=None, lo_open=False):
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _err(key, v, "must be a number")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise _err(key, v, f"must be {'>' if lo_open else '>='} {lo}" + (f" and <= {hi}" if hi is not None else ""))
    if hi is not None and v > hi:
        raise _err(key, v, f"must lie in [{lo}, {hi}]")


def trial_id(config: dict) -> str:
    """Stable 12-hex id of everything that changes what a trial computes (config incl. seed)."""
    cfg = {k: v for k, v in {**DEFAULTS, **config}.items() if k not in _NOT_IN_ID}
    blob = json.dumps(cfg, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
