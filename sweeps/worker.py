"""Inside a Ray Tune trial: one loop for every kind of trial.

A Ray trial runs one configuration, a fused unit (k configurations trained as one model,
`nccore.fused`, grouped by sweeps/fuse.py) or a packed unit (k configurations one after another,
grouped by sweeps/pack.py). Whatever the kind, each configuration gets the same protocol (`run`):

1. its attempt recorded as `running` in its record, with where it runs and what captures its
   stderr (one record write; an unreadable checkpoint is set aside first);
2. its epochs trained; each epoch's rows written to the run directory before the epoch's
   checkpoint (the sink `nccore.trial`/`nccore.fused` call), its record updated, and its scalars
   reported to Tune (`summarize`: the `<split>_<metric>` names the catalogue reports);
3. its end: `ran_to_end` with its timings — for a lone configuration in its last epoch's record
   write, before that epoch's result goes to Tune (two record writes per 1-epoch configuration:
   start and end); a CUDA out-of-memory recorded as `oom` (not retried);
   a Python error recorded, then raised (Tune retries it). The driver settles the trial
   afterwards (sweeps/finish.py).

Only `ray.tune.report` is used; `RAY_CHDIR_TO_TRIAL_DIR=0` keeps paths stable. Fractional GPUs do
no memory isolation, so a trial caps its own CUDA allocator at its share.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
from typing import Callable, Iterator

from nccore.catalogue import reported_metrics
from nccore.config import DEFAULTS

from . import crash, fuse, pack
from .crash import format_error
from .layout import TERMINAL
from .plan import tune_trial_config
from .store import RunDir

log = logging.getLogger("ncsweep")
REPORTED = frozenset(reported_metrics())   # <split>_<metric> names Tune sees (nccore/catalogue.py)
REPORT_EVERY_S = 1.0   # a packed unit sends Tune at most one result a second: each costs a driver round trip
SETTLED_IN_UNIT = ("error", "oom")   # member statuses a retried packed unit does not run again
# (configs, sinks) -> (member index, epoch, rows): how a trial's configurations train
Epochs = Callable[[list[dict], list[Callable]], Iterator[tuple[int, int, list[dict]]]]


def trial_epochs(cfg: dict, sink):
    """The hook one configuration trains through: yields (epoch, rows), calling `sink(epoch, rows)` first."""
    from nccore.trial import iter_epochs

    return iter_epochs(cfg, sink=sink)


def one_at_a_time(epochs_fn=trial_epochs) -> Epochs:
    """The `Epochs` of a single configuration trained by `epochs_fn(cfg, sink)`."""
    def epochs(cfgs, sinks):
        (cfg,), (sink,) = cfgs, sinks
        return ((0, epoch, rows) for epoch, rows in epochs_fn(cfg, sink))
    return epochs


def fused_epochs(cfgs: list[dict], sinks: list[Callable]):
    """The `Epochs` of a fused unit: its members trained as one model."""
    from nccore.fused import iter_fused_epochs

    return iter_fused_epochs(cfgs, sinks)


def trainable(params: dict, run_dir: str, base: dict, objectives: dict, gpu: float, cpu: float,
              fault_env: dict | None = None, epochs_fn=trial_epochs) -> None:
    """One Ray trial: a configuration, a fused unit or a packed unit (`params["trial"]`)."""
    store = RunDir(run_dir)
    prepare_worker(gpu, cpu)
    unit = params.get("trial")
    with environ(fault_env or {}):
        if fuse.is_unit(unit):
            cfgs = [trial_config({"trial": m}, base, store) for m in fuse.members(unit)]
            run(store, cfgs, objectives, fused_epochs, fused_with=[c["trial_id"] for c in cfgs])
        elif pack.is_unit(unit):
            cfgs = [trial_config({"trial": m}, base, store) for m in pack.members(unit)]
            run_unit(store, unit, cfgs, objectives, one_at_a_time(epochs_fn))
        else:
            run(store, [trial_config(params, base, store)], objectives, one_at_a_time(epochs_fn))


def prepare_worker(gpu: float, cpu: float) -> None:
    """The worker's torch threads (its CPU share) and, on a shared GPU, its CUDA allocator cap."""
    import torch

    torch.set_num_threads(max(1, int(cpu)))
    if gpu and gpu < 1 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(gpu * 0.95)


