"""The Ray Tune sweep runner.

Design (the pitfalls it avoids are Ray Tune's known ones):
- The run directory is the source of truth (sweeps.store); Tune's experiment directory is a
  cache. Grid/random trials are planned up front (sweeps.plan) and a resume re-plans the same
  list and runs whatever has no terminal record — no `Tuner.restore`, no pickled searcher state.
  Optuna is warm-started on resume from the finished trials' results (`evaluated_rewards`).
- Trials checkpoint every epoch into RUN_DIR/checkpoints/<trial_id>, so a retried or resumed
  trial continues from its last epoch; rows are written before the checkpoint.
- Inside a trial only `ray.tune.report` is used; `RAY_CHDIR_TO_TRIAL_DIR=0` keeps paths stable;
  `fail_fast` is never set; large sweeps run as chunks of `chunk_size` trials per Tuner so the
  driver's memory stays bounded.
- Fractional GPUs do no memory isolation, so a trial caps its own CUDA allocator at its share
  (`torch.cuda.set_per_process_memory_fraction`) and a CUDA out-of-memory is recorded as status
  `oom` (not retried) instead of taking its neighbours down.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
import traceback
from pathlib import Path

from nccore.config import trial_id as make_trial_id

from .plan import chunks, optuna_space, planned_configs
from .spec import REPORTED, Spec, SpecError
from .store import TERMINAL, RunDir

log = logging.getLogger("ncsweep")


# ---------------------------------------------------------------------- inside a trial (Ray worker)
def summarize(rows: list[dict], objectives: dict) -> dict:
    """Flatten one epoch's "all" rows into the scalars Tune sees: <split>_<metric>."""
    out = {"epoch": rows[0]["epoch"]}
    for r in rows:
        if r.get("group") == "all":
            out.update({f"{r['split']}_{k}": float(r[k]) for k in REPORTED
                        if k in r and isinstance(r[k], (int, float)) and math.isfinite(r[k])})
    out["train_loss"] = float(rows[0].get("train_loss", math.nan))
    if rows[0].get("status") == "diverged":
        out["diverged"] = 1
    for metric, mode in objectives.items():   # schedulers/searchers need their metric in every result
        out.setdefault(metric, -math.inf if mode == "max" else math.inf)
    return out


def trainable(params: dict, run_dir: str, base: dict, objectives: dict, gpu: float, cpu: float) -> None:
    import ray
    import torch
    from ray import tune

    from nccore.trial import environment, iter_epochs

    cfg = dict(params["trial"]) if "trial" in params else {**base, **params}
    cfg["trial_id"] = tid = cfg.get("trial_id") or make_trial_id(cfg)
    if str(cfg.get("init_from") or "").startswith("trial:"):   # an earlier trial of this run directory
        cfg["init_from"] = str(RunDir(run_dir).checkpoint_dir(cfg["init_from"][len("trial:"):]))
    torch.set_num_threads(max(1, int(cpu)))
    if gpu and gpu < 1 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(gpu * 0.95)
    store = RunDir(run_dir)
    attempt = (store.read_record(tid) or {}).get("attempts", 0) + 1
    store.update_record(tid, status="running", attempts=attempt, config=cfg, error=None,
                        started_at=time.time())
    extra = {"attempt": attempt, "ray_version": ray.__version__, **environment()}
    t_start, inner, sinking, last = time.perf_counter(), 0.0, [0.0], {}

    def sink(epoch, rows):
        t = time.perf_counter()
        store.write_epoch(tid, epoch, rows, extra)
        sinking[0] += time.perf_counter() - t

    status = "done"
    try:
        epochs = iter_epochs({**cfg, "checkpoint_dir": str(store.checkpoint_dir(tid))}, sink=sink)
        while True:
            t = time.perf_counter()
            try:
                epoch, rows = next(epochs)
            except StopIteration:
                break
            inner += time.perf_counter() - t
            last = summarize(rows, objectives)
            if rows[0].get("status") == "diverged":
                status = "diverged"
            store.update_record(tid, epochs_done=epoch + 1, final=last)
            tune.report(last)
    except torch.cuda.OutOfMemoryError as e:
        store.update_record(tid, status="oom", error=f"CUDA out of memory: {e}".splitlines()[0],
                            wall_s=time.perf_counter() - t_start)
        return
    except Exception as e:
        store.update_record(tid, status="error", error=f"{type(e).__name__}: {e}",
                            traceback=traceback.format_exc(limit=8), wall_s=time.perf_counter() - t_start)
        raise
    store.compact(tid)
    wall = time.perf_counter() - t_start
    run_trial_s = inner - sinking[0]
    store.update_record(tid, status=status, wall_s=wall, run_trial_s=run_trial_s, sink_s=sinking[0],
                        overhead_s=wall - run_trial_s, finished_at=time.time())


