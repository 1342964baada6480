"""`ncsweep validate SPEC...`: check specs before anything starts (no Ray, no torch).

Exit codes: 0 every spec is valid; 2 a spec is invalid (one line per problem: the field's full
path, the bad value, what is accepted) or an argument is wrong. A valid spec prints its planned
trial count, its swept axes and, with `fuse` or `pack`, how its configurations become Ray trials;
`--list` prints the planned trials; `--explain NAME` prints the catalogue entry of a key, option
or metric.
"""
from __future__ import annotations

import sys

from nccore.catalogue import DEFAULTS, MAX_PLANNED_TRIALS, METHOD_OPTIONS, method_defaults

from . import fuse, pack
from .checks import STUDY_ROLES, study_declarations
from .keys import add_keys_parser, explain
from .plan import iter_planned_configs, plan_size
from .spec import SpecError, load_spec

EXIT_VALID, EXIT_INVALID = 0, 2


def summary(path: str, spec) -> list[str]:
    n = plan_size(spec)
    configs = None
    if spec.search["algorithm"] == "optuna":
        count = f"{n} trials sampled by Optuna on {spec.search['metric']} ({spec.search['mode']})"
    elif n <= MAX_PLANNED_TRIALS:
        configs = list(iter_planned_configs(spec))
        count = f"{len(configs)} trials planned ({spec.search['algorithm']})"
    else:
        count = f"at most {n} trials planned ({spec.search['algorithm']}; generated lazily)"
    axes = spec.swept_axes()
    return [f"{path}: valid — {spec.name!r}: {count}",
            f"  swept axes: {', '.join(axes) if axes else 'none'}",
            f"  per trial: resources {spec.resources}"
            + (f"; ASHA on {spec.scheduler['metric']} ({spec.scheduler['mode']})" if spec.scheduler else ""),
            *(grouping(spec, configs) if configs is not None else []),
            *(study_coverage(spec, configs) if configs is not None and spec.study else [])]


def _value(cfg: dict, key: str):
    """A planned config's value of `key` (dotted for method options: method_options.n_tune), with
    the catalogue's default where the config leaves it out."""
    if key.startswith("method_options."):
        method = cfg.get("method", DEFAULTS["method"])
        opts = {**(method_defaults(method) if method in METHOD_OPTIONS else {}), **(cfg.get("method_options") or {})}
        return opts.get(key.split(".", 1)[1])
    return cfg.get(key, DEFAULTS.get(key))


def study_coverage(spec, configs: list[dict]) -> list[str]:
    """A note per declared finding the planned trials cannot measure (declarations.yaml `plan:`:
    `has` — for each mapping some trial takes all its values; `varies` — the key takes ≥ 2 values).
    Notes, not errors: a reduced subset of a study may leave findings out on purpose; they then read
    "inconclusive" from no data."""
    plan = ((study_declarations() or {}).get(spec.study.get("name")) or {}).get("plan") or {}
    out = []
    for role in STUDY_ROLES:
        for fid in spec.study.get(role) or {}:
            need = plan.get(fid) or {}
            missing = [" and ".join(f"{k} = {v!r}" for k, v in want.items()) for want in need.get("has", [])
                       if not any(all(_value(c, k) == v for k, v in want.items()) for c in configs)]
            key = need.get("varies")
            values = {repr(_value(c, key)) for c in configs} if key else set()
            why = [f"no trial has {m}" for m in missing] + ([f"{key} takes one value ({', '.join(values)})"]
                                                            if key and len(values) < 2 else [])
            if why:
                out.append(f"  note: {role} finding {fid} cannot be measured by this plan: {'; '.join(why)}")
    return out


def grouping(spec, configs: list[dict]) -> list[str]:
    """How `configs` (planned, still to run) become Ray trials under the spec's `fuse` or `pack`
    (sweeps/fuse.py, sweeps/pack.py), as the driver groups them; no lines when it sets neither."""
    if spec.pack:
        return [f"  {pack.describe(len(configs), spec.pack)}"]
    if spec.fuse:
        return [f"  {line}" for line in fuse.describe(configs, spec.fuse).splitlines()]
    return []


def trial_lines(spec, limit: int = 1000) -> list[str]:
    axes = spec.swept_axes()
    out = []
    for i, cfg in enumerate(iter_planned_configs(spec)):
        if i == limit:
            out.append(f"  ... (first {limit} shown)")
            break
        out.append(f"  {cfg['trial_id']}  " + " ".join(f"{k}={cfg.get(k)!r}" for k in axes))
    return out


def validate_paths(paths, allow_large=False, list_trials=False, out=None, err=None) -> int:
    """Validate each spec; print the summary or the problems. Returns the exit code."""
    out, err = out or sys.stdout, err or sys.stderr   # looked up per call (tests swap sys.stdout)
    code = EXIT_VALID
    for path in paths:
        try:
            spec = load_spec(path, allow_large=allow_large)
            lines = summary(path, spec)
            if list_trials and spec.search["algorithm"] != "optuna":
                lines += trial_lines(spec)
            print("\n".join(lines), file=out)
        except SpecError as e:
            code = EXIT_INVALID
            for line in e.problems:
                print(f"{path}: {line}", file=err)
            print(f"{path}: invalid ({len(e.problems)} problem{'s' if len(e.problems) != 1 else ''})", file=err)
        except Exception as e:  # never a traceback
            code = EXIT_INVALID
            print(f"{path}: could not be validated ({type(e).__name__}: {e})", file=err)
    return code


def cmd_validate(a) -> int:
    if a.explain:
        print(explain(a.explain))
        if not a.spec:
            return EXIT_VALID
    if not a.spec:
        print("ncsweep validate: error: give a spec file (or --explain NAME)", file=sys.stderr)
        return EXIT_INVALID
    return validate_paths(a.spec, a.allow_large, a.list)


def add_parser(sub) -> None:
    """Register `ncsweep validate` and `ncsweep keys`."""
    v = sub.add_parser("validate", help="check specs without starting Ray (exit 0 valid, 2 invalid)")
    v.add_argument("spec", nargs="*", help="spec YAML files")
    v.add_argument("--allow-large", action="store_true",
                   help=f"accept plans above {MAX_PLANNED_TRIALS} trials (planned lazily)")
    v.add_argument("--list", action="store_true", help="print every planned trial id and its swept values")
    v.add_argument("--explain", metavar="NAME", help="print the catalogue entry of a key, option or metric")
    v.set_defaults(fn=cmd_validate)
    add_keys_parser(sub)
