"""The Ray Tune sweep runner.

Design (the pitfalls it avoids are Ray Tune's known ones):
- The run directory is the source of truth (sweeps.store); Tune's experiment directory is a
  cache. Grid/random trials are planned up front (sweeps.plan) and a resume re-plans the same
  list and runs whatever has no terminal record — no `Tuner.restore`, no pickled searcher state.
  Optuna is warm-started on resume from the finished trials' results (`evaluated_rewards`).
- One driver per run directory (sweeps.lock); the Ray processes it starts are recorded so the
  next driver can end them if this one dies (sweeps.procs).
- Trials checkpoint every epoch into RUN_DIR/checkpoints/<trial_id>, so a retried or resumed
  trial continues from its last epoch; rows are written before the checkpoint. An unreadable
  checkpoint restarts the trial from scratch, noted in its record.
- A worker writes rows; the driver finishes each trial (sweeps.verify.finish_trial): it checks
  that the rows are visible to it, compacts them, records their count and checksum, and sets the
  status. A resume verifies every finished trial's rows and re-plans any that are damaged.
- Inside a trial only `ray.tune.report` is used; `RAY_CHDIR_TO_TRIAL_DIR=0` keeps paths stable;
  `fail_fast` is never set; large sweeps run as chunks of `chunk_size` trials per Tuner so the
  driver's memory stays bounded.
- Fractional GPUs do no memory isolation, so a trial caps its own CUDA allocator at its share
  (`torch.cuda.set_per_process_memory_fraction`) and a CUDA out-of-memory is recorded as status
  `oom` (not retried) instead of taking its neighbours down.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import sys
import time

from nccore.catalogue import reported_metrics
from nccore.config import DEFAULTS

from . import crash, faults, fuse, pack, probe, procs
from .lock import RunLock
from .stop import StopOnSignal, Stopped
from .loggers import logger_callbacks, logger_env
from .logs import driver_log
from .plan import chunks, optuna_space, planned_configs, tune_trial_config
from .progress import SweepProgress, TrialName
from .spec import Spec, SpecError
from .store import TERMINAL, RunDir
from .summary import sweep_summary
from .verify import (build_manifest, finish_trial, format_error, remove_temp_files, replan_damaged,
                     start_fresh_if_corrupt)

log = logging.getLogger("ncsweep")
REPORTED = frozenset(reported_metrics())   # <split>_<metric> names Tune sees (nccore/catalogue.py)
MAX_PASSES = 3   # a sweep re-runs trials whose rows turned out damaged at most this many times per run
# Environment for the driver and the local Ray it starts (set for one run, then restored).
RAY_ENV = {"RAY_CHDIR_TO_TRIAL_DIR": "0", "RAY_AIR_NEW_OUTPUT": "0", "RAY_DEDUP_LOGS": "0",
           "RAY_AUTH_MODE": "disabled"}


# ---------------------------------------------------------------------- inside a trial (Ray worker)
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


def trial_config(params: dict, base: dict, store: RunDir) -> dict:
    """The trial's full config from Tune's params: a planned config, or a searcher's point over `base`."""
    cfg = tune_trial_config(params, base)
    if str(cfg.get("init_from") or "").startswith("trial:"):   # an earlier trial of this run directory
        cfg["init_from"] = str(store.checkpoint_dir(cfg["init_from"][len("trial:"):]))
    return cfg


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


def trial_epochs(cfg: dict, sink):
    """The hook a trial trains through: yields (epoch, rows) and calls `sink(epoch, rows)` first."""
    from nccore.trial import iter_epochs

    return iter_epochs(cfg, sink=sink)


def trainable(params: dict, run_dir: str, base: dict, objectives: dict, gpu: float, cpu: float,
              fault_env: dict | None = None, epochs_fn=trial_epochs) -> None:
    """One trial in a Ray worker: train epoch by epoch, writing each epoch's rows before its
    checkpoint and reporting its scalars to Tune. The driver finishes the trial (finish_trial)."""
    if fuse.is_unit(params.get("trial")):   # k configurations trained as one model (sweeps/fuse.py)
        return fuse.fused_trainable(params, run_dir, base, objectives, gpu, cpu)
    store = RunDir(run_dir)
    prepare_worker(gpu, cpu)
    with _environ(fault_env or {}):
        if pack.is_unit(params.get("trial")):   # k configurations one after another (sweeps/pack.py)
            unit = params["trial"]
            cfgs = [trial_config({"trial": m}, base, store) for m in pack.members(unit)]
            from ray import tune

            pack.run_unit(store, unit, cfgs, lambda cfg, report, **fields: run_one(store, cfg, objectives, epochs_fn,
                                                                                  report, **fields), tune.report)
            return
        run_one(store, trial_config(params, base, store), objectives, epochs_fn)


