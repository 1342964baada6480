"""The sweep driver: plans the trials, runs them through Ray Tune, settles each as it ends.

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
- A worker writes rows (sweeps/worker.py); the driver finishes each trial (sweeps.finish): it checks
  that the rows are visible to it, compacts them, records their count and checksum, and sets the
  status. A resume verifies every finished trial's rows and re-plans any that are damaged.
- `RAY_CHDIR_TO_TRIAL_DIR=0` keeps paths stable; `fail_fast` is never set; large sweeps run as chunks of `chunk_size` trials per Tuner so the
  driver's memory stays bounded.
- Fractional GPUs do no memory isolation, so a trial caps its own CUDA allocator at its share
  (sweeps/worker.py) and a CUDA out-of-memory is recorded as status `oom` (not retried) instead
  of taking its neighbours down.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time

from nccore.config import DEFAULTS

from . import crash, faults, fuse, pack, probe, procs
from .crash import format_error
from .finish import finish_any, finish_packed
from .layout import TERMINAL
from .lock import RunLock
from .loggers import logger_callbacks, logger_env
from .logs import driver_log
from .plan import chunks, optuna_space, planned_configs, tune_trial_config
from .progress import SweepProgress, TrialName
from .spec import Spec, SpecError
from .stop import StopOnSignal, Stopped
from .store import RunDir
from .summary import sweep_summary
from .verify import build_manifest, remove_temp_files, replan_damaged
from .worker import environ, trainable

log = logging.getLogger("ncsweep")
MAX_PASSES = 3   # a sweep re-runs trials whose rows turned out damaged at most this many times per run
# Environment for the driver and the local Ray it starts (set for one run, then restored).
RAY_ENV = {"RAY_CHDIR_TO_TRIAL_DIR": "0", "RAY_AIR_NEW_OUTPUT": "0", "RAY_DEDUP_LOGS": "0",
           "RAY_AUTH_MODE": "disabled"}


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
    probe.check_out(out)                # s3://…: S3's API, boto3 for the lock, the bucket reachable
    probe.check_address(address, out)   # ray:// would keep the driver's bookkeeping off the cluster
    store = RunDir(out)
    store.loc.mkdir()
    store.path.mkdir(parents=True, exist_ok=True)   # node-local files (the run directory, or scratch for s3://)
    env = {**{k: os.environ.get(k, v) for k, v in RAY_ENV.items()}, **logger_env(spec.loggers)}
    # SIGTERM, or a lock this driver can no longer renew, stops the sweep: Tune's loop ends, the lock
    # is released, and sweeps.stop.Stopped (exit 143 / 2) reaches the CLI (sweeps/stop.py, sweeps/lock.py)
    try:
        with StopOnSignal() as stop, RunLock(store, on_lost=stop.request) as held, \
                driver_log(store.path), environ(env):
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
        raise Stopped(f"{e}: finished trials and every finished epoch are kept in {store.uri}; continue with "
                      f"`ncsweep resume {store.uri}`", e.exit_code) from None


def _run_locked(spec: Spec, store: RunDir, address, resources, quiet, callbacks, stop: StopOnSignal) -> dict:
    manifest = store.read_manifest()
    if manifest and manifest.get("digest") != spec.digest:
        raise SpecError(f"{store.uri} holds results of a different spec ({manifest.get('name')!r}, digest "
                        f"{manifest.get('digest')}); pass a new --out, or `ncsweep resume {store.uri}` to finish that one")
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
        probe.require_shared(store.uri)   # every node writes a probe the driver reads, before any trial
    else:
        procs.record(store.path)
    import_tensorboardx_without_torch()
    progress = SweepProgress.for_run(spec, store, planned, TERMINAL, quiet)
    callbacks = [tune_callback(progress), *logger_callbacks(spec.loggers, store.path, spec.name), *callbacks]
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
        if not store.exists(store.checkpoint_file(tid)):
            raise SpecError(f"spec field `init_from` = {ref!r}: no checkpoint of trial {tid} in {store.uri}; "
                            f"run that trial into this --out first (see `ncsweep status {store.uri}`)")


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
    fn = tune.with_parameters(trainable, run_dir=store.uri, base=spec.base_config(),
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
        drain(callbacks)
        killed = crash.settle_memory_kill(store, str(e), since)
        if killed is None:
            raise
        _after_memory_kill(store, killed, address, stop)
        return
    finally:
        drain(callbacks)   # nothing of this chunk is still being written when the lock is let go
    stop.check()   # interrupted: trials that did not end stay `running` (resumed from their checkpoints)
    for r in results:
        if r.config is None:   # the trial's actor died before the trial started: it stays planned, re-run next pass
            log.warning("a trial ended before it started (%s); it is run again", format_error(r.error) if r.error else "?")
            continue
        finish_any(store, tune_trial_config(r.config, spec.base_config()), r.metrics or {}, r.error)


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


def tune_callback(target):
    """A Ray Tune `Callback` that passes Tune's events to `target`'s methods of the same names
    (`on_trial_start`, …), so that `target` (the progress bar) needs no Ray import."""
    from ray.tune import Callback

    def forward(name):
        return lambda self, *args, **kwargs: getattr(target, name)(*args, **kwargs)

    hooks = {name: forward(name) for name in dir(Callback) if name.startswith("on_") and hasattr(target, name)}
    return type(f"{type(target).__name__}Events", (Callback,), hooks)()


class Settler:
    """One thread that settles trials in the order they are handed to it, off Ray Tune's event loop.

    A function trainable's `tune.report` waits until the driver's loop asks for its next result,
    and the loop runs the callbacks first: settling a packed unit's configurations there (a merge,
    a checksum and two fsync'd writes each, ~30 ms) stalls that unit's worker, and every other
    trial's results wait behind it. Here the loop only hands the work over. One thread, first in
    first out, so a configuration is never settled twice at once; `drain` waits for all of it
    (`_fit` calls it before its own pass, and before the lock can be let go)."""

    def __init__(self):
        self.pool, self.pending = None, []

    def submit(self, what: str, fn, *args) -> None:
        from concurrent.futures import ThreadPoolExecutor

        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ncsweep-settle")
        self.pending = [f for f in self.pending if not f.done()]
        self.pending.append(self.pool.submit(self._settle, what, fn, *args))

    @staticmethod
    def _settle(what: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as e:   # the chunk's end (`_fit`) settles it again: repeating is safe
            log.warning("finishing %s failed (retried after the chunk): %s", what, e)

    def drain(self) -> None:
        for f in self.pending:
            f.result()
        self.pending = []

    def __getstate__(self) -> dict:
        """Ray Tune pickles its callbacks with the experiment; a thread cannot be, nor need be."""
        return {"pool": None, "pending": []}


def drain(callbacks: list) -> None:
    """Wait until the trials the `finisher` callback was handed are settled."""
    for cb in callbacks:
        if isinstance(getattr(cb, "settler", None), Settler):
            cb.settler.drain()


def finisher(store: RunDir, base: dict):
    """A Ray Tune callback that finishes each trial as soon as it ends (not when its chunk ends), so
    a driver crash mid-chunk loses no finished work; `_fit` settles the rest (repeating is safe).
    The settling itself runs on a `Settler` thread: Tune's loop goes on at once."""
    from ray.tune import Callback

    class FinishTrials(Callback):
        def __init__(self):
            super().__init__()
            self.settled: dict[str, int] = {}   # Tune trial id -> a running packed unit's configurations settled
            self.settler = Settler()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            unit = trial.config.get("trial") or {}
            if pack.is_unit(unit) and result.get("member"):   # settle the configurations before it as the unit runs
                ended, n = pack.ended_before(unit, result["member"]), self.settled.get(trial.trial_id, 0)
                if len(ended) > n:
                    self.settler.submit(f"configurations of {unit['trial_id']}", finish_packed, store, unit, None,
                                        ended[n:])
                    self.settled[trial.trial_id] = len(ended)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.settled.pop(trial.trial_id, None)
            cfg = tune_trial_config(trial.config, base)
            if not fuse.is_unit(cfg):   # a fused unit's members are settled when its chunk ends
                self.settler.submit(f"trial {cfg['trial_id']}", finish_any, store, cfg, dict(trial.last_result or {}),
                                    None)

    return FinishTrials()
