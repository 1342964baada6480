"""Trial configuration: defaults, validation at the edge, and the stable trial id.

A trial config is a plain dict whose keys, defaults and accepted values are declared in
`nccore.catalogue` (CONFIG, METHOD_OPTIONS, DATASET_OPTIONS). `config_problems` lists every
problem of a config; `validate_config` fills defaults and raises ValueError naming each bad key,
its value and what is allowed — before any work. Nothing here imports torch.
"""
from __future__ import annotations

import copy
import hashlib
import json

from .catalogue import (CONFIG, DEFAULTS, METHOD_OPTIONS, check_value, config_aliases, dataset_options,
                        dataset_target, did_you_mean, method_defaults, provided_by)
from .transfer_arms import declared_families, split_classes

__all__ = ["CPU_CHANNELS_LAST", "DEFAULTS", "config_problems", "validate_config", "trial_id"]

# Why `channels_last: true` is refused where a trial runs on the CPU (nccore.models.base has the detail).
CPU_CHANNELS_LAST = ("channels-last on the CPU is refused: oneDNN's AVX2 1x1 stride-2 convolution backward writes "
                     "past its workspace on channels-last tensors with few channels and corrupts the heap (oneDNN "
                     "issue #6035); use `channels_last: auto` (channels-last on CUDA only) or false")


def config_problems(config: dict) -> list[tuple[str, object, str]]:
    """Every problem of a trial config as (field path, value, what is allowed); [] when valid.
    Paths: `lr`, `method_options.n_tune`, `data.n_train`."""
    if not isinstance(config, dict):
        return [("<config>", config, "a trial config is a mapping of config keys")]
    out = []
    for k in config:
        if k not in CONFIG:
            out.append((str(k), config[k], f"unknown key; {did_you_mean(k, CONFIG, config_aliases())}"))
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if k in CONFIG}}
    method = cfg["method"] if isinstance(cfg["method"], str) and cfg["method"] in METHOD_OPTIONS else None
    for name, key in CONFIG.items():
        err = check_value(key, cfg[name], method)
        if err:
            out.append((name, cfg[name], err))
    if cfg["channels_last"] is True and cfg["device"] == "cpu":
        out.append(("channels_last", True, CPU_CHANNELS_LAST))
    if method is not None and isinstance(cfg["method_options"], dict):
        out += _options(cfg["method_options"], METHOD_OPTIONS[method], "method_options",
                        f"method {method!r}")
    if isinstance(cfg["dataset"], str) and isinstance(cfg["data"], dict) and not check_value(CONFIG["dataset"], cfg["dataset"]):
        out += _options(cfg["data"], dataset_options(cfg["dataset"]), "data", f"dataset {cfg['dataset']!r}")
    if not out and method is not None and "target_arm" in METHOD_OPTIONS[method]:
        out += _arm_problems(cfg, method)
    return out


def _arm_problems(cfg: dict, method: str) -> list:
    """A transfer arm that the dataset's declared class families cannot build (before any trial)."""
    opts = {**method_defaults(method), **cfg["method_options"]}
    if opts["target_arm"] == "first":
        return []
    target = dataset_target(cfg["dataset"], cfg["data"])
    families = declared_families(cfg["dataset"], target)
    if families is None:
        return [("method_options.target_arm", opts["target_arm"],
                 f"needs class families, which dataset {cfg['dataset']!r} with target {target!r} does not have; "
                 f"use target_arm: first, or a dataset with families ({provided_by('class_families')})")]
    try:
        split_classes(range(len(families)), opts["n_source"], opts["target_arm"], families, opts["n_target"])
    except ValueError as e:
        return [("method_options", {k: opts[k] for k in ("target_arm", "n_source", "n_target")}, str(e))]
    return []


def _options(opts: dict, keys: dict, where: str, what: str, required: bool = True) -> list:
    out = []
    for k, v in opts.items():
        if k not in keys:
            out.append((f"{where}.{k}", v, f"not an option of {what}; {did_you_mean(k, keys)}"))
        else:
            err = check_value(keys[k], v)
            if err:
                out.append((f"{where}.{k}", v, err))
    for k, key in keys.items():
        if required and key.required and k not in opts:
            out.append((f"{where}.{k}", None, f"required: {key.help}"))
    return out


def validate_config(config: dict) -> dict:
    """Return the full config (defaults filled in) or raise ValueError naming every problem."""
    problems = config_problems(config)
    if problems:
        raise ValueError("\n".join(f"config `{p}` = {v!r}: {msg}" for p, v, msg in problems))
    return {**copy.deepcopy(DEFAULTS), **config}


def trial_id(config: dict) -> str:
    """Stable 12-hex id of everything that changes what a trial computes (config incl. seed)."""
    cfg = {k: v for k, v in {**DEFAULTS, **config}.items()
           if k not in CONFIG or (CONFIG[k].in_id and not (CONFIG[k].id_if_set and v == CONFIG[k].default))}
    blob = json.dumps(cfg, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
