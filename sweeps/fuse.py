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
configuration at a time); both are checked by `check_spec` before anything starts.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from . import crash

if TYPE_CHECKING:
    from .store import RunDir

FUSE_KEY = "fused"   # a fused unit of the plan: {"fused": [config, ...], "trial_id": ..., "epochs": ...}


def check_spec(raw_fuse, algorithm: str, scheduler, key: str = "fuse", unit: str = "fused group",
               meaning: str = "configurations trained as one fused model") -> int:
    """The validated `fuse` value (0 = off); raises ValueError saying what is accepted. `key`, `unit`
    and `meaning` name the spec key (`pack: k` is checked by the same rules, sweeps/pack.py)."""
    if raw_fuse is None or raw_fuse is False:
        return 0
    if isinstance(raw_fuse, bool) or not isinstance(raw_fuse, int) or raw_fuse < 0:
        raise ValueError(f"an integer k >= 2 ({meaning}), or 0 / absent for off")
    if raw_fuse >= 2 and algorithm == "optuna":
        raise ValueError(f"Optuna proposes one configuration at a time; {key} works with search.algorithm "
                         "grid or random")
    if raw_fuse >= 2 and scheduler:
        raise ValueError(f"a scheduler (ASHA) would stop a whole {unit}; remove `scheduler` or `{key}`")
    return raw_fuse if raw_fuse >= 2 else 0


def group(configs: list[dict], k: int) -> tuple[list[list[dict]], list[tuple[dict, str]]]:
    """(groups, singles): groups of 2..k fusable, compatible configs in plan order; singles are
    (config, why it runs unfused)."""
    from nccore.fused import fuse_key, why_not_fusable

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
        from .store import atomic_write_json

        plan = plan_summary(groups, singles, k)
        atomic_write_json(store.path / "fuse_plan.json", plan)
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


# ---------------------------------------------------------------------- inside the Ray trial
def fused_trainable(params: dict, run_dir: str, base: dict, objectives: dict, gpu: float, cpu: float) -> None:
    """Train a fused unit in a Ray worker. Per member: its attempt recorded, its rows written
    before its checkpoint, its record updated each epoch; one Tune result per member-epoch."""
    from .runner import prepare_worker, start_attempt, trial_config
    from .store import RunDir

    store = RunDir(run_dir)
    cfgs = [trial_config({"trial": m}, base, store) for m in params["trial"][FUSE_KEY]]
    tids = [c["trial_id"] for c in cfgs]
    prepare_worker(gpu, cpu)
    extras = [start_attempt(store, c, fused_with=tids, **crash.capture_fields(tids)) for c in cfgs]   # one write each
    with crash.captured_stderr(store, tids):   # a worker that dies leaves its stderr in the run directory
        _train_unit(store, cfgs, extras, objectives)


def _train_unit(store, cfgs: list[dict], extras: list[dict], objectives: dict) -> None:
    """The fused epochs of one unit, per member written, recorded and reported."""
    import torch
    from ray import tune

    from nccore.fused import iter_fused_epochs

    from .runner import summarize
    from .verify import format_error

    tids = [c["trial_id"] for c in cfgs]
    t0, sink_s = time.perf_counter(), [0.0]

    def sink_of(i):
        def sink(epoch, rows):
            t = time.perf_counter()
            store.write_epoch(tids[i], epoch, rows, {**extras[i], "epoch_ended_at": time.time()})
            sink_s[0] += time.perf_counter() - t
        return sink

    try:
        for i, epoch, rows in iter_fused_epochs([{**c, "checkpoint_dir": str(store.checkpoint_dir(c["trial_id"]))}
                                                 for c in cfgs], [sink_of(i) for i in range(len(cfgs))]):
            last = {**summarize(rows, objectives), "epoch_rows": len(rows), "member": tids[i],
                    "hostname": extras[i]["hostname"], "node_id": extras[i]["node_id"]}
            store.record_epoch(tids[i], epoch, len(rows), final=last)
            tune.report(last)
    except torch.cuda.OutOfMemoryError as e:
        for tid in tids:
            store.update_record(tid, status="oom", error=format_error(e, frames=0), wall_s=time.perf_counter() - t0)
        return
    except Exception as e:
        for tid in tids:
            store.update_record(tid, status="error", error=format_error(e), wall_s=time.perf_counter() - t0)
        raise
    wall = time.perf_counter() - t0
    for tid in tids:
        store.update_record(tid, ran_to_end=True, wall_s=wall, sink_s=sink_s[0] / len(tids), fused_wall_s=wall)


def finish_members(store: RunDir, unit: dict, error) -> None:
    """Settle each configuration of a fused unit Tune has finished (driver side)."""
    from .verify import finish_trial

    for cfg in unit[FUSE_KEY]:
        rec = store.read_record(cfg["trial_id"]) or {}
        finish_trial(store, cfg["trial_id"], rec.get("final") or {}, error)


def describe_spec(path) -> str:
    """How the spec at `path` is grouped (its `fuse`, or 2 when it does not set one)."""
    from .plan import planned_configs
    from .spec import load_spec

    spec = load_spec(path)
    return describe(planned_configs(spec), spec.fuse or 2)
