"""Live sweep progress: a Ray Tune callback that counts trials and epochs in memory and draws one
`rich` progress bar.

    ━━━━━━━╸━━━━  7/12 trials · 2 running · 1 failed · 2 pending · epochs 23/36 · ETA 0:00:41 · best val_worst_group_acc 0.8125

Every count changes by one per Tune event (start, result, complete, error, recover), so an event
costs O(1) whatever the sweep's size; the run directory is read once, before the sweep starts,
to count what earlier runs finished.

The ETA after a `resume` is right because it is computed from this session's own pace only:
(epochs still to run) / (epochs run in this session per second since its first trial started).
Epochs that a trial will not run (a scheduler stopped it, it failed) are taken off the total when
it ends; a trial resumed from its checkpoint reports epoch numbers from where it left off. The bar is drawn only on a terminal; in a log file or a pipe it stays silent, and each
failed trial's error goes to the `ncsweep` logger (RUN_DIR/ncsweep.log). Nothing here imports Ray.
"""
from __future__ import annotations

import logging
import math
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from nccore.config import DEFAULTS

from .plan import tune_trial_config

log = logging.getLogger("ncsweep")


def sweep_trial_id(tune_config: dict, base: dict) -> str:
    return tune_trial_config(tune_config, base)["trial_id"]


class TrialName:
    """Names Tune's trial directories (and so TensorBoard's runs) by ncsweep trial id, the id that
    `ncsweep status` and `ncsweep logs` print; Tune's own id keeps the name unique."""

    def __init__(self, base: dict):
        self.base = base

    def __call__(self, trial) -> str:
        return f"{sweep_trial_id(trial.config, self.base)}_{trial.trial_id}"


def members(tune_config: dict) -> int:
    """Sweep trials one Tune trial trains: k for a fused or packed unit (sweeps/fuse.py, pack.py), else 1."""
    unit = tune_config.get("trial") or {}
    return len(unit.get("fused") or unit.get("packed") or ()) or 1