def prepare_worker(gpu: float, cpu: float) -> None:
    """The worker's torch threads (its CPU share) and, on a shared GPU, its CUDA allocator cap."""
    import torch

    torch.set_num_threads(max(1, int(cpu)))
    if gpu and gpu < 1 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(gpu * 0.95)


def run_one(store: RunDir, cfg: dict, objectives: dict, epochs_fn=trial_epochs, report=None, **fields) -> None:
    """One configuration: its attempt recorded (with `fields`), its epochs trained, written and
    reported (`report`, default `ray.tune.report`) while its worker's stderr is captured; a Python
    error is recorded, then raised."""
    extra = start_attempt(store, cfg, **crash.capture_fields([cfg["trial_id"]]), **fields)   # one record write
    with crash.captured_stderr(store, [cfg["trial_id"]]):   # a dead worker leaves its stderr in the run directory
        _train(store, cfg, extra, objectives, epochs_fn, report)


def _train(store: RunDir, cfg: dict, extra: dict, objectives: dict, epochs_fn, report=None) -> None:
    """The epochs of one trial, each written, recorded and reported; a Python error is recorded."""
    import torch
    from ray import tune

    report = report or tune.report
    tid = cfg["trial_id"]
    timer = {"t0": time.perf_counter(), "sink_s": 0.0, "inner_s": 0.0}

    def sink(epoch, rows):
        t = time.perf_counter()
        store.write_epoch(tid, epoch, rows, {**extra, "epoch_ended_at": time.time()})
        timer["sink_s"] += time.perf_counter() - t

    try:
        epochs = epochs_fn({**cfg, "checkpoint_dir": str(store.checkpoint_dir(tid))}, sink)
        for epoch, rows in _timed(epochs, timer):
            last = {**summarize(rows, objectives), "epoch_rows": len(rows), "member": tid,   # as a unit's results
                    "hostname": extra["hostname"], "node_id": extra["node_id"]}
            store.record_epoch(tid, epoch, len(rows), final=last)
            report(last)
    except torch.cuda.OutOfMemoryError as e:
        store.update_record(tid, status="oom", error=format_error(e, frames=0),
                            wall_s=time.perf_counter() - timer["t0"])
        return
    except Exception as e:
        store.update_record(tid, status="error", error=format_error(e), wall_s=time.perf_counter() - timer["t0"])
        raise
    wall, run_trial_s = time.perf_counter() - timer["t0"], timer["inner_s"] - timer["sink_s"]
    store.update_record(tid, ran_to_end=True, wall_s=wall, sink_s=timer["sink_s"], run_trial_s=run_trial_s,
                        overhead_s=wall - run_trial_s)


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
def _environ(values: dict):
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


# ---------------------------------------------------------------------- driver
def _objectives(spec: Spec) -> dict:
    out = {}
    if spec.search.get("metric"):
        out[spec.search["metric"]] = spec.search["mode"]
    if spec.scheduler:
        out[spec.scheduler["metric"]] = spec.scheduler["mode"]
    return out


def max_epochs(spec: Spec) -> int:
    """The most epochs any trial of the spec runs: the max over an `epochs` axis, else base epochs."""
    values = [spec.base.get("epochs", DEFAULTS["epochs"])]
    for space in spec.subspaces():
        dom = space.get("epochs")
        if isinstance(dom, dict):
            values += [v for vals in dom.values() for v in (vals if isinstance(vals, list) else [vals])]
    return int(max(float(v) for v in values if isinstance(v, (int, float))))