# ---------------------------------------------------------------------- driver
def _objectives(spec: Spec) -> dict:
    out = {}
    if spec.search.get("metric"):
        out[spec.search["metric"]] = spec.search["mode"]
    if spec.scheduler:
        out[spec.scheduler["metric"]] = spec.scheduler["mode"]
    return out


def init_ray(run_dir: Path, address: str | None) -> float:
    """Start (or connect to) Ray quietly; its log lines go to RUN_DIR/ncsweep.log. Returns seconds."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray

    handler = logging.FileHandler(run_dir / "ncsweep.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("ray", "ncsweep"):
        lg = logging.getLogger(name)
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
        lg.propagate = False
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
              quiet: bool = False) -> dict:
    """Run (or continue) `spec` into run directory `out`. Finished trials are never re-run."""
    store = RunDir(out)
    store.path.mkdir(parents=True, exist_ok=True)
    manifest = store.read_manifest()
    if manifest and manifest.get("digest") != spec.digest:
        raise SpecError(f"{store.path} holds results of a different spec ({manifest.get('name')!r}, digest "
                        f"{manifest.get('digest')}); pass a new --out, or `ncsweep resume {store.path}` to finish that one")
    planned = None if spec.search["algorithm"] == "optuna" else planned_configs(spec)
    check_init_trials(spec, store, planned)
    res = {**spec.resources, **(resources or {})}
    store.write_manifest({"name": spec.name, "digest": spec.digest, "spec": spec.raw,
                          "algorithm": spec.search["algorithm"], "num_samples": spec.search["num_samples"],
                          "planned": [c["trial_id"] for c in planned] if planned is not None else None,
                          "planned_count": len(planned) if planned is not None else spec.search["num_samples"],
                          "resources": res, "created_at": (manifest or {}).get("created_at", time.time()),
                          "python": sys.version.split()[0]})
    t0 = time.perf_counter()
    ray_s = init_ray(store.path, address)
    progress = Progress(store, planned_count(store), _objectives(spec), quiet)
    if planned is not None:
        todo = [c for c in planned if (store.read_record(c["trial_id"]) or {}).get("status") not in TERMINAL]
        for part in chunks(todo, spec.chunk_size):
            _fit(spec, store, res, {"trial": _grid(part)}, len(part), None, progress)
    else:
        _run_optuna(spec, store, res, progress)
    store.write_trials_table()
    if not address:
        import ray

        ray.shutdown()
    summary = sweep_summary(store)
    tune_s = progress.durations
    summary.update(wall_s=time.perf_counter() - t0, ray_init_s=ray_s,
                   mean_tune_trial_s=sum(tune_s) / len(tune_s) if tune_s else None)
    progress.close(summary)
    return summary


def check_init_trials(spec: Spec, store: RunDir, planned) -> None:
    """`init_from: trial:<id>` must name a finished trial of this run directory — checked before Ray starts."""
    refs = {c.get("init_from") for c in (planned or [spec.base_config()])}
    for ref in sorted(r for r in refs if isinstance(r, str) and r.startswith("trial:")):
        tid = ref[len("trial:"):]
        if not (store.checkpoint_dir(tid) / "state.pt").exists():
            raise SpecError(f"spec field `init_from` = {ref!r}: no checkpoint of trial {tid} in {store.path}; "
                            f"run that trial into this --out first (see `ncsweep status {store.path}`)")


def planned_count(store: RunDir) -> int:
    m = store.read_manifest() or {}
    return int(m.get("planned_count") or 0)


def _grid(configs: list[dict]):
    from ray import tune

    return tune.grid_search(configs)


def _run_optuna(spec: Spec, store: RunDir, res: dict, progress) -> None:
    from ray.tune.search.optuna import OptunaSearch

    interrupted = [r["config"] for r in store.records().values() if r.get("status") not in TERMINAL and r.get("config")]
    if interrupted:   # finish them first, from their checkpoints
        _fit(spec, store, res, {"trial": _grid(interrupted)}, len(interrupted), None, progress)
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
    _fit(spec, store, res, {}, left, searcher, progress)


def _fit(spec: Spec, store: RunDir, res: dict, param_space: dict, num_samples: int, searcher, progress) -> None:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    scheduler = None
    if spec.scheduler:
        s = spec.scheduler
        scheduler = ASHAScheduler(metric=s["metric"], mode=s["mode"], grace_period=s["grace_period"],
                                  reduction_factor=s["reduction_factor"],
                                  max_t=int(spec.base_config().get("epochs", 5)))
    fn = tune.with_parameters(trainable, run_dir=str(store.path), base=spec.base_config(),
                              objectives=_objectives(spec), gpu=res["gpu"], cpu=res["cpu"])
    fn = tune.with_resources(fn, {"cpu": res["cpu"], "gpu": res["gpu"]})
    storage = spec.storage_path or str(store.path / "_tune")
    tuner = tune.Tuner(
        fn, param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                    num_samples=1 if searcher is None else num_samples,
                                    max_concurrent_trials=spec.max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(name=f"{spec.name}-{int(time.time() * 1000)}", storage_path=storage,
                                  failure_config=tune.FailureConfig(max_failures=spec.retries),
                                  verbose=0, callbacks=[progress.callback]),
    )
    results = tuner.fit()
    for r in results:
        cfg = r.config.get("trial") if "trial" in r.config else {**spec.base_config(), **r.config}
        tid = cfg.get("trial_id") or make_trial_id(cfg)
        rec = store.read_record(tid) or {}
        if r.error is not None and rec.get("status") not in ("oom",):
            store.update_record(tid, status="failed", error=rec.get("error") or str(r.error).splitlines()[0])
        elif rec.get("status") == "running":   # ended without error before its last epoch: a scheduler stop
            store.update_record(tid, status="stopped")


def sweep_summary(store: RunDir) -> dict:
    recs = list(store.records().values())
    counts: dict[str, int] = {}
    for r in recs:
        counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
    planned = planned_count(store)
    terminal = sum(v for k, v in counts.items() if k in TERMINAL)
    overhead = [r["overhead_s"] for r in recs if "overhead_s" in r]
    inner = [r["run_trial_s"] for r in recs if "run_trial_s" in r]
    return {"run_dir": str(store.path), "planned": planned, "finished": terminal,
            "pending": max(planned - terminal, 0), "counts": counts,
            "failures": {r["trial_id"]: r.get("error") for r in recs if r.get("status") in ("failed", "oom")},
            "mean_trial_overhead_s": sum(overhead) / len(overhead) if overhead else None,
            "mean_run_trial_s": sum(inner) / len(inner) if inner else None}


class Progress:
    """One live progress line: trials running/done/failed, best metric so far, ETA."""

    def __init__(self, store: RunDir, planned: int, objectives: dict, quiet: bool):
        from ray.tune import Callback

        class _CB(Callback):
            def on_trial_start(cb, iteration, trials, trial, **kw):
                self.started[trial.trial_id] = time.perf_counter()
                self._event()

            def on_trial_result(cb, iteration, trials, trial, result, **kw):
                self._result(result)

            def on_trial_complete(cb, iteration, trials, trial, **kw):
                if trial.trial_id in self.started:
                    self.durations.append(time.perf_counter() - self.started.pop(trial.trial_id))
                self._event()

            def on_trial_error(cb, iteration, trials, trial, **kw):
                self._event()

        self.callback = _CB()
        self.store, self.planned, self.quiet = store, planned, quiet
        self.metric, self.mode = next(iter(objectives.items()), (None, None))
        self.best, self.t0, self.last_print, self.last_line = None, time.perf_counter(), 0.0, None
        self.tty = sys.stdout.isatty()
        self.started: dict[str, float] = {}
        self.durations: list[float] = []   # trial wall time as Tune sees it (actor start included)

    def _result(self, result: dict) -> None:
        v = result.get(self.metric) if self.metric else None
        if v is not None and math.isfinite(v):
            better = self.best is None or (v > self.best if self.mode == "max" else v < self.best)
            self.best = v if better else self.best
        self._event(force=False)

    def _event(self, force: bool = True) -> None:
        if self.quiet or (not force and time.perf_counter() - self.last_print < 2.0):
            return
        recs = self.store.records().values()
        running = sum(r.get("status") == "running" for r in recs)
        done = sum(r.get("status") in TERMINAL for r in recs)
        failed = sum(r.get("status") in ("failed", "error", "oom") for r in recs)
        if not self.tty and (done, running, failed, self.best) == self.last_line:
            return   # a log file gets a line per change, a terminal a live line
        self.last_line, self.last_print = (done, running, failed, self.best), time.perf_counter()
        el = time.perf_counter() - self.t0
        eta = f"{el / done * max(self.planned - done, 0):.0f}s" if done else "?"
        best = f" best {self.metric}={self.best:.4f}" if self.best is not None else ""
        line = f"[ncsweep] {done}/{self.planned} done, {running} running, {failed} failed{best}, elapsed {el:.0f}s, ETA {eta}"
        print(("\r" + line + " " * 8) if self.tty else line, end="" if self.tty else "\n", flush=True)

    def close(self, summary: dict) -> None:
        if not self.quiet and self.tty:
            print()
