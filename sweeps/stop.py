"""Stopping a driver cleanly: on SIGTERM (SLURM's time limit, `kubectl delete`, `ray job stop`) or when
its run-directory lock is lost, the driver ends Ray Tune's loop, finishes nothing half-way, releases
the lock and exits with a line saying how to resume.

    with StopOnSignal() as stop:     # in the driver's main thread
        ...                          # stop.check() between steps; stop.hook() after ray.init
    # raises Stopped(exit_code=143 for SIGTERM) once the block has unwound

SIGTERM sets the request and, while a `Tuner.fit` runs, calls Ray Tune's own interrupt handler
(the one it installs for SIGUSR1/SIGINT), which ends the tuning loop and stops the trials' actors.
Trials that did not end are left `running` in their records: a resume continues each from its last
checkpoint. `ray.init` installs its own SIGTERM handlers (exit without cleanup, and for a local Ray,
kill its processes and exit 1); `ray_keeps_our_handler()` stops it from doing so while it starts, so a
SIGTERM then is ours too, and `hook()` puts ours back in any case.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading


class Stopped(RuntimeError):
    """The driver stopped before the sweep ended; `exit_code` is the process's exit status."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class StopOnSignal:
    """Turns SIGTERM (and `request(reason)` from any thread) into a clean stop of the driver."""

    def __init__(self, signals=(signal.SIGTERM,)):
        self.signals = signals
        self.reason: str | None = None
        self.exit_code = 0
        self._old: dict = {}
        self._main = threading.current_thread() is threading.main_thread()

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def _handler(self, signum, frame) -> None:
        if self.reason is None:
            self.reason, self.exit_code = f"stopped by {signal.Signals(signum).name}", 128 + signum
        tune_interrupt = signal.getsignal(signal.SIGUSR1)   # Ray Tune's, while a Tuner.fit runs
        if callable(tune_interrupt) and tune_interrupt is not self._handler:
            tune_interrupt(signal.SIGUSR1, frame)

    def tune_callback(self):
        """A Ray Tune callback that forwards a stop asked for before Tune installed its handler (while
        the Tuner was being built): at the next step of Tune's loop it calls Tune's interrupt."""
        from ray.tune import Callback

        stop = self

        class ForwardStop(Callback):
            def on_step_begin(self, iteration, trials, **info):
                if stop.requested:
                    tune_interrupt = signal.getsignal(signal.SIGUSR1)
                    if callable(tune_interrupt) and tune_interrupt is not stop._handler:
                        tune_interrupt(signal.SIGUSR1, None)

        return ForwardStop()

    def request(self, reason: str, exit_code: int = 2) -> None:
        """Ask the driver to stop, from any thread (the lock's heartbeat thread): SIGTERM to ourselves,
        handled in the main thread like an outside SIGTERM but with this reason and exit code."""
        if self.reason is None:
            self.reason, self.exit_code = reason, exit_code
        if self._old:   # our handler is installed (main thread): it ends Tune's loop now
            os.kill(os.getpid(), signal.SIGTERM)
        # else (a driver run from another thread): `check()` between chunks stops it

    @contextlib.contextmanager
    def ray_keeps_our_handler(self):
        """While Ray starts (`ray.init`), keep it from replacing our SIGTERM handler: a SIGTERM that
        comes then stops the driver like any other (exit 143), not through Ray's `sys.exit`."""
        try:
            import ray._private.utils as ray_utils
        except ImportError:
            yield
            return
        original = getattr(ray_utils, "set_sigterm_handler", None)
        if original is None or not self._main:
            yield
            return
        ray_utils.set_sigterm_handler = lambda handler: None
        try:
            yield
        finally:
            ray_utils.set_sigterm_handler = original

    def hook(self) -> None:
        """Install (again) our handler; call after anything that installs its own (ray.init)."""
        if not self._main:
            return
        for s in self.signals:
            old = signal.signal(s, self._handler)
            self._old.setdefault(s, old)

    def check(self) -> None:
        """Raise Stopped if a stop was asked for (between the driver's steps)."""
        if self.reason is not None:
            raise Stopped(self.reason, self.exit_code)

    def __enter__(self) -> "StopOnSignal":
        self.hook()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for s, old in self._old.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)
        self._old.clear()
        if self.reason is not None and (exc_type is None or not issubclass(exc_type, Stopped)):
            # what failed after a stop was asked for (Ray's processes ending under us) is its consequence
            raise Stopped(self.reason, self.exit_code) from exc
