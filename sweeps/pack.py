"""Packed sweeps (`pack: k` in a spec): up to k configurations run one after another inside one
Ray Tune trial — a sequential unit — while each keeps its own record, rows, checkpoint and
failure cause in the run directory.

Why. Ray Tune costs ~0.24 s of driver and actor bookkeeping per trial even with reused actors,
more than a trivial configuration trains (a CPU sensitivity sweep at tiny width). In a unit that
cost is paid once per k configurations; per configuration there remain two record writes (start;
end, with its last epoch), its rows and the driver's merge of them: ~0.1 s per configuration in
all on 2 busy cores against ~0.2 s unpacked (bench/driver_overhead.py measures both modes in one
run; docs/fused.md says how to choose k). `describe` says how a plan is cut (`ncsweep validate`,
`--dry-run`, the driver's log).

Plan. The unfinished planned configurations are cut, in plan order, into units of at most k (any
configurations pack: they share the spec's resources); a unit of one runs as an ordinary trial.
The grouping is written to RUN_DIR/pack_plan.json. A resumed sweep re-packs only the unfinished
configurations.

Inside the unit (`sweeps.worker.run_unit`) each configuration runs exactly as a separate trial does
(`sweeps.worker.run_one`: its attempt recorded, its stderr captured, its epochs written before
their checkpoints, its Tune results carrying `member`), with the spec's `retries` per
configuration: a configuration that raises is recorded (status `error`, its traceback) and the
unit goes on with the next one. Tune hears from a unit at most once a second (`Reporter`): each
result costs a driver round trip, and the rows and records hold every epoch anyway. A configuration whose record already says it ran to the end, or
was settled by an earlier attempt of the unit, is skipped.

Driver (`sweeps.finish.finish_packed`): each configuration is settled by `sweeps.finish.finish_trial` on its
own record — rows merged and checksummed, or `failed` with its own error — while the unit runs
(when a result names a later configuration, the ones before it have ended) and at its end, on the
driver's settling thread (`sweeps.driver.Settler`), so the unit's worker never waits for it. When the worker
process died, the configuration that was running (its stderr capture file is still there) gets
the death's cause (`sweeps.crash.death_cause`); the ones the unit never reached stay unfinished
and run in the driver's next pass.

Packing is refused with a scheduler (ASHA sees one Tune trial per unit) or Optuna (it proposes
one configuration at a time), and together with `fuse`; `sweeps.checks.units` says so before anything starts.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from . import fuse

if TYPE_CHECKING:   # the argument's type only: planning needs no pyarrow
    from .store import RunDir

PACK_KEY = "packed"   # a packed unit of the plan: {"packed": [config, ...], "trial_id": ..., "retries": ...}
log = logging.getLogger("ncsweep")


def is_unit(cfg: dict | None) -> bool:
    return bool(cfg) and PACK_KEY in cfg


def members(unit: dict) -> list[dict]:
    return unit[PACK_KEY]


def units(configs: list[dict], k: int, retries: int, store: RunDir | None = None) -> list[dict]:
    """The plan as Ray trials: configurations in plan order, k to a unit (a unit of one stays a
    plain trial). With a store, the grouping is written to RUN_DIR/pack_plan.json."""
    if k < 2:
        return configs
    parts = [configs[i:i + k] for i in range(0, len(configs), k)]
    out = [{**fuse.unit_of(p, PACK_KEY), "retries": retries} if len(p) > 1 else p[0] for p in parts]
    if store is not None:
        packed = [[m["trial_id"] for m in p] for p in parts if len(p) > 1]
        store.write_json("pack_plan.json", {"k": k, "units": len(packed), "packed_configs":
                                                          sum(map(len, packed)), "groups": packed})
        log.info("%s", describe(len(configs), k))
    return out


def describe(n: int, k: int) -> str:
    """One line: how `n` configurations run under `pack: k` (what `units` makes of them)."""
    sizes = [min(k, n - i) for i in range(0, n, k)] if k >= 2 else [1] * n
    packed = [s for s in sizes if s > 1]
    parts = [f"{packed.count(s)} of {s}" for s in sorted(set(packed), reverse=True)]
    alone = len(sizes) - len(packed)
    return (f"pack: {k} — {n} configurations → {_count(len(sizes), 'Ray trial')} ({_count(len(packed), 'packed unit')}"
            f"{': ' + ', '.join(parts) if parts else ''}{f'; {alone} configuration alone' if alone else ''})")


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def ended_before(unit: dict, member: str) -> list[dict]:
    """The unit's configurations that ran before `member` (one after another: they have ended)."""
    ids = [m["trial_id"] for m in members(unit)]
    return members(unit)[:ids.index(member)] if member in ids else []
