"""Fused sweeps (`fuse: k` in a spec): the planner's grouping of compatible configurations, and
the Ray trial that trains one group as one model (`nccore.fused`) while every configuration keeps
its own record, rows and checkpoint in the run directory.

Grouping. Planned configurations that can fuse (ERM with SGD, `nccore.fused.why_not_fusable`) and
agree on every key except the catalogue's fuse axes (`Key.fuse_axis`: lr, weight decay, momentum, seed, bias level,
penalty, init_from) form a class; each class is cut, in plan order, into groups of at most k. A
group of one, and every configuration that cannot fuse, runs as an ordinary trial. `describe`
says how a plan was grouped; the runner writes it to RUN_DIR/fuse_plan.json and the log.

Run directory. A fused trial writes, per configuration, exactly what a separate trial writes: its
`trials/<id>.json` record (attempts, status, config), `rows/<id>/` (each epoch's rows before that
configuration's checkpoint), `checkpoints/<id>/`. Only the record says it was fused (`fused_with`).
Resume and exactly-once are per configuration: the planner regroups only unfinished
configurations, and a member continues from its own checkpoint (the checkpoint format is the
separate trial's, so fused and unfused runs resume each other).

Fusing is refused with a scheduler (ASHA would stop the whole group) or Optuna (it proposes one
configuration at a time); `sweeps.checks.unit_size` says so before anything starts. The Ray trial
of a unit is `sweeps.worker`'s; its members are settled by `sweeps.finish.finish_fused`.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING

from nccore.fusable import fuse_key, why_not_fusable

from .plan import planned_configs
from .spec import load_spec

if TYPE_CHECKING:   # the argument's type only: planning needs no pyarrow
    from .store import RunDir

FUSE_KEY = "fused"   # a fused unit of the plan: {"fused": [config, ...], "trial_id": ..., "epochs": ...}


def group(configs: list[dict], k: int) -> tuple[list[list[dict]], list[tuple[dict, str]]]:
    """(groups, singles): groups of 2..k fusable, compatible configs in plan order; singles are
    (config, why it runs unfused)."""
    classes: OrderedDict[str, list[dict]] = OrderedDict()
    singles: list[tuple[dict, str]] = []
    for c in configs:
        why = why_not_fusable(c)
        if why:
            singles.append((c, why))
        else:
            classes.setdefault(fuse_key(c), []).append(c)
    groups = []
    for members in classes.values():
        for i in range(0, len(members), k):
            part = members[i:i + k]
            if len(part) == 1:
                singles.append((part[0], "no compatible configuration left to fuse with"))
            else:
                groups.append(part)
    return groups, singles


def unit_of(members: list[dict], key: str = FUSE_KEY) -> dict:
    """The plan entry (one Ray trial) of a fused group (or, key "packed", of a packed unit)."""
    ids = [m["trial_id"] for m in members]
    uid = f"{key}-" + hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:8]
    return {key: members, "trial_id": uid, "epochs": members[0].get("epochs")}


def units(configs: list[dict], k: int, store: RunDir | None = None) -> list[dict]:
    """The plan as Ray trials: fused units first, then the configurations that run alone. With
    a store, the grouping is written to RUN_DIR/fuse_plan.json."""
    if k < 2:
        return configs
    groups, singles = group(configs, k)
    if store is not None:
        plan = plan_summary(groups, singles, k)
        store.write_json("fuse_plan.json", plan)
        logging.getLogger("ncsweep").info("%s", _text(plan, len(configs)))
    return [unit_of(g) for g in groups] + [c for c, _ in singles]


def plan_summary(groups: list[list[dict]], singles: list[tuple[dict, str]], k: int) -> dict:
    reasons: dict[str, list[str]] = {}
    for c, why in singles:
        reasons.setdefault(why, []).append(c["trial_id"])
    return {"k": k, "fused_trials": len(groups), "fused_configs": sum(len(g) for g in groups),
            "unfused_configs": len(singles), "groups": [[m["trial_id"] for m in g] for g in groups],
            "unfused": reasons}


def describe(configs: list[dict], k: int) -> str:
    """One paragraph: how `configs` are grouped under `fuse: k`."""
    groups, singles = group(configs, k)
    return _text(plan_summary(groups, singles, k), len(configs))


def _text(s: dict, n: int) -> str:
    sizes = sorted({len(g) for g in s["groups"]})
    lines = [f"fuse: {s['k']} — {n} configurations → {s['fused_trials']} fused trials "
             f"(sizes {', '.join(map(str, sizes)) or '-'}; {s['fused_configs']} configurations) + "
             f"{s['unfused_configs']} unfused trials"]
    for why, ids in s["unfused"].items():
        lines.append(f"  unfused ({len(ids)}): {why}")
    return "\n".join(lines)


def is_unit(cfg: dict | None) -> bool:
    return bool(cfg) and FUSE_KEY in cfg


def members(unit: dict) -> list[dict]:
    return unit[FUSE_KEY]


def describe_spec(path) -> str:
    """How the spec at `path` is grouped (its `fuse`, or 2 when it does not set one)."""
    spec = load_spec(path)
    return describe(planned_configs(spec), spec.fuse or 2)
