"""Sweep specs: YAML (safe loader) → a validated `Spec`, or a `SpecError` naming the field, the
bad value and what is allowed — all before Ray starts.

    name: demo
    dataset: {name: biased_shapes, options: {n_train: 600}}
    base: {epochs: 3, width: 0.125}            # fixed run_trial config keys
    space:                                      # any run_trial config key
      arch: {grid: [resnet18, densenet121, vgg11]}
      lr: {loguniform: [0.01, 0.1]}
      bias_level: {choice: [0.5, 0.9]}
    variants:                                   # optional: sub-spaces merged over `space`, planned one
      - {method: change_penalty, penalty: {grid: [0.01, 1.0]}}     # after another (grid/random only)
      - {method: side_tuning, penalty: {grid: [0.5]}}
    search: {algorithm: random, num_samples: 4, seed: 0, metric: val_worst_group_acc, mode: max}
    scheduler: {type: asha, metric: val_worst_group_acc, mode: max, grace_period: 1}
    resources: {cpu: 1, gpu: 0.25}
    max_concurrent: 4
    retries: 2
    chunk_size: 256
"""
from __future__ import annotations

import hashlib
import itertools
import re
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from nccore.config import DEFAULTS, validate_config

from .loggers import check_loggers

TOP_KEYS = {"name", "description", "dataset", "base", "space", "variants", "search", "scheduler", "resources", "loggers",
            "max_concurrent", "retries", "chunk_size", "storage_path"}
DOMAINS = ("grid", "choice", "uniform", "loguniform", "randint")
ALGORITHMS = ("grid", "random", "optuna")
SPLITS = ("train", "val", "test")
REPORTED = ("acc", "loss", "worst_group_acc", "avg_acc", "mean_group_acc", "gap", "eo_diff", "dp_diff",
            "nc1", "nc1_tr_ratio", "nc2_etf", "nc3", "nc4_mismatch", "cdnv", "gc", "fine_nmi", "fine_cluster_acc",
            "fine_probe_acc", "dfr_worst_group_acc", "delta_norm", "fewshot_acc")
METRICS = tuple(f"{s}_{m}" for s in SPLITS for m in REPORTED) + ("train_loss",)


class SpecError(ValueError):
    """An invalid sweep spec; the message names the field, the value and what is allowed."""


