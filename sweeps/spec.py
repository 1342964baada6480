"""Sweep specs: YAML (strict safe loader) → a validated `Spec`, or a `SpecError` listing every
problem, one line each, naming the field's full path, the bad value and what is allowed — all
before Ray or torch start. What is accepted comes from `nccore.catalogue`; docs/spec.md is
generated from the same tables (`ncsweep keys`).

    name: demo
    dataset: {name: biased_shapes, options: {n_train: 600}}
    base: {epochs: 3, width: 0.125}            # fixed run_trial config keys
    space:                                      # any sweepable run_trial config key
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
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from nccore.catalogue import CONFIG, DEFAULTS

from . import checks, crosschecks
from .yamlsafe import YamlProblem, load_yaml

TOP_KEYS = {"name", "description", "dataset", "base", "space", "variants", "search", "scheduler", "resources",
            "loggers", "max_concurrent", "retries", "chunk_size", "storage_path", "fuse", "pack", "study"}
DOMAINS = checks.DOMAINS
ALGORITHMS = ("grid", "random", "optuna")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class SpecError(ValueError):
    """An invalid sweep spec. `problems`: one line per problem, each naming the field, the value
    and what is allowed; str(error) joins them."""

    def __init__(self, problems):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


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
    fuse: int = 0                                  # configurations per fused trial (sweeps/fuse.py); 0: off
    pack: int = 0                                  # configurations run one after another per Ray trial (sweeps/pack.py)
    study: dict | None = None                      # the declared findings (sweeps/checks.py `study`)
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

    def swept_axes(self) -> list[str]:
        return swept_axes(self)


def swept_axes(spec: Spec) -> list[str]:
    """Config keys whose value differs between the spec's trials (in catalogue order): the axes
    an analysis of its run should use. Recorded in the run's manifest."""
    base = {**DEFAULTS, **spec.base}
    values: dict[str, set] = {}
    subs = spec.subspaces()
    for k in {k for s in subs for k in s}:
        vals = set()
        for s in subs:
            dom = s.get(k, {"grid": [base.get(k)]})
            kind, v = next(iter(dom.items()))
            if kind in ("grid", "choice"):
                vals |= {json.dumps(x, sort_keys=True, default=str) for x in v}
            else:
                vals |= {"sampled-low", "sampled-high"}
        values[k] = vals
    return [k for k in CONFIG if len(values.get(k, ())) > 1]


def load_spec(path, allow_large: bool = False) -> Spec:
    """Read and validate a spec file; SpecError lists every problem."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec file {str(p)!r} not found; pass the path of a YAML spec (see sweeps/specs/)")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"spec file {str(p)!r} cannot be read: {e}") from None
    try:
        raw, dups = load_yaml(text, f"spec file {str(p)!r}")
    except YamlProblem as e:
        raise SpecError(e.lines) from None
    return parse_spec(raw, default_name=p.stem, allow_large=allow_large, _extra=dups)


def parse_spec(raw, default_name: str = "sweep", allow_large: bool = False, _extra=()) -> Spec:
    """Validate a spec mapping: a `Spec`, or SpecError with one line per problem."""
    pr = checks.Problems(list(_extra))
    try:
        spec = _parse(raw, default_name, pr)
        if spec is not None and not pr:
            with pr.guard("<plan>"):
                crosschecks.check_plan(spec, pr, allow_large)
    except Exception as e:  # a bug here must still not be a traceback for the user
        pr.add("<spec>", None, f"could not be checked ({type(e).__name__}: {e}); please report this spec")
    if pr:
        raise SpecError(pr.lines)
    return spec


def _parse(raw, default_name, pr: "checks.Problems") -> Spec | None:
    if not isinstance(raw, dict):
        pr.add("<top>", raw, "a spec is a YAML mapping with keys " + ", ".join(sorted(TOP_KEYS)))
        return None
    for k in raw:
        if k not in TOP_KEYS:
            pr.add(str(k), raw[k], f"unknown top-level key; {checks.dym(k, TOP_KEYS)}")
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        pr.add("name", name, "a plain file name: letters, digits, '.', '_', '-' (no path separators), "
               "at most 100 characters" + ("" if "name" in raw else "; set `name` in the spec"))
    desc = raw.get("description", "")
    if desc is not None and not isinstance(desc, (str, int, float)):
        pr.add("description", desc, "a string")
    with pr.guard("dataset"):
        dataset = checks.dataset(raw.get("dataset", {"name": "biased_shapes"}), pr)
    base = {}
    with pr.guard("base"):
        base = checks.config_block(raw.get("base"), "base", pr)
    space, variants = {}, []
    with pr.guard("space"):
        space = checks.space(raw.get("space"), "space", pr)
    with pr.guard("variants"):
        variants = checks.variants(raw.get("variants"), pr)
    search = {"algorithm": "grid", "num_samples": 1, "seed": 0, "metric": None, "mode": "max"}
    with pr.guard("search"):
        search = checks.search(raw.get("search"), space, variants, pr)
    scheduler = None
    with pr.guard("scheduler"):
        scheduler = checks.scheduler(raw.get("scheduler"), pr)
    resources = {"cpu": 1, "gpu": 0}
    with pr.guard("resources"):
        resources = checks.resources(raw.get("resources"), pr)
    loggers = checks.loggers(raw.get("loggers"), pr)
    fuse, pack = checks.units(raw, search, scheduler, pr)
    max_concurrent = checks.integer(raw.get("max_concurrent"), "max_concurrent", pr, low=1, optional=True)
    retries = checks.integer(raw.get("retries", 1), "retries", pr, low=0)
    chunk_size = checks.integer(raw.get("chunk_size", 256), "chunk_size", pr, low=1)
    storage = raw.get("storage_path")
    if storage is not None and (not isinstance(storage, str) or not storage):
        pr.add("storage_path", storage, "a directory path (string) or null")
    study = None
    with pr.guard("study"):
        study = checks.study(raw.get("study"), pr)
    if dataset is None:
        return None
    spec = Spec(name=name if isinstance(name, str) else str(name), dataset=dataset, base=base, space=space,
                search=search, scheduler=scheduler, resources=resources, max_concurrent=max_concurrent,
                retries=retries if isinstance(retries, int) else 1,
                chunk_size=chunk_size if isinstance(chunk_size, int) else 256, storage_path=storage,
                description=str(desc or ""), raw=raw, variants=variants, loggers=loggers, fuse=fuse, pack=pack, study=study)
    with pr.guard("<trials>"):
        crosschecks.cross_checks(spec, pr)
    return spec

