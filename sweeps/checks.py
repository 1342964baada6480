"""The spec validator's checks, one function per part of a spec (used by `sweeps.spec`; checks
across parts are in `sweeps.crosschecks`).

Each check appends to a `Problems` list instead of raising, so a spec is refused with every
problem at once; each line names the field's full path (`space.lr.uniform[1]`,
`variants[0].method_options.n_tune`), the bad value and what is allowed. Accepted values come from
`nccore.catalogue`; nothing here imports torch or Ray.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import re
from pathlib import Path

from nccore.catalogue import (CONFIG, DATASET_FILES, DATASET_OPTIONS, check_value, config_aliases, dataset_options,
                              did_you_mean)

DOMAINS = ("grid", "choice", "uniform", "loguniform", "randint")
SEARCH_KEYS = ("algorithm", "num_samples", "seed", "metric", "mode")
SCHEDULER_KEYS = ("type", "metric", "mode", "grace_period", "reduction_factor", "max_t")
RESOURCE_KEYS = ("cpu", "gpu")
TRIAL_REF = re.compile(r"^trial:([0-9a-f]{12})$")
# `loggers:` spec name -> (the package it needs, the pip extra that installs it); sweeps/loggers.py runs them
LOGGERS = {"tensorboard": ("tensorboardX", None), "mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}


def _short(value) -> str:
    s = repr(value)
    return s if len(s) <= 80 else s[:77] + "..."


class Problems:
    """Problem lines, deduplicated, in the order found."""

    def __init__(self, lines=()):
        self.lines = list(lines)

    def add(self, path: str, value, msg: str) -> None:
        line = f"spec field `{path}` = {_short(value)}: {msg}"
        if line not in self.lines:
            self.lines.append(line)

    def __bool__(self) -> bool:
        return bool(self.lines)

    @contextlib.contextmanager
    def guard(self, path: str):
        """Turn an unexpected exception in a check into a problem line naming `path`."""
        try:
            yield
        except Exception as e:
            self.add(path, None, f"could not be checked ({type(e).__name__}: {e})")


def dym(name, known, aliases=None) -> str:
    return did_you_mean(name, known, aliases)


def _close(name, known) -> str:
    """'; did you mean `x`?' when a close match exists, else ''."""
    hint = did_you_mean(name, known)
    return f"; {hint}" if hint.startswith("did you") else ""


def _known(keys) -> str:
    return "allowed: " + ", ".join(sorted(keys))


def _mapping(value, path, pr, what) -> dict | None:
    if value is None:
        return {}
    if not isinstance(value, dict):
        pr.add(path, value, f"must be a mapping ({what})")
        return None
    return value


def _coerce(key, v):
    """YAML 1.1 quirks and hand-written dicts: a numeric string for a float key becomes a float."""
    if key.type in ("float", "list[float]") and isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def value(name: str, v, path: str, pr: Problems, method=None):
    """Check one config value; returns it (coerced)."""
    key = CONFIG[name]
    v = _coerce(key, v)
    err = check_value(key, v, method)
    if err:
        pr.add(path, v, err)
    return v


def integer(v, path, pr, low=0, optional=False):
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        pr.add(path, v, "must be a positive integer" if low == 1 else f"must be an integer >= {low}")
        return None
    return v


def _number(v, path, pr):
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        pr.add(path, v, "must be a number")
        return None
    if not math.isfinite(v):
        pr.add(path, v, "must be a finite number")
        return None
    return v


# ----------------------------------------------------------------------------- sections
def dataset(raw, pr: Problems) -> dict | None:
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        pr.add("dataset", raw, "a mapping {name: <dataset>, options: {...}} or a dataset name")
        return None
    for k in raw:
        if k not in ("name", "options"):
            pr.add(f"dataset.{k}", raw[k], f"unknown key{_close(k, ('name', 'options'))}; allowed: name, options")
    name = raw.get("name", "biased_shapes")
    if not isinstance(name, str) or name not in DATASET_OPTIONS:
        pr.add("dataset.name", name, f"unknown dataset; choose one of {sorted(DATASET_OPTIONS)}"
               + _close(name, DATASET_OPTIONS))
        return None
    opts = _mapping(raw.get("options"), "dataset.options", pr, f"options of dataset {name!r}")
    if opts is None:
        return None
    keys = dataset_options(name)
    out = {}
    for k, v in opts.items():
        if k not in keys:
            pr.add(f"dataset.options.{k}", v, f"not an option of dataset {name!r}; {dym(k, keys)}")
            continue
        v = _coerce(keys[k], v)
        err = check_value(keys[k], v)
        if err:
            pr.add(f"dataset.options.{k}", v, err)
        out[k] = v
    for k, key in keys.items():
        if key.required and k not in opts:
            pr.add(f"dataset.options.{k}", None, f"required for dataset {name!r}: {key.help}")
    _dataset_files(name, out, pr)
    return {"name": name, "options": out}


def _dataset_files(name, opts, pr) -> None:
    root = opts.get("root")
    if not isinstance(root, str) or not root:
        return
    defaults = {k: key.default for k, key in dataset_options(name).items()}
    files = [f.format(**{**defaults, **opts}) for f in DATASET_FILES.get(name, ())]
    if not Path(root).is_dir():
        pr.add("dataset.options.root", root, f"folder not found on this machine; put the files at {root} (dataset "
               f"{name!r} reads {', '.join(files)} below it) or point `root` to your copy "
               "(on a cluster: a path every node can read)")
        return
    missing = [f for f in files if not (Path(root) / f).exists()]
    if missing:
        pr.add("dataset.options.root", root, f"missing {', '.join(missing)}: put the files at "
               f"{', '.join(str(Path(root) / f) for f in missing)} (dataset {name!r} reads "
               f"{', '.join(files)} below root)")


def _config_key(k, v, path, pr, sweep: bool) -> bool:
    """Whether `k` may be set here; adds the problem if not."""
    if k in ("dataset", "data"):
        pr.add(path, v, f"set the dataset with `dataset.{'name' if k == 'dataset' else 'options'}`, not here")
    elif k not in CONFIG:
        pr.add(path, v, f"unknown config key; {dym(k, [n for n, c in CONFIG.items() if not c.reserved], config_aliases())}")
    elif CONFIG[k].reserved:
        pr.add(path, v, "reserved: ncsweep sets it for every trial")
    elif sweep and not CONFIG[k].sweepable:
        pr.add(path, v, "not sweepable")
    else:
        return True
    return False


def config_block(raw, where: str, pr: Problems) -> dict:
    block = _mapping(raw, where, pr, "config key: value")
    out = {}
    for k, v in (block or {}).items():
        if _config_key(k, v, f"{where}.{k}", pr, sweep=False):
            out[k] = value(k, v, f"{where}.{k}", pr)
    return out


def domain(k, dom, where: str, pr: Problems, plain_ok=False) -> dict | None:
    if not isinstance(dom, dict) and plain_ok:
        dom = {"grid": [dom]}
    if not isinstance(dom, dict) or len(dom) != 1 or next(iter(dom)) not in DOMAINS:
        hint = f"; for one fixed value write {{grid: [{dom!r}]}} or put it in base" if not isinstance(dom, dict) else ""
        pr.add(where, dom, f"one of {{{' | '.join(DOMAINS)}: ...}}{hint}")
        return None
    kind, vals = next(iter(dom.items()))
    path, key = f"{where}.{kind}", CONFIG[k]
    if kind in ("grid", "choice"):
        if not isinstance(vals, list) or not vals:
            pr.add(path, vals, "a non-empty list of values")
            return None
        return {kind: [value(k, v, f"{path}[{i}]", pr) for i, v in enumerate(vals)]}
    if not isinstance(vals, list) or len(vals) != 2:
        pr.add(path, vals, "a list [low, high]")
        return None
    if key.type not in ("float", "int"):
        pr.add(path, vals, f"`{k}` takes {key.allowed()}: use grid or choice")
        return None
    lo, hi = (_number(v, f"{path}[{i}]", pr) for i, v in enumerate(vals))
    if lo is None or hi is None:
        return None
    if kind == "randint" and not (float(lo).is_integer() and float(hi).is_integer()):
        pr.add(path, vals, "randint takes integer bounds [low, high) (high excluded)")
        return None
    if key.type == "int" and kind != "randint":
        pr.add(path, vals, f"`{k}` is an integer: use randint [low, high) or grid/choice")
        return None
    if not lo < hi:
        pr.add(path, vals, "needs low < high")
        return None
    if kind == "loguniform" and lo <= 0:
        pr.add(path, vals, "log-uniform bounds must be > 0")
        return None
    ends = [int(lo), int(hi) - 1] if kind == "randint" else [lo, hi]
    for i, v in enumerate(ends):
        err = check_value(key, v if key.type == "float" else int(v))
        if err:
            pr.add(f"{path}[{i}]", vals[i], err)
    return {kind: [int(lo), int(hi)] if kind == "randint" else [lo, hi]}


def space(raw, where: str, pr: Problems, plain_ok=False) -> dict:
    block = _mapping(raw, where, pr, "config key: {grid|choice|uniform|loguniform|randint: ...}")
    out = {}
    for k, dom in (block or {}).items():
        if _config_key(k, dom, f"{where}.{k}", pr, sweep=True):
            d = domain(k, dom, f"{where}.{k}", pr, plain_ok)
            if d is not None:
                out[k] = d
    return out


def variants(raw, pr: Problems) -> list:
    if raw is None:
        return []
    if not isinstance(raw, list) or not raw:
        pr.add("variants", raw, "a non-empty list of mappings, each a sub-space merged over `space`")
        return []
    out = []
    for i, v in enumerate(raw):
        if not isinstance(v, dict) or not v:
            pr.add(f"variants[{i}]", v, "a non-empty mapping of config key -> value or domain")
            continue
        out.append(space(v, f"variants[{i}]", pr, plain_ok=True))
    return out


def search(raw, space_, variants_, pr: Problems) -> dict:
    s = _mapping(raw, "search", pr, "{algorithm, num_samples, seed, metric, mode}") or {}
    for k in s:
        if k not in SEARCH_KEYS:
            pr.add(f"search.{k}", s[k], f"unknown key{_close(k, SEARCH_KEYS)}; {_known(SEARCH_KEYS)}")
    out = {"algorithm": s.get("algorithm", "grid"), "num_samples": s.get("num_samples", 1),
           "seed": s.get("seed", 0), "metric": s.get("metric"), "mode": s.get("mode", "max")}
    if out["algorithm"] not in ("grid", "random", "optuna"):
        pr.add("search.algorithm", out["algorithm"], "choose one of 'grid', 'random', 'optuna'")
    out["num_samples"] = integer(out["num_samples"], "search.num_samples", pr, low=1) or 1
    out["seed"] = integer(out["seed"], "search.seed", pr, low=0) or 0
    if out["mode"] not in ("min", "max"):
        pr.add("search.mode", out["mode"], "'min' or 'max'")
    if out["metric"] is not None and not isinstance(out["metric"], str):
        pr.add("search.metric", out["metric"], "a metric name, e.g. val_worst_group_acc")
        out["metric"] = None
    subs = [("space", space_)] + [(f"variants[{i}]", v) for i, v in enumerate(variants_)]
    for where, sub in subs:
        for k, d in sub.items():
            kind = next(iter(d))
            if out["algorithm"] == "grid" and kind != "grid":
                pr.add(f"{where}.{k}", d, "algorithm `grid` takes only {grid: [...]} domains; use "
                       "search.algorithm: random (or optuna) for sampled domains")
            if out["algorithm"] == "optuna" and kind == "grid":
                pr.add(f"{where}.{k}", d, "Optuna samples its space: use {choice: [...]} not grid")
    if out["algorithm"] == "optuna":
        if out["metric"] is None:
            pr.add("search.metric", None, "Optuna needs the metric it optimises, e.g. val_worst_group_acc")
        if variants_:
            pr.add("variants", "[...]", "Optuna samples one space; use grid or random search with variants")
    return out


def scheduler(raw, pr: Problems) -> dict | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        pr.add("scheduler", raw, "a mapping {type: asha, metric: ..., mode: ..., grace_period: ...}")
        return None
    for k in raw:
        if k not in SCHEDULER_KEYS:
            pr.add(f"scheduler.{k}", raw[k], f"unknown key{_close(k, SCHEDULER_KEYS)}; {_known(SCHEDULER_KEYS)}")
    if raw.get("type", "asha") != "asha":
        pr.add("scheduler.type", raw.get("type"), "only 'asha' is supported")
    metric = raw.get("metric")
    if not isinstance(metric, str):
        pr.add("scheduler.metric", metric, "required: the reported metric ASHA compares, e.g. val_worst_group_acc")
        metric = None
    mode = raw.get("mode", "max")
    if mode not in ("min", "max"):
        pr.add("scheduler.mode", mode, "'min' or 'max'")
    grace = integer(raw.get("grace_period", 1), "scheduler.grace_period", pr, low=1)
    rf = _number(raw.get("reduction_factor", 2), "scheduler.reduction_factor", pr)
    if rf is not None and rf <= 1:
        pr.add("scheduler.reduction_factor", rf, "must be > 1 (each rung keeps 1/reduction_factor of the trials)")
    max_t = integer(raw.get("max_t"), "scheduler.max_t", pr, low=1, optional=True)
    return {"type": "asha", "metric": metric, "mode": mode, "grace_period": grace or 1,
            "reduction_factor": rf if rf is not None and rf > 1 else 2, "max_t": max_t}


def resources(raw, pr: Problems) -> dict:
    r = _mapping(raw, "resources", pr, "{cpu: ..., gpu: ...}") or {}
    for k in r:
        if k not in RESOURCE_KEYS:
            pr.add(f"resources.{k}", r[k], f"unknown key{_close(k, RESOURCE_KEYS)}; allowed keys: cpu, gpu")
    cpu, gpu = _number(r.get("cpu", 1), "resources.cpu", pr), _number(r.get("gpu", 0), "resources.gpu", pr)
    if cpu is not None and cpu <= 0:
        pr.add("resources.cpu", cpu, "must be > 0")
    if gpu is not None and (gpu < 0 or (gpu > 1 and gpu != int(gpu))):
        pr.add("resources.gpu", gpu, "must be >= 0: a fraction (e.g. 0.25 packs 4 trials per GPU) or a whole number")
    return {"cpu": cpu if cpu and cpu > 0 else 1, "gpu": gpu if gpu is not None and gpu >= 0 else 0}


STUDY_ROLES = ("primary", "secondary", "manipulation")
STUDY_DIRECTIONS = ("positive", "negative", "any")


@functools.cache
def study_declarations() -> dict | None:
    """The studies' declarations (analysis/studies/declarations.yaml: per study its findings and what
    they need of the data), read as a file so the spec layer imports no pandas; None where the
    analysis package is not installed (then `ncsweep study` checks the ids)."""
    found = importlib.util.find_spec("analysis")
    for folder in (found.submodule_search_locations or []) if found else []:
        path = Path(folder) / "studies" / "declarations.yaml"
        if path.is_file():
            import yaml

            return yaml.safe_load(path.read_text())
    return None


def study(raw, pr: Problems) -> dict | None:
    """The `study:` block: which study's findings the run tests, declared before the data exist.

        study:
          name: nc_fairness                     # a study of analysis/studies (`ncsweep study RUN_DIR`)
          options: {early_epochs: 3}            # optional, passed to the study
          primary: {early_alignment_gap: {direction: positive, margin: 0.05}}   # exactly one
          secondary: {f1_gap_slope: {direction: positive, margin: 0.05}}
          manipulation: {tpr_biased_slope: {direction: negative}}

    direction: positive | negative | any; margin ≥ 0 (the equivalence margin: a corrected CI inside
    ±margin reads "no effect"). The study's name and finding ids are checked against the studies'
    declarations; what a finding needs of the dataset is checked with the dataset (crosschecks)."""
    if raw is None:
        return None
    if isinstance(raw, str):
        pr.add("study", raw, "a mapping with name, primary (one finding), secondary, manipulation, options")
        return None
    d = _mapping(raw, "study", pr, "a mapping with name, primary, secondary, manipulation, options")
    if d is None:
        return None
    for k in d:
        if k not in ("name", "options", *STUDY_ROLES):
            pr.add(f"study.{k}", d[k], f"unknown key; {dym(k, ('name', 'options', *STUDY_ROLES))}")
    known = study_declarations() or {}
    findings = None
    if not isinstance(d.get("name"), str) or not d.get("name"):
        pr.add("study.name", d.get("name"), "the study's name, e.g. nc_fairness")
    elif known and d["name"] not in known:
        pr.add("study.name", d["name"], f"not a study; {dym(d['name'], tuple(known))}")
    elif known:
        findings = tuple(known[d["name"]].get("findings") or ())
    if d.get("options") is not None and not isinstance(d["options"], dict):
        pr.add("study.options", d["options"], "a mapping")
    seen: set = set()
    for role in STUDY_ROLES:
        block = d.get(role) or {}
        if not isinstance(block, dict):
            pr.add(f"study.{role}", block, "a mapping of finding id → {direction, margin}")
            continue
        if role == "primary" and len(block) != 1:
            pr.add("study.primary", block, "exactly one finding: the paper's central claim")
        for fid, spec in block.items():
            where = f"study.{role}.{fid}"
            if findings is not None and fid not in findings:
                pr.add(where, spec, f"not a finding of study {d['name']!r}; {dym(fid, findings)}")
            if fid in seen:
                pr.add(where, spec, "declared twice; a finding has one role")
            seen.add(fid)
            if not isinstance(spec, dict):
                pr.add(where, spec, "a mapping {direction: positive|negative|any, margin: number ≥ 0}")
                continue
            if spec.get("direction") not in STUDY_DIRECTIONS:
                pr.add(f"{where}.direction", spec.get("direction"), f"one of {', '.join(STUDY_DIRECTIONS)}")
            m = spec.get("margin", 0.0)
            if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m) or m < 0:
                pr.add(f"{where}.margin", m, "a number ≥ 0 (0: no equivalence test)")
            elif role != "manipulation" and m == 0:
                pr.add(f"{where}.margin", m, "a margin > 0, fixed before the data, so that \"no effect\" can be "
                       "concluded")
            for k in spec:
                if k not in ("direction", "margin"):
                    pr.add(f"{where}.{k}", spec[k], "unknown key; direction, margin")
    return d


def loggers(value, pr: Problems) -> list[str]:
    """The spec's `loggers` field as a list of names; an unknown name, or one whose package is
    not installed, is a problem naming the fix."""
    if value is None:
        return []
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        pr.lines.append(f"spec field `loggers` = {value!r}: a list of names from {sorted(LOGGERS)}")
        return []
    for name in names:
        if name not in LOGGERS:
            pr.lines.append(f"spec field `loggers` = {value!r}: unknown logger {name!r}; choose from "
                            f"{sorted(LOGGERS)}; {did_you_mean(name, LOGGERS)}")
            return []
        package, extra = LOGGERS[name]
        if importlib.util.find_spec(package) is None:
            pr.lines.append(f"spec field `loggers` names {name!r}, but the {package} package is not installed: "
                            f"pip install 'ncsweep[{extra}]'")
            return []
    return list(dict.fromkeys(names))


# spec key -> (what one Ray trial of k configurations is called, what it does)
UNIT_KEYS = {"fuse": ("fused group", "configurations trained as one fused model"),
             "pack": ("packed unit", "configurations run one after another in one Ray trial")}


def unit_size(raw, key: str, algorithm: str | None, scheduler, pr: Problems) -> int:
    """The validated `fuse` or `pack` value: k >= 2, or 0 for off (sweeps/fuse.py, sweeps/pack.py).
    Both need a plan made up front (grid/random) and no scheduler."""
    unit, meaning = UNIT_KEYS[key]
    if raw is None or raw is False:
        return 0
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        pr.add(key, raw, f"an integer k >= 2 ({meaning}), or 0 / absent for off")
    elif raw >= 2 and algorithm == "optuna":
        pr.add(key, raw, f"Optuna proposes one configuration at a time; {key} works with search.algorithm grid or random")
    elif raw >= 2 and scheduler:
        pr.add(key, raw, f"a scheduler (ASHA) would stop a whole {unit}; remove `scheduler` or `{key}`")
    else:
        return raw if raw >= 2 else 0
    return 0


def units(raw: dict, search, scheduler, pr: Problems) -> tuple[int, int]:
    """(fuse, pack) of a spec; they do not combine."""
    algorithm = search.get("algorithm") if isinstance(search, dict) else None
    fuse, pack = (unit_size(raw.get(k), k, algorithm, scheduler, pr) for k in UNIT_KEYS)
    if fuse and pack:
        pr.add("pack", raw.get("pack"), "`pack` and `fuse` do not combine; use fuse (one model for k compatible "
               "configurations) or pack (k configurations one after another)")
        return fuse, 0
    return fuse, pack