@dataclass
class Spec:
    name: str
    dataset: dict
    base: dict
    space: dict
    search: dict
    scheduler: dict | None
    resources: dict
    max_concurrent: int | None
    retries: int
    chunk_size: int
    storage_path: str | None = None
    description: str = ""
    variants: list = field(default_factory=list)
    loggers: list = field(default_factory=list)   # tensorboard, mlflow, wandb (sweeps/loggers.py)
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def digest(self) -> str:
        """Hash of the parsed spec: a run directory belongs to exactly one spec."""
        return hashlib.sha256(json.dumps(self.raw, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def subspaces(self) -> list[dict]:
        """The space, or one merged space per variant (variant keys override `space`)."""
        return [{**self.space, **v} for v in self.variants] or [self.space]

    def base_config(self) -> dict:
        return {**self.base, "dataset": self.dataset["name"], "data": dict(self.dataset.get("options", {}))}


def _fail(field_: str, value, allowed: str):
    raise SpecError(f"spec field `{field_}` = {value!r}: {allowed}")


def load_spec(path) -> Spec:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec file {str(p)!r} not found; pass the path of a YAML spec (see sweeps/specs/)")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise SpecError(f"spec file {str(p)!r} is not valid YAML: {e}") from e
    return parse_spec(raw, default_name=p.stem)


def parse_spec(raw, default_name: str = "sweep") -> Spec:
    if not isinstance(raw, dict):
        _fail("<top>", raw, "a spec is a YAML mapping with keys " + ", ".join(sorted(TOP_KEYS)))
    for k in raw:
        if k not in TOP_KEYS:
            _fail(k, raw[k], f"unknown top-level key; allowed: {sorted(TOP_KEYS)}")
    dataset = raw.get("dataset", {"name": "biased_shapes"})
    if isinstance(dataset, str):
        dataset = {"name": dataset}
    if not isinstance(dataset, dict) or "name" not in dataset or set(dataset) - {"name", "options"}:
        _fail("dataset", dataset, "a mapping {name: <registry name>, options: {...}}")
    base = _coerce(dict(raw.get("base") or {}), "base")
    space = raw.get("space") or {}
    if not isinstance(space, dict):
        _fail("space", space, "a mapping of config key -> {grid|choice|uniform|loguniform|randint: ...}")
    space = {k: _domain(k, v) for k, v in space.items()}
    variants = raw.get("variants") or []
    if not isinstance(variants, list) or not all(isinstance(v, dict) and v for v in variants):
        _fail("variants", variants, "a list of mappings, each a sub-space merged over `space`")
    variants = [{k: _domain(k, d if isinstance(d, dict) else {"grid": [d]}) for k, d in v.items()} for v in variants]
    search = _search(raw.get("search") or {}, {**space, **{k: d for v in variants for k, d in v.items()}})
    if variants and search["algorithm"] == "optuna":
        _fail("variants", raw["variants"], "Optuna samples one space; use grid or random search with variants")
    spec = Spec(
        name=str(raw.get("name", default_name)), dataset=dataset, base=base, space=space, search=search,
        scheduler=_scheduler(raw.get("scheduler")), resources=_resources(raw.get("resources") or {}),
        max_concurrent=_positive_int(raw.get("max_concurrent"), "max_concurrent", optional=True),
        retries=_nonneg_int(raw.get("retries", 1), "retries"),
        chunk_size=_positive_int(raw.get("chunk_size", 256), "chunk_size"),
        storage_path=raw.get("storage_path"), description=str(raw.get("description", "")), raw=raw,
        variants=variants, loggers=check_loggers(raw.get("loggers")))
    _check_configs(spec)
    return spec


def _coerce(cfg: dict, where: str) -> dict:
    """YAML 1.1 reads `1e-3` as a string: turn numeric strings into floats for numeric keys."""
    for k, v in cfg.items():
        if isinstance(v, str) and isinstance(DEFAULTS.get(k), (int, float)) and not isinstance(DEFAULTS.get(k), bool):
            try:
                cfg[k] = float(v)
            except ValueError:
                _fail(f"{where}.{k}", v, "must be a number")
    return cfg


def _num(v, where):
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            _fail(where, v, "must be a number")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        _fail(where, v, "must be a number")
    return v


def _domain(key: str, dom) -> dict:
    where = f"space.{key}"
    if key not in DEFAULTS or key in ("dataset", "checkpoint_dir", "trial_id"):
        _fail(where, dom, f"`{key}` is not a sweepable run_trial config key; keys: {sorted(DEFAULTS)}")
    if not isinstance(dom, dict) or len(dom) != 1 or next(iter(dom)) not in DOMAINS:
        _fail(where, dom, f"one of {{{' | '.join(DOMAINS)}: ...}}")
    kind, vals = next(iter(dom.items()))
    if kind in ("grid", "choice"):
        if not isinstance(vals, list) or not vals:
            _fail(f"{where}.{kind}", vals, "a non-empty list of values")
        numeric = isinstance(DEFAULTS.get(key), (int, float)) and not isinstance(DEFAULTS.get(key), bool)
        return {kind: [_num(v, f"{where}.{kind}") if numeric and isinstance(v, str) else v for v in vals]}
    if not isinstance(vals, list) or len(vals) != 2:
        _fail(f"{where}.{kind}", vals, "a list [low, high]")
    lo, hi = (_num(v, f"{where}.{kind}") for v in vals)
    if not lo < hi:
        _fail(f"{where}.{kind}", vals, "needs low < high")
    if kind == "loguniform" and lo <= 0:
        _fail(f"{where}.{kind}", vals, "log-uniform bounds must be > 0")
    return {kind: [lo, hi]}


def _search(search: dict, space: dict) -> dict:
    allowed = {"algorithm", "num_samples", "seed", "metric", "mode"}
    for k in search:
        if k not in allowed:
            _fail(f"search.{k}", search[k], f"unknown key; allowed: {sorted(allowed)}")
    out = {"algorithm": search.get("algorithm", "grid"), "num_samples": search.get("num_samples", 1),
           "seed": search.get("seed", 0), "metric": search.get("metric"), "mode": search.get("mode", "max")}
    if out["algorithm"] not in ALGORITHMS:
        _fail("search.algorithm", out["algorithm"], f"choose one of {list(ALGORITHMS)}")
    _positive_int(out["num_samples"], "search.num_samples")
    if out["mode"] not in ("min", "max"):
        _fail("search.mode", out["mode"], "'min' or 'max'")
    kinds = {k: next(iter(d)) for k, d in space.items()}
    if out["algorithm"] == "grid":
        rnd = [k for k, kind in kinds.items() if kind != "grid"]
        if rnd:
            _fail(f"space.{rnd[0]}", space[rnd[0]], "algorithm `grid` takes only {grid: [...]} domains; "
                  "use search.algorithm: random (or optuna) for sampled domains")
    if out["algorithm"] == "optuna":
        grids = [k for k, kind in kinds.items() if kind == "grid"]
        if grids:
            _fail(f"space.{grids[0]}", space[grids[0]], "Optuna samples its space: use {choice: [...]} not grid")
        if out["metric"] is None:
            _fail("search.metric", None, f"Optuna needs the metric it optimises; one of {list(METRICS)}")
    if out["metric"] is not None and out["metric"] not in METRICS:
        _fail("search.metric", out["metric"], f"unknown metric; one of {list(METRICS)}")
    return out


def _scheduler(s) -> dict | None:
    if s is None:
        return None
    allowed = {"type", "metric", "mode", "grace_period", "reduction_factor"}
    if not isinstance(s, dict):
        _fail("scheduler", s, "a mapping {type: asha, metric: ..., mode: ...}")
    for k in s:
        if k not in allowed:
            _fail(f"scheduler.{k}", s[k], f"unknown key; allowed: {sorted(allowed)}")
    if s.get("type", "asha") != "asha":
        _fail("scheduler.type", s.get("type"), "only 'asha' is supported")
    if s.get("metric") not in METRICS:
        _fail("scheduler.metric", s.get("metric"), f"unknown metric; one of {list(METRICS)}")
    if s.get("mode", "max") not in ("min", "max"):
        _fail("scheduler.mode", s.get("mode"), "'min' or 'max'")
    return {"type": "asha", "metric": s["metric"], "mode": s.get("mode", "max"),
            "grace_period": _positive_int(s.get("grace_period", 1), "scheduler.grace_period"),
            "reduction_factor": _num(s.get("reduction_factor", 2), "scheduler.reduction_factor")}


def _resources(r: dict) -> dict:
    for k in r:
        if k not in ("cpu", "gpu"):
            _fail(f"resources.{k}", r[k], "allowed keys: cpu, gpu")
    cpu, gpu = _num(r.get("cpu", 1), "resources.cpu"), _num(r.get("gpu", 0), "resources.gpu")
    if cpu <= 0:
        _fail("resources.cpu", cpu, "must be > 0")
    if gpu < 0 or (gpu > 1 and gpu != int(gpu)):
        _fail("resources.gpu", gpu, "must be >= 0: a fraction (e.g. 0.25 packs 4 trials per GPU) or a whole number")
    return {"cpu": cpu, "gpu": gpu}


def _positive_int(v, where, optional=False):
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        _fail(where, v, "must be a positive integer")
    return v


def _nonneg_int(v, where):
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        _fail(where, v, "must be an integer >= 0")
    return v


def _check_configs(spec: Spec) -> None:
    """Validate the base config, every grid/choice value and both ends of every range through
    nccore's own `validate_config`, and that local files the trials need exist."""
    from nccore.data import DATASETS

    if spec.dataset["name"] not in DATASETS:
        _fail("dataset.name", spec.dataset["name"], f"unknown dataset; choose one of {sorted(DATASETS)}")
    base = spec.base_config()
    for i, sub in enumerate(spec.subspaces()):
        where = "space" if not spec.variants else f"variants[{i}]"
        values = {k: [int(v) if next(iter(d)) == "randint" else v for v in next(iter(d.values()))] for k, d in sub.items()}
        first = {k: v[0] for k, v in values.items()}
        checks = [{**first, k: v} for k, vals in values.items() for v in vals]   # every value at least once
        checks += [dict(zip(values, c)) for c in itertools.islice(itertools.product(*values.values()), 2000)]
        for combo in checks or [{}]:
            try:
                validate_config({**base, **combo})
            except ValueError as e:
                m = re.search(r"config `(\w+)`", str(e))
                key = m.group(1) if m else None
                field_ = f"{where}.{key}" if key in values else ("dataset.options" if key == "data" else "base")
                raise SpecError(f"spec field `{field_}`: {e}" + (f" (with {combo})" if len(values) > 1 else "")) from e
    paths = [("dataset.options.root", base["data"].get("root"))]
    paths += [(f"base.{k}", base.get(k)) for k in ("weights", "init_from")]
    paths += [(f"space.{k}", v) for sub in spec.subspaces() for k in ("weights", "init_from") if k in sub
              for v in next(iter(sub[k].values()))]
    for where, path in paths:
        if path and not str(path).startswith("trial:") and not Path(path).exists():
            _fail(where, path, "path not found on this machine; point it to the local copy (on a cluster: "
                  "a path every node can read)")

