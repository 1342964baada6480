"""The run-directory lock: one driver at a time writes a run directory, on any host.

RUN_DIR/lock.json holds the driver's host, pid, process start time, a random token, `locked_at`,
`heartbeat` and `lease_s`. It is written whole to a temporary file and hard-linked into place (which
fails if the name exists, also over NFS) — on an object store, by a conditional PUT (`If-None-Match:
*`, renewed with `If-Match` on its ETag; boto3, `pip install 'ncsweep[s3]'`) — so a lock file is
never half written and of two drivers starting at once exactly one gets it; the other is refused
with who holds it.

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
from urllib.parse import parse_qsl, urlparse

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


class LocalLockFile:
    """RUN_DIR/lock.json on a local or shared (NFS, Lustre, …) file system."""

    def __init__(self, run_dir):
        self.dir = Path(run_dir)
        self.path = self.dir / FILE
        self.where, self.name = str(self.dir), str(self.path)

    def read_text(self) -> str | None:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return None

    def create(self, info: dict) -> bool:
        """Write the lock if there is none (a hard link fails if the name exists); False if there is one."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{FILE}.{os.getpid()}.{info['token'][:8]}.tmp"
        tmp.write_text(json.dumps(info))
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def replace(self, info: dict) -> None:
        tmp = self.dir / f".{FILE}.{os.getpid()}.{info['token'][:8]}.beat.tmp"
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self.path)

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)


class ObjectLockFile:
    """RUN_DIR/lock.json on S3 or an S3-compatible store, by conditional writes: created with
    `If-None-Match: *` (refused when the key exists), replaced with `If-Match` on the ETag this
    driver wrote (refused when another driver replaced it)."""

    def __init__(self, uri: str):
        try:
            import boto3   # optional: only run directories on an object store need it
            from botocore.exceptions import ClientError
        except ImportError:
            raise ValueError(f"--out {uri}: a run directory on an object store needs boto3 for its lock; "
                             f"pip install -e '.[s3]'") from None
        u = urlparse(uri)
        if u.scheme != "s3":
            raise ValueError(f"--out {uri}: object storage is supported through S3's API (s3://bucket/path, also for "
                             f"S3-compatible servers via AWS_ENDPOINT_URL); use a path on a shared file system for {u.scheme}://")
        opts = dict(parse_qsl(u.query))   # pyarrow's URI options: the same endpoint for both
        endpoint = (f"{opts.get('scheme', 'https')}://{opts['endpoint_override']}"
                    if opts.get("endpoint_override") else None)
        self.client, self.ClientError = boto3.client("s3", endpoint_url=endpoint, region_name=opts.get("region")), ClientError
        self.bucket, self.key = u.netloc, "/".join(p for p in (u.path.strip("/"), FILE) if p)
        self.where, self.name = uri.rstrip("/"), f"s3://{self.bucket}/{self.key}"
        self.etag: str | None = None

    def _refused(self, e) -> bool:
        return e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412", "ConditionalRequestConflict")

    def read_text(self) -> str | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key)["Body"].read().decode()
        except self.ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise OSError(f"{self.name}: {e}") from e

    def create(self, info: dict) -> bool:
        try:
            self.etag = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=json.dumps(info).encode(),
                                               IfNoneMatch="*")["ETag"]
            return True
        except self.ClientError as e:
            if self._refused(e):
                return False
            raise OSError(f"{self.name}: {e}") from e

    def replace(self, info: dict) -> None:
        kw = {"IfMatch": self.etag} if self.etag else {}
        try:
            self.etag = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=json.dumps(info).encode(),
                                               **kw)["ETag"]
        except self.ClientError as e:
            if self._refused(e):
                raise LockHeld(f"the lock of {self.where} was replaced by another driver") from e
            raise OSError(f"{self.name}: {e}") from e

    def delete(self) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key)


def lock_file(where):
    """The lock file of a run directory: `where` is its path, its URI or a `sweeps.store.RunDir`."""
    uri = getattr(where, "uri", where)
    return ObjectLockFile(str(uri)) if "://" in str(uri) else LocalLockFile(uri)


def read(where) -> dict | None:
    """The lock of a run directory (path, URI, RunDir or lock file): None if there is none, {} if it
    is unreadable (not written by us: refused, never taken over)."""
    f = where if isinstance(where, (LocalLockFile, ObjectLockFile)) else lock_file(where)
    try:
        text = f.read_text()
        if text is None:
            return None
        info = json.loads(text)
        return info if isinstance(info, dict) else {}
    except (json.JSONDecodeError, OSError):
        return {}


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
        self.file = lock_file(run_dir)
        self.where = self.file.where
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
        mine = _me(self.lease_s)
        for _ in range(3):
            if not self.file.create(mine):
                info = read(self.file)
                if info is None:
                    continue                      # released between our two calls: try again
                if not info or not stale(info):
                    raise LockHeld(self._held_message(info))
                warnings.warn(f"{self.where}: taking over the lock of a driver that is gone "
                              f"({describe(info)}; lease {info.get('lease_s') or LEASE_S:.0f} s)",
                              RuntimeWarning, stacklevel=2)
                self.previous = info
                if read(self.file) == info:   # not already replaced by another taker
                    self.file.delete()
                continue
            self.held, self._mine = True, mine
            self._start_heartbeat()
            return self
        raise LockHeld(f"{self.where}: could not take the lock ({self.file.name}); another driver is starting")

    def _held_message(self, info: dict) -> str:
        if not info:
            return (f"{self.where} has an unreadable lock file {self.file.name}; if no driver uses this directory, "
                    f"`ncsweep unlock {self.where}`")
        lease = float(info.get("lease_s") or LEASE_S)
        return (f"{self.where} is in use by another ncsweep driver ({describe(info)}); wait for it to finish. "
                f"If that driver is gone, its lock goes stale {lease:.0f} s after its last heartbeat and the next "
                f"run or resume takes it over; `ncsweep unlock {self.where}` removes it now")

    # ------------------------------------------------------------------ the lease
    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="ncsweep-lock-heartbeat", daemon=True)
        self._thread.start()

    def renew(self) -> None:
        """Rewrite our heartbeat; raises LockHeld if the lock is no longer ours, OSError if unwritable."""
        info = read(self.file)
        if not info or info.get("token") != self._mine["token"]:
            who = describe(info) if info else "no lock file" if info is None else "an unreadable lock file"
            raise LockHeld(f"the lock of {self.where} is no longer this driver's ({who})")
        self._mine = {**self._mine, "heartbeat": time.time()}
        self.file.replace(self._mine)

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
                return self._lose(f"could not renew the lock of {self.where} for {limit:.0f} s "
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
            info = read(self.file) or {}
            if info.get("token") == self._mine["token"]:
                self.file.delete()
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def unlock(run_dir, force: bool = False) -> dict | None:
    """Remove RUN_DIR's lock for the operator; returns the lock removed (None: there was none).
    A live lock (fresh heartbeat, or a live process of this host) is kept unless `force`."""
    f = lock_file(run_dir)
    info = read(f)
    if info is None:
        return None
    if info and not stale(info) and not force:
        raise LockHeld(f"{run_dir} is locked by a driver that looks alive ({describe(info)}); stop it first, or "
                       f"`ncsweep unlock --force {run_dir}` if you know it is gone (e.g. its host is down and "
                       f"you cannot wait {float(info.get('lease_s') or LEASE_S):.0f} s)")
    f.delete()
    return info
