"""Packed sweeps (`pack: k` in a spec): up to k configurations run one after another inside one
Ray Tune trial — a sequential unit — while each keeps its own record, rows, checkpoint and
failure cause in the run directory.

Why. Ray Tune costs ~0.24 s of driver and actor bookkeeping per trial even with reused actors,
more than a trivial configuration trains (a CPU sensitivity sweep at tiny width). In a unit that
cost is paid once per k configurations; per configuration there remain its record writes, its
rows and one Tune result per epoch (bench/driver_overhead.py measures both modes in one run).

Plan. The unfinished planned configurations are cut, in plan order, into units of at most k (any
configurations pack: they share the spec's resources); a unit of one runs as an ordinary trial.
The grouping is written to RUN_DIR/pack_plan.json. A resumed sweep re-packs only the unfinished
configurations.

Inside the unit (`run_unit`) each configuration runs exactly as a separate trial does
(`sweeps.runner.run_one`: its attempt recorded, its stderr captured, its epochs written before
their checkpoints, its Tune results carrying `member`), with the spec's `retries` per
configuration: a configuration that raises is recorded (status `error`, its traceback) and the
unit goes on with the next one. Tune hears from a unit at most once a second (`Reporter`): each
result costs a driver round trip, and the rows and records hold every epoch anyway. A configuration whose record already says it ran to the end, or
was settled by an earlier attempt of the unit, is skipped.

Driver (`finish_members`): each configuration is settled by `sweeps.verify.finish_trial` on its
own record — rows merged and checksummed, or `failed` with its own error — while the unit runs
(when a result names a later configuration, the ones before it have ended) and at its end. When the worker
process died, the configuration that was running (its stderr capture file is still there) gets
the death's cause (`sweeps.crash.death_cause`); the ones the unit never reached stay unfinished
and run in the driver's next pass.

Packing is refused with a scheduler (ASHA sees one Tune trial per unit) or Optuna (it proposes
one configuration at a time), and together with `fuse`; `check_spec` says so before anything starts.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable

from . import crash, fuse

if TYPE_CHECKING:
    from .store import RunDir

PACK_KEY = "packed"   # a packed unit of the plan: {"packed": [config, ...], "trial_id": ..., "retries": ...}
REPORT_EVERY_S = 1.0   # a unit sends Tune at most one result a second: each costs a driver round trip
SETTLED_IN_UNIT = ("error", "oom")   # member statuses a retried unit does not run again (the driver finishes them)
log = logging.getLogger("ncsweep")


def check_spec(raw_pack, algorithm: str | None, scheduler, fuse_k: int = 0) -> int:
    """The validated `pack` value (0 = off); raises ValueError saying what is accepted."""
    k = fuse.check_spec(raw_pack, algorithm, scheduler, key="pack", unit="packed unit",
                        meaning="configurations run one after another in one Ray trial")
    if k and fuse_k:
        raise ValueError("`pack` and `fuse` do not combine; use fuse (one model for k compatible "
                         "configurations) or pack (k configurations one after another)")
    return k


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
        from .store import atomic_write_json

        packed = [[m["trial_id"] for m in p] for p in parts if len(p) > 1]
        atomic_write_json(store.path / "pack_plan.json", {"k": k, "units": len(packed), "packed_configs":
                                                          sum(map(len, packed)), "groups": packed})
        log.info("pack: %d — %d configurations → %d Ray trials (%d packed units)", k, len(configs), len(out),
                 len(packed))
    return out


# ---------------------------------------------------------------------- inside the Ray trial
def run_unit(store: RunDir, unit: dict, cfgs: list[dict], run_one: Callable[..., None], send: Callable[[dict], None],
             every_s: float = REPORT_EVERY_S) -> None:
    """Run a packed unit's configurations one after another in this Ray worker. `run_one(cfg,
    report, **record_fields)` runs one configuration as a separate trial does (sweeps.runner.run_one)
    and raises after recording a Python error; each configuration gets 1 + unit["retries"] attempts.
    `send`: ray.tune.report, called through a `Reporter`."""
    from .store import TERMINAL

    report = Reporter(send, every_s)
    for cfg in cfgs:
        tid = cfg["trial_id"]
        rec = store.read_record(tid) or {}
        if rec.get("ran_to_end") or rec.get("status") in (*SETTLED_IN_UNIT, *TERMINAL):
            continue   # done by an earlier attempt of this unit (the driver finishes it, or has)
        (store.path / crash.stderr_name([tid])).unlink(missing_ok=True)   # an earlier worker's, not this one's
        for attempt in range(1 + int(unit.get("retries") or 0)):
            try:
                run_one(cfg, report, packed_in=unit["trial_id"])
                break
            except Exception as e:   # recorded in its record by run_one; the next configuration runs
                log.warning("trial %s (packed in %s) failed on attempt %d: %s", tid, unit["trial_id"],
                            attempt + 1, e)
    report.flush()


class Reporter:
    """A unit's Tune results, at most one per `every_s` seconds. Every epoch of every configuration
    is in its rows and record; a result sent to Tune is the latest member-epoch's, and
    `epochs_reported` says how many member-epochs it stands for (the progress bar counts them).
    Each result Tune receives costs a round trip to the driver (function trainables report
    synchronously) and a pass through its callbacks and loggers: ~30 ms per result on 2 busy cores."""

    def __init__(self, send: Callable[[dict], None], every_s: float):
        self.send, self.every_s = send, every_s
        self.pending, self.count, self.sent_at = None, 0, -float("inf")

    def __call__(self, result: dict) -> None:
        self.count += 1
        self.pending = {**result, "epochs_reported": self.count}
        if time.perf_counter() - self.sent_at >= self.every_s:
            self.flush()

    def flush(self) -> None:
        if self.pending is not None:
            self.send(self.pending)
            self.pending, self.count, self.sent_at = None, 0, time.perf_counter()


# ---------------------------------------------------------------------- driver
class MemberError(RuntimeError):
    """A packed configuration's own recorded error (its unit itself ended normally)."""


def ended_before(unit: dict, member: str) -> list[dict]:
    """The unit's configurations that ran before `member` (one after another: they have ended)."""
    ids = [m["trial_id"] for m in members(unit)]
    return members(unit)[:ids.index(member)] if member in ids else []


def finish_members(store: RunDir, unit: dict, error, only: list[dict] | None = None) -> list[str]:
    """Settle each configuration of a packed unit Tune has finished (driver side), or `only` those
    of a running unit that have ended (`ended_before`); `error`: Tune's error for the unit, or None.
    Returns the ids left unfinished (the next pass runs them)."""
    from .store import TERMINAL
    from .verify import finish_trial

    left = []
    for cfg in members(unit) if only is None else only:
        tid = cfg["trial_id"]
        rec = store.read_record(tid) or {}
        if rec.get("ran_to_end"):
            finish_trial(store, tid, rec.get("final") or {}, None)
        elif rec.get("status") == "error":
            finish_trial(store, tid, rec.get("final") or {}, MemberError(rec.get("error") or "error"))
        elif error is not None and rec.get("status") == "running" and rec.get("stderr_log") \
                and (store.path / rec["stderr_log"]).exists():   # it was running when the worker died
            finish_trial(store, tid, rec.get("final") or {}, error)
        elif rec.get("status") not in TERMINAL:
            left.append(tid)
    return left
