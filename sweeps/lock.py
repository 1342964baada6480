"""The run-directory lock: one driver at a time writes a run directory.

RUN_DIR/lock.json holds the driver's host, pid and process start time. It is written whole to a
temporary file and hard-linked into place (which fails if the name exists, also over NFS), so a
lock file is never half written and of two drivers starting at once exactly one gets it; the other is refused with who
holds it. A lock left by a driver that died on this host (its pid is gone, or now belongs to a
process started later) is stale: it is taken over with a warning, and the caller is told so it
can clean up what the dead driver left (`sweeps.procs`). A lock from another host cannot be
checked from here and is never taken over silently.
"""
from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path

import psutil

FILE = "lock.json"


class LockHeld(ValueError):
    """Another live driver holds the run directory."""


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": psutil.Process().create_time(), "locked_at": time.time()}


def alive(pid: int, started: float | None) -> bool:
    """Whether process `pid` is the one that started at `started` (pids are reused)."""
    try:
        p = psutil.Process(int(pid))
        return started is None or abs(p.create_time() - float(started)) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def read(run_dir) -> dict | None:
    p = Path(run_dir) / FILE
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, OSError):
        return {}   # not written by us (ours are linked in whole): refused, never taken over


def describe(info: dict) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("locked_at", 0)))
    return f"pid {info.get('pid')} on host {info.get('host')!r} since {when}"


def stale(info: dict) -> bool:
    """A lock of this host whose process is gone."""
    return info.get("host") == socket.gethostname() and not alive(info.get("pid", -1), info.get("started"))


class RunLock:
    """`with RunLock(dir) as lock:` — `lock.previous` is the stale lock it took over, if any."""

    def __init__(self, run_dir):
        self.path = Path(run_dir) / FILE
        self.previous: dict | None = None
        self.held = False

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.parent / f".{FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(_me()))
        try:
            for _ in range(3):
                try:
                    os.link(tmp, self.path)
                except FileExistsError:
                    info = read(self.path.parent)
                    if info is None:
                        continue                      # released between our two calls: try again
                    if not info or not stale(info):
                        who = describe(info) if info else f"unreadable lock file {self.path}"
                        raise LockHeld(f"{self.path.parent} is in use by another ncsweep driver ({who}); wait for "
                                       f"it to finish, or if that driver is gone for good, delete {self.path}")
                    warnings.warn(f"{self.path.parent}: taking over the lock of a driver that is gone "
                                  f"({describe(info)})", RuntimeWarning, stacklevel=2)
                    self.previous = info
                    if read(self.path.parent) == info:   # not already replaced by another taker
                        self.path.unlink(missing_ok=True)
                    continue
                self.held = True
                return self
        finally:
            tmp.unlink(missing_ok=True)
        raise LockHeld(f"{self.path.parent}: could not take the lock ({self.path}); another driver is starting")

    def release(self) -> None:
        if self.held:
            info = read(self.path.parent) or {}
            if info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