def import_tensorboardx_without_torch() -> None:
    """Ray Tune's TensorBoard logger imports tensorboardX in the driver, which imports torch if it can
    (only to accept tensors as values): 670 MB of the driver's 1 GB for nothing, since results are
    floats. Import it once with torch hidden; a driver that has torch already keeps it."""
    if "torch" in sys.modules or "tensorboardX" in sys.modules:
        return
    sys.modules["torch"] = None   # `import torch` raises ImportError, which tensorboardX catches
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        pass   # not installed: Tune does without its TensorBoard logger
    finally:
        del sys.modules["torch"]


def init_ray(address: str | None) -> float:
    """Start (or connect to) Ray quietly. Returns seconds."""
    import ray

    t = time.perf_counter()
    if not ray.is_initialized():
        kw = dict(log_to_driver=False, include_dashboard=False, logging_level=logging.WARNING,
                  configure_logging=False)
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(num_cpus=os.cpu_count(), object_store_memory=256 * 1024**2, **kw)
    return time.perf_counter() - t


def run_sweep(spec: Spec, out, address: str | None = None, resources: dict | None = None,
              quiet: bool = False, callbacks: list | None = None) -> dict:
    """Run (or continue) `spec` into run directory `out`. Finished trials are never re-run; a
    finished trial whose rows are missing or damaged is re-planned first. Holds the directory's lock."""
    probe.check_out(out)                # s3://… would become a local folder named like it
    probe.check_address(address, out)   # ray:// would keep the driver's bookkeeping off the cluster
    store = RunDir(out)
    store.path.mkdir(parents=True, exist_ok=True)
    env = {**{k: os.environ.get(k, v) for k, v in RAY_ENV.items()}, **logger_env(spec.loggers)}
    # SIGTERM, or a lock this driver can no longer renew, stops the sweep: Tune's loop ends, the lock
    # is released, and sweeps.stop.Stopped (exit 143 / 2) reaches the CLI (sweeps/stop.py, sweeps/lock.py)
    try:
        with StopOnSignal() as stop, RunLock(store.path, on_lost=stop.request) as held, \
                driver_log(store.path), _environ(env):
            if held.previous:
                log.warning("took over the lock of a driver that is gone: %s", held.previous)
            killed = procs.cleanup(store.path)   # the Ray of a driver that died holding this directory
            if killed:
                log.warning("ended %d Ray processes left by a driver that died: pids %s", len(killed), killed)
            try:
                return _run_locked(spec, store, address, resources, quiet, callbacks or [], stop)
            finally:
                if stop.requested:
                    log.warning("driver %s; stopping its trials", stop.reason)
    except Stopped as e:
        raise Stopped(f"{e}: finished trials and every finished epoch are kept in {store.path}; continue with "
                      f"`ncsweep resume {store.path}`", e.exit_code) from None


def _run_locked(spec: Spec, store: RunDir, address, resources, quiet, callbacks, stop: StopOnSignal) -> dict:
    manifest = store.read_manifest()
    if manifest and manifest.get("digest") != spec.digest:
        raise SpecError(f"{store.path} holds results of a different spec ({manifest.get('name')!r}, digest "
                        f"{manifest.get('digest')}); pass a new --out, or `ncsweep resume {store.path}` to finish that one")
    planned = None if spec.search["algorithm"] == "optuna" else planned_configs(spec)
    check_init_trials(spec, store, planned)
    res = {**spec.resources, **(resources or {})}
    store.write_spec(spec.name, spec.digest, spec.raw, res)
    store.write_manifest(build_manifest(spec, planned, res, (manifest or {}).get("created_at", time.time())))
    remove_temp_files(store)
    for tid, why in replan_damaged(store).items():
        log.warning("trial %s re-planned: %s", tid, why)
    t0 = time.perf_counter()
    try:
        with stop.ray_keeps_our_handler():   # a SIGTERM while Ray starts stops the driver cleanly too
            ray_s = init_ray(address)
    finally:
        stop.hook()   # in case ray.init replaced our SIGTERM handler all the same
    if address:
        probe.require_shared(store.path)   # every node writes a probe the driver reads, before any trial
    else:
        procs.record(store.path)
    import_tensorboardx_without_torch()
    progress = SweepProgress.for_run(spec, store, planned, TERMINAL, quiet)
    callbacks = [progress, *logger_callbacks(spec.loggers, store.path, spec.name), *callbacks]
    callbacks.append(finisher(store, spec.base_config()))
    callbacks.append(stop.tune_callback())   # a SIGTERM that came while the Tuner was being built
    if not address:
        callbacks.append(procs.recorder(store.path))
    try:
        for _ in range(MAX_PASSES):
            if planned is not None:
                todo = [c for c in planned if (store.read_record(c["trial_id"]) or {}).get("status") not in TERMINAL]
                todo = fuse.units(todo, spec.fuse, store)
                todo = pack.units(todo, spec.pack, spec.retries, store)
                for part in chunks(todo, spec.chunk_size):
                    stop.check()
                    _fit(spec, store, res, {"trial": _grid(part)}, len(part), None, callbacks, stop, address)
            else:
                _run_optuna(spec, store, res, callbacks, stop, address)
            stop.check()
            if not unfinished(store, planned):
                break
        store.write_trials_table()
    finally:
        if not address:
            import ray

            ray.shutdown()
            procs.forget(store.path)
    summary = sweep_summary(store)
    summary.update(wall_s=time.perf_counter() - t0, ray_init_s=ray_s, mean_tune_trial_s=progress.mean_trial_s)
    progress.close()
    return summary