def trial_config(params: dict, base: dict, store: RunDir) -> dict:
    """The trial's full config from Tune's params: a planned config, or a searcher's point over `base`."""
    cfg = tune_trial_config(params, base)
    if str(cfg.get("init_from") or "").startswith("trial:"):   # an earlier trial of this run directory
        cfg["init_from"] = str(store.checkpoint_dir(cfg["init_from"][len("trial:"):]))
    return cfg


def summarize(rows: list[dict], objectives: dict) -> dict:
    """Flatten one epoch's "all" rows into the scalars Tune sees: <split>_<metric>."""
    out = {"epoch": rows[0]["epoch"]}
    for r in rows:
        if r.get("group") == "all":
            out.update({f"{r['split']}_{k}": float(v) for k, v in r.items() if f"{r['split']}_{k}" in REPORTED
                        and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)})
    out["train_loss"] = float(rows[0].get("train_loss", math.nan))
    if rows[0].get("status") == "diverged":
        out["diverged"] = 1
    for metric, mode in objectives.items():   # schedulers/searchers need their metric in every result
        out.setdefault(metric, -math.inf if mode == "max" else math.inf)
    return out


# ---------------------------------------------------------------------- one protocol for every configuration
def run(store: RunDir, cfgs: list[dict], objectives: dict, epochs: Epochs, report=None, **fields) -> None:
    """Configurations trained together (one, or a fused unit): each attempt recorded (with `fields`),
    epochs trained, written and reported (`report`, default `ray.tune.report`) while the worker's
    stderr is captured; a Python error is recorded, then raised."""
    tids = [c["trial_id"] for c in cfgs]
    extras = [start_attempt(store, c, **crash.capture_fields(tids), **fields) for c in cfgs]   # one write each
    with crash.captured_stderr(store, tids):   # a dead worker leaves its stderr in the run directory
        train(store, cfgs, extras, objectives, epochs, report)


def run_one(store: RunDir, cfg: dict, objectives: dict, epochs_fn=trial_epochs, report=None, **fields) -> None:
    """One configuration, as a separate trial runs it."""
    run(store, [cfg], objectives, one_at_a_time(epochs_fn), report, **fields)


def start_attempt(store: RunDir, cfg: dict, **fields) -> dict:
    """Record the attempt as running (with `fields`); return the provenance columns every row of it carries."""
    import ray

    from nccore.trial import environment

    tid = cfg["trial_id"]
    attempt = (store.read_record(tid) or {}).get("attempts", 0) + 1
    where = {"hostname": socket.gethostname(), "node_id": ray.get_runtime_context().get_node_id()}
    started_at = time.time()
    store.update_record(tid, status="running", attempts=attempt, config=cfg, error=None, traceback=None,
                        ran_to_end=False, started_at=started_at, **where, **fields)
    start_fresh_if_corrupt(store, tid)
    return {"attempt": attempt, "ray_version": ray.__version__, **environment(cfg), **where,
            "attempt_started_at": started_at}


def start_fresh_if_corrupt(store: RunDir, tid: str) -> None:
    """An unreadable checkpoint is set aside (state.pt.corrupt) and the trial restarts from scratch;
    its rows so far are removed (the new run rewrites them) and its record says why."""
    from nccore import checkpoint   # torch: imported only where a checkpoint is read

    d = store.checkpoint_dir(tid)
    try:
        checkpoint.load(d)
    except checkpoint.CorruptCheckpoint as e:
        checkpoint.set_aside(d)
        store.delete_tree(store.rows_dir(tid))
        store.update_record(tid, epochs_done=0, rows_by_epoch={}, restarted_from_scratch=f"{e}", restarted_at=time.time())