def format_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class SweepProgress:
    """Counts for one sweep (across all the Tuners a chunked sweep runs); Ray Tune calls its
    `on_trial_*` methods through `sweeps.driver.tune_callback`.

    planned: trials in the sweep; done_before / epochs_before: trials finished and epochs run by
    earlier sessions (a resume); total_epochs: epochs of all planned trials; base: the spec's base
    config (to name a searcher's trials); metric/mode: the objective shown as "best".
    """

    def __init__(self, planned: int, total_epochs: int, base: dict, done_before: int = 0, epochs_before: int = 0,
                 metric: str | None = None, mode: str = "max", records=None, quiet: bool = False, file=None):
        self.planned, self.total_epochs, self.base = planned, total_epochs, base
        self.done, self.failed, self.epochs = done_before, 0, epochs_before
        self.epochs_session, self.epochs_skipped = 0, 0
        self.metric, self.mode, self.best = metric, mode, None
        self.records = records              # trial_id -> record, read on errors only (RunDir.read_record)
        self.running: dict[str, int] = {}  # Tune trial id -> sweep trials it trains (k for a fused unit)
        self.n_running = 0
        self.reached: dict[str, int] = {}   # Tune trial id -> epochs it has reached, while it runs
        self.t_first: float | None = None
        self.trial_s_sum, self.trial_s_n, self.started_at = 0.0, 0, {}
        console = Console(file=file or sys.stdout)
        self.bar = None
        if not quiet and console.is_terminal:
            self.bar = Progress(BarColumn(bar_width=12), TextColumn("{task.description}"),
                                console=console, transient=False, refresh_per_second=4)
            self.task = self.bar.add_task(self.describe(), total=max(planned, 1), completed=done_before)
            self.bar.start()

    @classmethod
    def for_run(cls, spec, store, planned: list[dict] | None, terminal, quiet: bool = False) -> "SweepProgress":
        """Counts for `spec` in run directory `store`: what earlier sessions finished is read once
        here. planned: the planned configs (None for a searcher's sweep: num_samples trials)."""
        base = spec.base_config()
        epochs_of = lambda cfg: int(cfg.get("epochs", DEFAULTS["epochs"]))  # noqa: E731
        recs = store.records()
        if planned is not None:
            n, total = len(planned), sum(epochs_of(c) for c in planned)
        else:
            n = spec.search["num_samples"]
            total = n * epochs_of(base)
        done = [r for r in recs.values() if r.get("status") in terminal]
        skipped = sum(max(epochs_of(r.get("config") or base) - int(r.get("epochs_done", 0)), 0) for r in done)
        before = sum(int(r.get("epochs_done", 0)) for r in recs.values())
        metric = spec.search.get("metric") or (spec.scheduler or {}).get("metric")
        mode = spec.search.get("mode") or (spec.scheduler or {}).get("mode") or "max"
        return cls(n, max(total - skipped, 0), base, done_before=len(done), epochs_before=before,
                   metric=metric, mode=mode, records=store.read_record, quiet=quiet)

    # ------------------------------------------------------------------ the numbers
    @property
    def pending(self) -> int:
        return max(self.planned - self.done - self.failed - self.n_running, 0)

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds left at this session's pace; None before this session has run an epoch."""
        if not self.epochs_session or self.t_first is None:
            return None
        pace = self.epochs_session / max((now or time.perf_counter()) - self.t_first, 1e-9)
        left = max(self.total_epochs - self.epochs - self.epochs_skipped, 0)
        return left / pace

    @property
    def mean_trial_s(self) -> float | None:
        """Mean wall time of this session's finished trials as Tune sees them (actor start included);
        a packed unit's time is shared by its configurations, which ran one after another."""
        return self.trial_s_sum / self.trial_s_n if self.trial_s_n else None

    def describe(self) -> str:
        best = f" · best {self.metric} {self.best:.4f}" if self.best is not None else ""
        return (f"{self.done}/{self.planned} trials · {self.n_running} running · {self.failed} failed · "
                f"{self.pending} pending · epochs {self.epochs}/{self.total_epochs} · "
                f"ETA {format_eta(self.eta_s())}{best}")   # the best value last: a narrow terminal cuts it first

    def _draw(self) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done + self.failed, description=self.describe())

    # ------------------------------------------------------------------ Tune's events
    def on_trial_start(self, iteration, trials, trial, **info):
        if self.t_first is None:
            self.t_first = time.perf_counter()
            log.info("sweep started: %d trials planned, %d finished before, %d epochs to run",
                     self.planned, self.done, max(self.total_epochs - self.epochs, 0))
        log.info("trial %s started", sweep_trial_id(trial.config, self.base))
        self._stop_running(trial)   # a retried trial starts again
        self.running[trial.trial_id] = members(trial.config)
        self.n_running += self.running[trial.trial_id]
        self.started_at.setdefault(trial.trial_id, time.perf_counter())
        self._draw()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        n = int(result.get("epochs_reported", 1))   # a packed unit's result may stand for several (sweeps/pack.py)
        self.epochs += n
        self.epochs_session += n
        self.reached[trial.trial_id] = int(result.get("epoch", 0)) + 1
        v = result.get(self.metric) if self.metric else None
        if isinstance(v, (int, float)) and math.isfinite(v):
            if self.best is None or (v > self.best if self.mode == "max" else v < self.best):
                self.best = v
        self._draw()

    def _stop_running(self, trial) -> None:
        self.n_running -= self.running.pop(trial.trial_id, 0)

    def _ended(self, trial) -> int:
        """Book a Tune trial's end; returns how many sweep trials it held (k for a fused unit)."""
        self._stop_running(trial)
        k = members(trial.config)
        planned_epochs = int(tune_trial_config(trial.config, self.base).get("epochs") or DEFAULTS["epochs"])
        self.epochs_skipped += k * max(planned_epochs - self.reached.pop(trial.trial_id, 0), 0)
        t0 = self.started_at.pop(trial.trial_id, None)
        if t0 is not None:
            self.trial_s_sum += time.perf_counter() - t0
            self.trial_s_n += k if "packed" in (trial.config.get("trial") or {}) else 1   # one after another
        return k

    def on_trial_complete(self, iteration, trials, trial, **info):
        log.info("trial %s ended after epoch %d", sweep_trial_id(trial.config, self.base),
                 self.reached.get(trial.trial_id, 0))
        self.done += self._ended(trial)
        self._draw()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.failed += self._ended(trial)
        self._log_failure(trial, "failed")
        self._draw()

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._stop_running(trial)
        self._log_failure(trial, "failed and will be retried")
        self._draw()

    def _log_failure(self, trial, what: str) -> None:
        tid = sweep_trial_id(trial.config, self.base)
        rec = (self.records(tid) if self.records else None) or {}
        error = rec.get("error") or str(getattr(trial, "error_msg", None) or "see Ray's error file")
        log.error("trial %s %s (attempt %s): %s%s", tid, what, rec.get("attempts", "?"), error,
                  "\n" + rec["traceback"].rstrip() if rec.get("traceback") else "")

    def __getstate__(self) -> dict:
        """Ray Tune pickles its callbacks with the experiment (tuner.pkl); the live bar holds
        locks and a terminal, so a pickled copy keeps the counts and draws nothing."""
        return {**self.__dict__, "bar": None}

    def close(self) -> None:
        log.info("sweep ended: %s", self.describe())
        if self.bar is not None:
            self._draw()
            self.bar.stop()
            self.bar = None
