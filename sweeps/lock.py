"""The run-directory lock: one driver at a time writes a run directory, on any host.

RUN_DIR/lock.json holds the driver's host, pid, process start time, a random token, `locked_at`,
`heartbeat` and `lease_s`. It is written whole to a temporary file and hard-linked into place (which
fails if the name exists, also over NFS), so a lock file is never half written and of two drivers
starting at once exactly one gets it; the other is refused with who holds it.

A lease, so that a lock outlives neither its driver nor its host:
- the holder rewrites `heartbeat` every HEARTBEAT_S (10 s) from a background thread;
- a lock whose heartbeat is older than its lease (LEASE_S, 60 s) is stale whatever host wrote it
  (the hosts' clocks must agree to well under the lease: NTP). A lock written before heartbeats (no
  `heartbeat`) is judged by its `locked_at`. On the lock's own host the process itself is checked
  instead: stale at once if it is gone, never while it runs;
- a stale lock is taken over with a warning that names the old holder, and the caller is told
  (`previous`) so it can clean up what the dead driver left (`sweeps.procs`);
- a holder that could not renew for GIVE_UP_S (40 s: before any other driver may take over at
  60 s), or finds its lock replaced by another driver's, calls `on_lost(reason)` once: the runner
  then stops the sweep, so there are never two writers.
`NCSWEEP_LOCK_LEASE_S` / `NCSWEEP_LOCK_HEARTBEAT_S` change the lease and the renewal period (tests;
a file system slower than 10 s per write). The lease is written into the lock, so every reader
judges a lock by its holder's lease.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
import warnings
from pathlib import Path

import psutil

FILE = "lock.json"
LEASE_S, HEARTBEAT_S = 60.0, 10.0


class LockHeld(ValueError):
    """Another live driver holds the run directory."""


def lease_settings() -> tuple[float, float]:
    """(lease, heartbeat period) in seconds: 60 and 10 unless the environment sets them."""
    lease = float(os.environ.get("NCSWEEP_LOCK_LEASE_S", LEASE_S))
    beat = float(os.environ.get("NCSWEEP_LOCK_HEARTBEAT_S", min(HEARTBEAT_S, lease / 6)))
    return lease, beat


def give_up_s(lease: float, beat: float) -> float:
    """How long a holder keeps going without a renewal: two periods short of the lease (40 s of 60)."""
    return max(beat, lease - 2 * beat)


def _me(lease: float) -> dict:
    now = time.time()
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": psutil.Process().create_time(),
            "token": uuid.uuid4().hex, "locked_at": now, "heartbeat": now, "lease_s": lease}


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
        info = json.loads(p.read_text())
        return info if isinstance(info, dict) else {}
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, OSError):
        return {}   # not written by us (ours are linked in whole): refused, never taken over


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def describe(info: dict) -> str:
    text = f"pid {info.get('pid')} on host {info.get('host')!r} since {_when(info.get('locked_at', 0))}"
    if info.get("heartbeat"):
        text += f", last heartbeat {time.time() - info['heartbeat']:.0f} s ago"
    return text


def silent_s(info: dict, now: float | None = None) -> float:
    """Seconds since the holder last proved alive: its heartbeat (a lock from before heartbeats: `locked_at`)."""
    now = time.time() if now is None else now
    return now - float(info.get("heartbeat") or info.get("locked_at") or 0.0)


def stale(info: dict) -> bool:
    """A lock whose holder is gone: of this host, its process is gone (a live one is never stale);
    of another host, silent for longer than its lease."""
    if info.get("host") == socket.gethostname():
        return not alive(info.get("pid", -1), info.get("started"))
    return silent_s(info) > float(info.get("lease_s") or LEASE_S)


class RunLock:
    """`with RunLock(dir, on_lost=...) as lock:` — `lock.previous` is the stale lock it took over, if
    any. While held, a thread renews the heartbeat; `on_lost(reason)` is called once if it cannot."""

    def __init__(self, run_dir, on_lost=None, lease_s: float | None = None, heartbeat_s: float | None = None):
        self.path = Path(run_dir) / FILE
        self.previous: dict | None = None
        self.held = False
        self.lost: str | None = None
        self.on_lost = on_lost
        default_lease, default_beat = lease_settings()
        self.lease_s = lease_s or default_lease
        self.heartbeat_s = heartbeat_s or min(default_beat, self.lease_s / 6)
        self._mine: dict | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mine = _me(self.lease_s)
        tmp = self.path.parent / f".{FILE}.{os.getpid()}.{mine['token'][:8]}.tmp"
        tmp.write_text(json.dumps(mine))
        try:
            for _ in range(3):
                try:
                    os.link(tmp, self.path)
                except FileExistsError:
                    info = read(self.path.parent)
                    if info is None:
                        continue                      # released between our two calls: try again
                    if not info or not stale(info):
                        raise LockHeld(self._held_message(info))
                    warnings.warn(f"{self.path.parent}: taking over the lock of a driver that is gone "
                                  f"({describe(info)}; lease {info.get('lease_s') or LEASE_S:.0f} s)",
                                  RuntimeWarning, stacklevel=2)
                    self.previous = info
                    if read(self.path.parent) == info:   # not already replaced by another taker
                        self.path.unlink(missing_ok=True)
                    continue
                self.held, self._mine = True, mine
                self._start_heartbeat()
                return self
        finally:
            tmp.unlink(missing_ok=True)
        raise LockHeld(f"{self.path.parent}: could not take the lock ({self.path}); another driver is starting")

    def _held_message(self, info: dict) -> str:
        if not info:
            return (f"{self.path.parent} has an unreadable lock file {self.path}; if no driver uses this directory, "
                    f"`ncsweep unlock {self.path.parent}`")
        lease = float(info.get("lease_s") or LEASE_S)
        return (f"{self.path.parent} is in use by another ncsweep driver ({describe(info)}); wait for it to finish. "
                f"If that driver is gone, its lock goes stale {lease:.0f} s after its last heartbeat and the next "
                f"run or resume takes it over; `ncsweep unlock {self.path.parent}` removes it now")

    # ------------------------------------------------------------------ the lease
    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="ncsweep-lock-heartbeat", daemon=True)
        self._thread.start()

    def renew(self) -> None:
        """Rewrite our heartbeat; raises LockHeld if the lock is no longer ours, OSError if unwritable."""
        info = read(self.path.parent)
        if not info or info.get("token") != self._mine["token"]:
            who = describe(info) if info else "no lock file" if info is None else "an unreadable lock file"
            raise LockHeld(f"the lock of {self.path.parent} is no longer this driver's ({who})")
        self._mine = {**self._mine, "heartbeat": time.time()}
        tmp = self.path.parent / f".{FILE}.{os.getpid()}.{self._mine['token'][:8]}.beat.tmp"
        tmp.write_text(json.dumps(self._mine))
        os.replace(tmp, self.path)

    def _beat(self) -> None:
        last_ok, error = time.monotonic(), None
        limit = give_up_s(self.lease_s, self.heartbeat_s)
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.renew()
                last_ok, error = time.monotonic(), None
            except LockHeld as e:
                return self._lose(str(e))
            except OSError as e:
                error = e
            if error is not None and time.monotonic() - last_ok > limit:
                return self._lose(f"could not renew the lock of {self.path.parent} for {limit:.0f} s "
                                  f"(lease {self.lease_s:.0f} s): {error}")

    def _lose(self, reason: str) -> None:
        self.lost, self.held = reason, False
        if self.on_lost is not None:
            self.on_lost(reason)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self.held:
            info = read(self.path.parent) or {}
            if info.get("token") == self._mine["token"]:
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def unlock(run_dir, force: bool = False) -> dict | None:
    """Remove RUN_DIR's lock for the operator; returns the lock removed (None: there was none).
    A live lock (fresh heartbeat, or a live process of this host) is kept unless `force`."""
    info = read(run_dir)
    if info is None:
        return None
    if info and not stale(info) and not force:
        raise LockHeld(f"{run_dir} is locked by a driver that looks alive ({describe(info)}); stop it first, or "
                       f"`ncsweep unlock --force {run_dir}` if you know it is gone (e.g. its host is down and "
                       f"you cannot wait {float(info.get('lease_s') or LEASE_S):.0f} s)")
    (Path(run_dir) / FILE).unlink(missing_ok=True)
    return info