def train(store: RunDir, cfgs: list[dict], extras: list[dict], objectives: dict, epochs: Epochs, report=None) -> None:
    """The epochs of configurations trained together, per member written, recorded and reported."""
    import torch
    from ray import tune

    report = report or tune.report
    tids = [c["trial_id"] for c in cfgs]
    timer = {"t0": time.perf_counter(), "sink_s": 0.0, "inner_s": 0.0}

    def sink_of(i):
        def sink(epoch, rows):
            t = time.perf_counter()
            store.write_epoch(tids[i], epoch, rows, {**extras[i], "epoch_ended_at": time.time()})
            timer["sink_s"] += time.perf_counter() - t
        return sink

    def ended(**fields):
        for tid in tids:
            store.update_record(tid, **{"wall_s": time.perf_counter() - timer["t0"], **fields})

    def end_fields() -> dict:
        wall, run_trial_s = time.perf_counter() - timer["t0"], timer["inner_s"] - timer["sink_s"]
        shared = {"fused_wall_s": wall} if len(tids) > 1 else {}
        return dict(ran_to_end=True, wall_s=wall, sink_s=timer["sink_s"] / len(tids), run_trial_s=run_trial_s,
                    overhead_s=wall - run_trial_s, **shared)

    ended_with_epoch = False
    try:
        placed = [{**c, "checkpoint_dir": str(store.checkpoint_dir(c["trial_id"]))} for c in cfgs]
        for i, epoch, rows in _timed(epochs(placed, [sink_of(i) for i in range(len(cfgs))]), timer):
            last = {**summarize(rows, objectives), "epoch_rows": len(rows), "member": tids[i],   # as a unit's results
                    "hostname": extras[i]["hostname"], "node_id": extras[i]["node_id"]}
            if len(cfgs) == 1 and last_epoch(cfgs[0], epoch, rows):   # its end in the same write: one write less
                store.record_epoch(tids[i], epoch, len(rows), final=last, **end_fields())
                ended_with_epoch = True
            else:
                store.record_epoch(tids[i], epoch, len(rows), final=last)
            report(last)
    except torch.cuda.OutOfMemoryError as e:
        ended(status="oom", error=format_error(e, frames=0))
        return
    except Exception as e:
        ended(status="error", error=format_error(e))
        raise
    if not ended_with_epoch:
        ended(**end_fields())


def last_epoch(cfg: dict, epoch: int, rows: list[dict]) -> bool:
    """Is `epoch` the last a configuration trains: its planned last, or one that diverged
    (`nccore.trial` stops after it)? Then its record says `ran_to_end` in the epoch's own write,
    before the epoch's result reaches Tune (and so before the driver settles it)."""
    return epoch + 1 >= int(cfg.get("epochs") or DEFAULTS["epochs"]) or rows[0].get("status") == "diverged"


def _timed(epochs, timer: dict):
    """Pass the epochs through, adding the time spent producing them to timer["inner_s"]."""
    while True:
        t = time.perf_counter()
        try:
            item = next(epochs)
        except StopIteration:
            return
        finally:
            timer["inner_s"] += time.perf_counter() - t
        yield item


@contextlib.contextmanager
def environ(values: dict):
    """Set environment variables for a block and restore them after (no process-wide leftovers)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---------------------------------------------------------------------- a packed unit
def run_unit(store: RunDir, unit: dict, cfgs: list[dict], objectives: dict, epochs: Epochs, send=None,
             every_s: float = REPORT_EVERY_S) -> None:
    """A packed unit's configurations one after another, each by `run` as a separate trial, with
    1 + unit["retries"] attempts each; a configuration that raises is recorded and the next one runs.
    `send`: ray.tune.report (default), called through a `Reporter`."""
    if send is None:
        from ray import tune

        send = tune.report
    report = Reporter(send, every_s)
    for cfg in cfgs:
        tid = cfg["trial_id"]
        rec = store.read_record(tid) or {}
        if rec.get("ran_to_end") or rec.get("status") in (*SETTLED_IN_UNIT, *TERMINAL):
            continue   # done by an earlier attempt of this unit (the driver finishes it, or has)
        (store.path / crash.stderr_name([tid])).unlink(missing_ok=True)   # an earlier worker's, not this one's
        for attempt in range(1 + int(unit.get("retries") or 0)):
            try:
                run(store, [cfg], objectives, epochs, report, packed_in=unit["trial_id"])
                break
            except Exception as e:   # recorded in its record by `run`; the next configuration runs
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
