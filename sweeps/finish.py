"""A trial's end, on the driver: its status settled, its rows checked, merged and checksummed.

`finish_trial` checks that the rows the worker wrote are visible to the driver, merges them into
one file (`RunDir.compact`, idempotent), and records that file's row count and SHA-256 in the
trial's record before the record says `completed` — so a record that says a trial finished is
proof its rows were there (`sweeps.verify` re-checks that proof). A trial whose rows are damaged
is re-planned (`replan`). A fused or packed unit (sweeps/fuse.py, sweeps/pack.py) is settled
configuration by configuration, each on its own record (`finish_fused`, `finish_packed`).
Every function here is safe to repeat after a crash at any point.
"""
from __future__ import annotations

import time

from nccore.config import DEFAULTS

from . import fuse, pack
from .crash import death_cause, format_error, raised_in_python
from .faults import fault
from .layout import TERMINAL
from .store import DamagedRows, RunDir

MAX_REPLANS = 2       # a trial whose rows are damaged again after this many re-runs is failed


def visible_rows(store: RunDir, tid: str, epoch: int) -> int:
    """How many rows of `epoch` of trial `tid` the driver can read (DamagedRows if unreadable)."""
    part, merged = store.epoch_path(tid, epoch), store.merged_path(tid)
    try:
        if store.exists(part):
            return store.read_metadata(part).num_rows
        if store.exists(merged):
            col = store.read_table(merged, columns=["epoch"]).column("epoch").to_pylist()
            return sum(e == epoch for e in col)
    except Exception as e:
        raise DamagedRows(f"{part if store.exists(part) else merged}: unreadable ({type(e).__name__})") from e
    return 0


def not_visible_message(result: dict) -> str:
    node = f"{result.get('hostname', '?')} (Ray node {str(result.get('node_id', '?'))[:16]})"
    return (f"rows written on node {node} are not visible to the driver: "
            f"is --out on storage every node shares?")


def finish_trial(store: RunDir, tid: str, result: dict, error) -> str:
    """Settle a trial Tune has finished: its status, and for a trial that ran, its rows merged,
    counted and checksummed. result: its last Tune result (empty if it reported nothing);
    error: Tune's error for it, or None. Safe to repeat after a crash at any point."""
    rec = store.read_record(tid)
    if (rec or {}).get("status") in (*TERMINAL, "pending"):
        return rec["status"]   # settled already (as it ended, or re-planned to run again)
    if error is not None:
        if (rec or {}).get("error") or raised_in_python(error):   # not a dead process: a Python error
            store.update_record(tid, status="failed", error=(rec or {}).get("error") or format_error(error))
            return "failed"
        status, why, tail = death_cause(store.path, rec or {}, format_error(error), str(error))   # the process died
        store.update_record(tid, status=status, error=why, stderr_tail=tail)
        return status
    try:
        if result.get("epoch_rows") and (rec is None or visible_rows(store, tid, result["epoch"]) < result["epoch_rows"]):
            store.update_record(tid, status="failed", error=not_visible_message(result))
            return "failed"
        info = store.compact(tid)
    except DamagedRows as e:
        return replan(store, tid, str(e))
    rec = store.read_record(tid) or {}
    done = int(rec.get("epochs_done") or 0)
    missing = sorted(set(range(done)) - set(info["epochs"]))
    if missing:
        return replan(store, tid, f"rows of epochs {missing} are missing")
    if (rec.get("final") or {}).get("diverged"):
        status = "diverged"
    elif rec.get("ran_to_end") or done >= int((rec.get("config") or {}).get("epochs", DEFAULTS["epochs"])):
        status = "completed"
    else:
        status = "stopped"     # the scheduler ended it before its max epochs
    fault("finish.before_record")
    store.update_record(tid, status=status, rows=info["rows"], rows_sha256=info["sha256"], finished_at=time.time(),
                        epochs_done=max([done, *(e + 1 for e in info["epochs"])]))
    return status


def replan(store: RunDir, tid: str, reason: str) -> str:
    """Run the trial again from scratch: its rows and checkpoint are removed (in that order, so a
    crash part-way leaves a trial that `verify` still finds damaged)."""
    rec = store.read_record(tid) or {}
    n = int(rec.get("replans") or 0) + 1
    store.delete_tree(store.rows_dir(tid))
    store.delete_tree(store.checkpoint_path(tid))
    if n > MAX_REPLANS:
        store.update_record(tid, status="failed", error=f"rows damaged again after {n - 1} re-runs: {reason}")
        return "failed"
    store.update_record(tid, status="pending", replans=n, replanned_because=reason, epochs_done=0, rows_by_epoch={}, final=None,
                        rows=None, rows_sha256=None, ran_to_end=False)
    return "pending"


# ---------------------------------------------------------------------- units of several configurations
class MemberError(RuntimeError):
    """A packed configuration's own recorded error (its unit itself ended normally)."""


def finish_fused(store: RunDir, unit: dict, error) -> None:
    """Settle each configuration of a fused unit Tune has finished."""
    for cfg in fuse.members(unit):
        rec = store.read_record(cfg["trial_id"]) or {}
        finish_trial(store, cfg["trial_id"], rec.get("final") or {}, error)


def finish_packed(store: RunDir, unit: dict, error, only: list[dict] | None = None) -> list[str]:
    """Settle each configuration of a packed unit Tune has finished, or `only` those of a running
    unit that have ended (`pack.ended_before`); `error`: Tune's error for the unit, or None.
    Returns the ids left unfinished (the next pass runs them)."""
    left = []
    for cfg in pack.members(unit) if only is None else only:
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


def finish_any(store: RunDir, tune_config: dict, result: dict, error) -> None:
    """Settle what one Tune trial ran: a fused unit, a packed unit or one configuration."""
    if fuse.is_unit(tune_config):
        finish_fused(store, tune_config, error)
    elif pack.is_unit(tune_config):
        finish_packed(store, tune_config, error)
    else:
        finish_trial(store, tune_config["trial_id"], result, error)