def unfinished(store: RunDir, planned: list[dict] | None) -> list[str]:
    """Trials with a record that is not terminal (re-planned ones), and planned trials never started."""
    recs = store.records()
    out = [t for t, r in recs.items() if r.get("status") not in TERMINAL]
    if planned is not None:
        out += [c["trial_id"] for c in planned if c["trial_id"] not in recs]
    return out


def check_init_trials(spec: Spec, store: RunDir, planned) -> None:
    """`init_from: trial:<id>` must name a finished trial of this run directory — checked before Ray starts."""
    refs = {c.get("init_from") for c in (planned or [spec.base_config()])}
    for ref in sorted(r for r in refs if isinstance(r, str) and r.startswith("trial:")):
        tid = ref[len("trial:"):]
        if not (store.checkpoint_dir(tid) / "state.pt").exists():
            raise SpecError(f"spec field `init_from` = {ref!r}: no checkpoint of trial {tid} in {store.path}; "
                            f"run that trial into this --out first (see `ncsweep status {store.path}`)")


def _grid(configs: list[dict]):
    from ray import tune

    return tune.grid_search(configs)


def _run_optuna(spec: Spec, store: RunDir, res: dict, callbacks: list, stop: StopOnSignal,
                address: str | None = None) -> None:
    from ray.tune.search.optuna import OptunaSearch

    interrupted = [r["config"] for r in store.records().values() if r.get("status") not in TERMINAL and r.get("config")]
    if interrupted:   # finish them first, from their checkpoints
        _fit(spec, store, res, {"trial": _grid(interrupted)}, len(interrupted), None, callbacks, stop, address)
        stop.check()
    metric, mode = spec.search["metric"], spec.search["mode"]
    done = [r for r in store.records().values() if r.get("status") in TERMINAL]
    left = spec.search["num_samples"] - len(done)
    if left <= 0:
        return
    keys = list(spec.space)
    seen = [(({k: r["config"][k] for k in keys}), (r.get("final") or {}).get(metric)) for r in done]
    seen = [(p, v) for p, v in seen if v is not None and math.isfinite(v)]
    searcher = OptunaSearch(optuna_space(spec), metric=metric, mode=mode, seed=spec.search["seed"],
                            points_to_evaluate=[p for p, _ in seen] or None,
                            evaluated_rewards=[v for _, v in seen] or None)
    _fit(spec, store, res, {}, left, searcher, callbacks, stop, address)


