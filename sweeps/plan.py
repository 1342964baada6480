"""Turn a spec's search space into trials.

Grid and random search are materialised here, up front and deterministically from the spec's
seed: every planned trial config is known before Ray starts, written to the manifest, and a
resumed sweep re-plans the same list and runs only what is not finished. Optuna proposes
configs as results arrive, so only its count is planned; its space is built here too.
"""
from __future__ import annotations

import itertools
import json
import math
from typing import TYPE_CHECKING, Iterator

import numpy as np

from nccore.config import trial_id

if TYPE_CHECKING:   # the argument's type; the spec layer imports this module
    from .spec import Spec


def _sample(kind: str, vals, rng: np.random.Generator):
    if kind == "choice":
        return vals[int(rng.integers(len(vals)))]
    if kind == "uniform":
        return float(rng.uniform(vals[0], vals[1]))
    if kind == "loguniform":
        return float(math.exp(rng.uniform(math.log(vals[0]), math.log(vals[1]))))
    if kind == "randint":
        return int(rng.integers(int(vals[0]), int(vals[1])))
    raise ValueError(kind)


def plan_size(spec: Spec) -> int:
    """The number of trials the plan has, counted without building it: per subspace the product
    of the distinct grid values, × num_samples when a domain is sampled (repeats of a pure grid
    are the same trials). An upper bound when two variants plan the same config; Optuna: num_samples."""
    if spec.search["algorithm"] == "optuna":
        return spec.search["num_samples"]
    total = 0
    for space in spec.subspaces():
        n = 1
        for d in space.values():
            if "grid" in d:
                n *= len({json.dumps(v, sort_keys=True, default=str) for v in d["grid"]})
        sampled = any("grid" not in d for d in space.values())
        total += n * (spec.search["num_samples"] if sampled else 1)
    return total


def planned_configs(spec: Spec) -> list[dict]:
    """Full trial configs: the product of the grid values × num_samples draws of the sampled
    domains (Ray Tune's grid/random semantics), each with its stable `trial_id`."""
    return list(iter_planned_configs(spec))


def iter_planned_configs(spec: Spec) -> Iterator[dict]:
    """`planned_configs` one at a time (a plan above the cap is never held in memory)."""
    base = spec.base_config()
    rng = np.random.default_rng(spec.search["seed"])
    seen = set()
    for space in spec.subspaces():
        grid = {k: d["grid"] for k, d in space.items() if "grid" in d}
        sampled = {k: next(iter(d.items())) for k, d in space.items() if "grid" not in d}
        for _ in range(spec.search["num_samples"]):
            for combo in itertools.product(*grid.values()) if grid else [()]:
                cfg = {**base, **dict(zip(grid, combo)),
                       **{k: _sample(kind, v, rng) for k, (kind, v) in sampled.items()}}
                cfg["trial_id"] = trial_id(cfg)
                if cfg["trial_id"] not in seen:   # repeats of a pure grid are the same trial
                    seen.add(cfg["trial_id"])
                    yield cfg


def optuna_space(spec: Spec) -> dict:
    """Optuna distributions for the spec's sampled domains."""
    import optuna.distributions as od

    space = {}
    for k, d in spec.space.items():
        kind, v = next(iter(d.items()))
        space[k] = {"choice": lambda v: od.CategoricalDistribution(v),
                    "uniform": lambda v: od.FloatDistribution(v[0], v[1]),
                    "loguniform": lambda v: od.FloatDistribution(v[0], v[1], log=True),
                    "randint": lambda v: od.IntDistribution(int(v[0]), int(v[1]) - 1)}[kind](v)
    return space


def tune_trial_config(params: dict, base: dict) -> dict:
    """The full config of one Ray Tune trial, with its `trial_id`: planned trials carry their config
    whole under "trial"; a searcher's trials carry only the sampled keys, merged over `base`."""
    cfg = dict(params["trial"]) if "trial" in params else {**base, **params}
    cfg["trial_id"] = cfg.get("trial_id") or trial_id(cfg)
    return cfg


def chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]
