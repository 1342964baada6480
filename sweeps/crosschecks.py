"""The spec validator's checks across parts of a spec: values whose meaning depends on the method
they are swept with, the metrics the trials report (for search and ASHA), ASHA against the epochs,
paths on this machine, and the plan itself (its size, counted without building it; `trial:<id>`
references; each planned config through nccore's own validation). Used by `sweeps.spec`.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

from nccore.catalogue import (CONFIG, DEFAULTS, MAX_PLANNED_TRIALS, METHOD_OPTIONS, METRICS, check_value,
                              dataset_provides, dataset_target, keys_determining, parse_metric, provided_by,
                              reported_metrics, trial_metric_sets)

from nccore.config import CPU_CHANNELS_LAST, config_problems

from .checks import STUDY_ROLES, TRIAL_REF, Problems, _coerce, dym, study_declarations
from .plan import iter_planned_configs, plan_size

def _values(spec, sub, where, k) -> list[tuple[str, object]]:
    """(path, value) of every value key `k` takes in a subspace (sampled domains: both ends)."""
    if k in sub:
        kind, vals = next(iter(sub[k].items()))
        return [(f"{where}.{k}.{kind}[{i}]", v) for i, v in enumerate(vals)]
    if k in spec.base:
        return [(f"base.{k}", spec.base[k])]
    return [(f"(default {k})", DEFAULTS[k])]


def subspaces(spec) -> list[tuple[str, dict]]:
    if spec.variants:
        return [(f"variants[{i}]", {**spec.space, **v}) for i, v in enumerate(spec.variants)]
    return [("space", spec.space)]


def max_epochs(spec) -> int:
    vals = [v for where, sub in subspaces(spec) for _, v in _values(spec, sub, where, "epochs")]
    return int(max([v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)] or [1]))


NEEDS = {"spurious_mask": "a pixel mask of the spurious attribute", "class_families": "class families of the "
         "training target"}


def study_needs(spec, pr: Problems) -> None:
    """A declared finding the dataset cannot measure (a saliency finding without a spurious-region
    mask, a target-arm finding without class families) is refused: it would read "inconclusive"
    from no data at all."""
    needs = ((study_declarations() or {}).get(spec.study.get("name")) or {}).get("needs") or {}
    name = spec.dataset["name"]
    target = dataset_target(name, spec.dataset.get("options", {}))
    have = dataset_provides(name, target)
    for role in STUDY_ROLES:
        block = spec.study.get(role)
        for fid in block if isinstance(block, dict) else ():
            need = needs.get(fid)
            if need and need not in have:
                pr.add(f"study.{role}.{fid}", block[fid],
                       f"needs {NEEDS[need]} ({provided_by(need)}), which dataset {name!r} (target {target!r}) does "
                       "not provide; drop the finding from the study block or run it on such a dataset")


def cross_checks(spec, pr: Problems) -> None:
    """Checks that need several parts: method-dependent values, metrics the trials report, ASHA
    against the epochs, paths on this machine, what the declared findings need of the dataset."""
    if spec.study:
        study_needs(spec, pr)
    methods_all, sets_by_method = set(), []
    for where, sub in subspaces(spec):
        methods = [(p, m) for p, m in _values(spec, sub, where, "method") if isinstance(m, str) and m in METHOD_OPTIONS]
        for pm, m in methods:
            methods_all.add(m)
            for p, v in _values(spec, sub, where, "penalty"):
                if m in CONFIG["penalty"].method_range:
                    err = check_value(CONFIG["penalty"], v, m)
                    if err:
                        pr.add(p, v, err)
            for p, opts in _values(spec, sub, where, "method_options"):
                _method_options(p, opts, m, pm, pr)
            for _, mets in _values(spec, sub, where, "metrics"):
                for _, coarse in _values(spec, sub, where, "coarse"):
                    if isinstance(mets, list) and all(isinstance(x, str) for x in mets):
                        sets_by_method.append((m, frozenset(trial_metric_sets(mets, coarse is True, m)), pm))
    objectives = [("search", spec.search.get("metric"), spec.search.get("mode"))]
    if spec.scheduler:
        objectives.append(("scheduler", spec.scheduler.get("metric"), spec.scheduler.get("mode")))
    for part, metric, mode in objectives:
        if metric is not None:
            _objective(part, metric, mode, sets_by_method, pr)
    if spec.scheduler and spec.scheduler.get("metric"):
        _asha(spec, pr)
    if not spec.resources.get("gpu"):   # trials get no GPU: channels-last would run on the CPU
        for where, sub in subspaces(spec):
            for p, v in _values(spec, sub, where, "channels_last"):
                if v is True:
                    pr.add(p, v, f"trials run on the CPU (resources.gpu = 0): {CPU_CHANNELS_LAST}")
    for where, sub in [("", {})] + subspaces(spec):
        for k in ("weights", "init_from"):
            for p, v in _values(spec, sub, where, k) if (k in sub or not where) else []:
                _path_value(p, v, k, pr)


def _method_options(path, opts, method, method_path, pr) -> None:
    if not isinstance(opts, dict):
        return
    declared = METHOD_OPTIONS[method]
    via = "" if method_path.startswith(("base", "(default")) else f" (trials with method {method!r} from {method_path})"
    for k, v in opts.items():
        if k not in declared:
            pr.add(f"{path}.{k}", v, f"not an option of method {method!r}{via}; {dym(k, declared)}")
        else:
            err = check_value(declared[k], _coerce(declared[k], v))
            if err:
                pr.add(f"{path}.{k}", v, err)


def _objective(part, metric, mode, sets_by_method, pr) -> None:
    path = f"{part}.metric"
    known = reported_metrics()
    if metric not in known:
        try:
            split, base, _ = parse_metric(metric)
            m = METRICS[base]
            if m.reported and split not in m.splits:
                why = f"{base} is reported only as {', '.join(f'{s}_{base}' for s in m.splits)}"
            else:
                why = "is a row column but not reported to Tune; reported metrics: `ncsweep keys --metrics`"
        except KeyError:
            why = f"unknown metric; {dym(metric, known)}"
        pr.add(path, metric, why)
        return
    missing = sorted({(m, tuple(sorted(s))) for m, s, _ in sets_by_method
                      if metric not in reported_metrics([m], s)})
    for m, s in missing:
        pr.add(path, metric, f"not reported by trials with method {m!r} and metrics {list(s)}; choose a metric "
               f"every trial reports, e.g. val_acc")
    info = METRICS[parse_metric(metric)[1]]
    if mode in ("min", "max") and info.higher_is_better is not None and (mode == "max") != info.higher_is_better:
        pr.add(f"{part}.mode", mode, f"{metric} is {'higher' if info.higher_is_better else 'lower'} is better: "
               f"use mode {'max' if info.higher_is_better else 'min'}")
    if part == "scheduler" and not info.every_epoch:
        pr.add(path, metric, "is reported only at the final epoch, so ASHA cannot compare trials early; use a "
               "per-epoch metric such as val_worst_group_acc")


def _asha(spec, pr) -> None:
    top = max_epochs(spec)
    s = spec.scheduler
    if s["grace_period"] > top:
        pr.add("scheduler.grace_period", s["grace_period"], f"must be <= the trials' epochs ({top}); ASHA would "
               "never stop a trial")
    if s.get("max_t") is not None and s["max_t"] != top:
        pr.add("scheduler.max_t", s["max_t"], f"must equal the largest epochs of the plan ({top}), or be left "
               "out (ncsweep sets it)")


def _path_value(path, v, k, pr) -> None:
    if not isinstance(v, str) or not v:
        return
    if k == "init_from" and v.startswith("trial:"):
        if not TRIAL_REF.match(v):
            pr.add(path, v, "trial:<id> with the 12-hex trial id of a trial of this spec (see `ncsweep validate "
                   "--list`)")
        return
    if not Path(v).exists():
        pr.add(path, v, "file not found on this machine; point it to the local copy (on a cluster: a path "
               "every node can read)")


def check_plan(spec, pr: Problems, allow_large: bool) -> None:
    """The plan's size (counted, not built) against the cap; `trial:<id>` references against the
    planned trials; each planned config through nccore's own validation (a safety net)."""
    n = plan_size(spec)
    if n > MAX_PLANNED_TRIALS and not allow_large:
        pr.add("space", f"{n} trials", f"the plan is larger than the cap of {MAX_PLANNED_TRIALS} trials; narrow the "
               "space, or pass --allow-large (the plan is then generated lazily)")
        return
    if n > MAX_PLANNED_TRIALS or spec.search["algorithm"] == "optuna":
        return
    uses_init = isinstance(spec.base.get("init_from"), str) or any("init_from" in s for s in spec.subspaces())
    configs = iter_planned_configs(spec)
    by_id, refs, files = {}, [], {}
    for i, cfg in enumerate(configs if uses_init else itertools.islice(configs, 200)):
        by_id[cfg["trial_id"]] = cfg
        if isinstance(cfg.get("init_from"), str) and cfg["init_from"].startswith("trial:"):
            refs.append(cfg)
        elif isinstance(cfg.get("init_from"), str):
            files.setdefault(cfg["init_from"], cfg)
        if i < 200:
            for p, v, msg in config_problems({k: v for k, v in cfg.items() if k != "trial_id"}):
                pr.add(f"<trial {cfg['trial_id']}>.{p}", v, msg)
    where = "base.init_from" if "init_from" in spec.base else "space.init_from"
    for cfg in refs:
        ref = cfg["init_from"][len("trial:"):]
        src = by_id.get(ref)
        if src is None or src is cfg:
            pr.add(where, cfg["init_from"], "names no trial of this spec; use the id of a planned trial "
                   "(`ncsweep validate --list SPEC` prints them)")
            continue
        _fits(src, cfg, f"trial {ref}", where, pr)
    for path, cfg in files.items():     # a checkpoint of an earlier run: its trial record says what it was
        src = _recorded_config(Path(path))
        if src is not None:
            _fits(src, cfg, str(path), where, pr)


def _model_value(cfg: dict, k: str):
    if k.startswith("data."):
        data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
        return data.get(k[5:])
    return cfg.get(k, DEFAULTS[k])


def _fits(src: dict, cfg: dict, what: str, where: str, pr: Problems) -> None:
    diff = [k for k in keys_determining("model") if _model_value(src, k) != _model_value(cfg, k)]   # parameter shapes
    if diff:
        pr.add(where, cfg["init_from"], f"does not fit: {what} differs in {', '.join(diff)} "
               f"({', '.join(f'{k}={_model_value(src, k)!r}' for k in diff)})")


def _recorded_config(path: Path) -> dict | None:
    """The config of the trial whose checkpoint is `path` (RUN/checkpoints/<id>[/state.pt]), read
    from its record RUN/trials/<id>.json; None when there is none (a plain weights file)."""
    tdir = path.parent if path.is_file() else path
    rec = tdir.parent.parent / "trials" / f"{tdir.name}.json"
    try:
        cfg = json.loads(rec.read_text()).get("config") if rec.is_file() else None
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) else None
