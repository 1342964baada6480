"""Fault injection for the crash-safety tests: `fault(step)` is called at every write step of a
run directory and does nothing unless the environment asks for a fault there.

    NCSWEEP_FAULT=<step>:<raise|kill|abort|hog>[,...]   e.g. compact.merged:kill, epoch.renamed:abort
    NCSWEEP_FAULT_ONCE=<path>                 each fault fires once: its first firing creates <path>.<step>

`raise` raises `InjectedFault` (a crash the process survives: Ray retries a trial, the driver
unwinds); `kill` sends SIGKILL to the current process (a power cut: nothing below runs); `abort`
calls abort() (SIGABRT, as glibc does on heap corruption: faulthandler reports it, the worker dies);
`hog` allocates memory, 256 MiB at a time, until something kills the process (Ray's memory monitor,
the OOM killer) or 64 GiB are held (then it raises). The
steps are listed in STEPS, in the order a trial's results are written.
"""
from __future__ import annotations

import os
import signal

ENV, ONCE_ENV = "NCSWEEP_FAULT", "NCSWEEP_FAULT_ONCE"
STEPS = {
    "epoch.tmp": "an epoch's rows are in a temporary file, not yet renamed into place (worker)",
    "epoch.renamed": "an epoch's rows file is in place, its checkpoint not yet written (worker)",
    "compact.merged": "a trial's merged file is in place, its epoch files not yet deleted (driver)",
    "compact.partial": "one of a trial's epoch files deleted, the others not yet (driver)",
    "record.tmp": "a trial record is in a temporary file, not yet renamed into place",
    "finish.before_record": "a trial's rows are compacted and checked, its record not yet `completed` (driver)",
    "trials_table.tmp": "trials.parquet is in a temporary file, not yet renamed into place (driver)",
    "manifest.tmp": "manifest.json is in a temporary file, not yet renamed into place (driver)",
}


class InjectedFault(RuntimeError):
    """Raised by `fault(step)` when NCSWEEP_FAULT=<step>:raise."""


def fault(step: str) -> None:
    wanted = dict(f.strip().partition(":")[::2] for f in os.environ.get(ENV, "").split(",") if f.strip())
    if step not in wanted:
        return
    action = wanted[step]
    once = os.environ.get(ONCE_ENV)
    if once:
        try:
            os.close(os.open(f"{once}.{step}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "abort":
        os.abort()
    if action == "hog":
        _hog()
    raise InjectedFault(f"injected fault at step {step!r}")


def _hog(chunk: int = 256 * 2**20, limit: int = 64 * 2**30) -> None:
    import time

    held = []
    while len(held) * chunk < limit:
        block = bytearray(chunk)
        block[::4096] = b"x" * len(block[::4096])   # touch every page: resident, not just reserved
        held.append(block)
        time.sleep(0.05)
    raise InjectedFault(f"hog held {limit >> 30} GiB and was not stopped")


def settings() -> dict:
    """The fault variables of this process, to hand to Ray workers (their environment may differ)."""
    return {k: os.environ[k] for k in (ENV, ONCE_ENV) if os.environ.get(k)}