def make_tuner(spec: Spec, store: RunDir, res: dict, param_space: dict, num_samples: int, searcher,
               callbacks: list):
    """The Tuner of one chunk; `callbacks` (progress, loggers) are Ray Tune callbacks."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    scheduler = None
    if spec.scheduler:
        s = spec.scheduler
        scheduler = ASHAScheduler(metric=s["metric"], mode=s["mode"], grace_period=s["grace_period"],
                                  reduction_factor=s["reduction_factor"], max_t=max_epochs(spec))
    fn = tune.with_parameters(trainable, run_dir=str(store.path), base=spec.base_config(),
                              objectives=_objectives(spec), gpu=res["gpu"], cpu=res["cpu"],
                              fault_env=faults.settings())
    fn = tune.with_resources(fn, {"cpu": res["cpu"], "gpu": res["gpu"]})
    return tune.Tuner(
        fn, param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                    num_samples=1 if searcher is None else num_samples,
                                    max_concurrent_trials=spec.max_concurrent, reuse_actors=True,
                                    trial_dirname_creator=TrialName(spec.base_config())),
        run_config=tune.RunConfig(name=f"{spec.name}-{int(time.time() * 1000)}",
                                  storage_path=spec.storage_path or str(store.path / "_tune"),
                                  failure_config=tune.FailureConfig(max_failures=spec.retries),
                                  verbose=0, callbacks=list(callbacks)),   # Tune appends its loggers to the list
    )


def _fit(spec: Spec, store: RunDir, res: dict, param_space: dict, num_samples: int, searcher, callbacks,
         stop: StopOnSignal, address: str | None = None) -> None:
    since = time.time()
    try:
        results = make_tuner(spec, store, res, param_space, num_samples, searcher, callbacks).fit()
    except RuntimeError as e:
        killed = crash.settle_memory_kill(store, str(e), since)
        if killed is None:
            raise
        _after_memory_kill(store, killed, address, stop)
        return
    stop.check()   # interrupted: trials that did not end stay `running` (resumed from their checkpoints)
    for r in results:
        if r.config is None:   # the trial's actor died before the trial started: it stays planned, re-run next pass
            log.warning("a trial ended before it started (%s); it is run again", format_error(r.error) if r.error else "?")
            continue
        cfg = tune_trial_config(r.config, spec.base_config())
        if fuse.is_unit(cfg):
            fuse.finish_members(store, cfg, r.error)
        elif pack.is_unit(cfg):
            pack.finish_members(store, cfg, r.error)
        else:
            finish_trial(store, cfg["trial_id"], r.metrics or {}, r.error)


def _after_memory_kill(store: RunDir, killed: list[str], address: str | None, stop: StopOnSignal) -> None:
    """Tune's loop died of a memory-monitor kill (`crash.settle_memory_kill`). Locally, Ray is restarted,
    which ends the trials the dead loop left running (they continue from their checkpoints in the next
    pass); on a cluster the driver stops and says how to go on."""
    import ray

    log.warning("Ray's memory monitor killed the worker of trial(s) %s (recorded oom); Ray Tune's loop ended with "
                "it, so the other running trials are restarted from their checkpoints", killed or "?")
    if address:
        raise Stopped(f"Ray's memory monitor killed trial(s) {killed} and Ray Tune's loop with them", 1)
    ray.shutdown()
    try:
        init_ray(None)
    finally:
        stop.hook()   # ray.init replaced our SIGTERM handler
    procs.record(store.path)


def finisher(store: RunDir, base: dict):
    """A Ray Tune callback that finishes each trial as soon as it ends (not when its chunk ends), so
    a driver crash mid-chunk loses no finished work; `_fit` settles the rest (repeating is safe)."""
    from ray.tune import Callback

    class FinishTrials(Callback):
        def __init__(self):
            super().__init__()
            self.settled: dict[str, int] = {}   # Tune trial id -> a running packed unit's configurations settled

        def on_trial_result(self, iteration, trials, trial, result, **info):
            unit = trial.config.get("trial") or {}
            if pack.is_unit(unit) and result.get("member"):   # settle the configurations before it as the unit runs
                ended, n = pack.ended_before(unit, result["member"]), self.settled.get(trial.trial_id, 0)
                try:
                    pack.finish_members(store, unit, None, ended[n:])
                    self.settled[trial.trial_id] = max(n, len(ended))
                except Exception as e:   # never break Tune's loop: the unit's end settles them again
                    log.warning("finishing configurations of %s failed (retried at its end): %s", unit["trial_id"], e)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.settled.pop(trial.trial_id, None)
            cfg = tune_trial_config(trial.config, base)
            if not fuse.is_unit(cfg):
                try:
                    if pack.is_unit(cfg):
                        pack.finish_members(store, cfg, None)
                    else:
                        finish_trial(store, cfg["trial_id"], trial.last_result or {}, None)
                except Exception as e:   # never break Tune's loop: `_fit` finishes the trial again
                    log.warning("finishing trial %s failed (retried after the chunk): %s", cfg["trial_id"], e)

    return FinishTrials()
