"""Why a trial's worker process died, told from what the process left behind.

A worker that dies without a Python exception (a segfault or abort in native code, a SIGKILL,
Ray's memory monitor, the kernel's OOM killer) reaches the driver only as Ray's
`ActorDiedError`, whose text guesses at causes ("the process was killed by the OOM killer …").
The real cause is on the worker's own stderr — glibc's message ("corrupted double-linked list"),
"Fatal Python error: Aborted", the Python stack — which Ray writes to a log on the worker's node.

So, worker side, `captured_stderr` points the worker's file descriptor 2 at a file in the run
directory (which every node shares) for the length of a trial, with `faulthandler` writing the
Python stack of every thread there on a fatal signal, and records the file's name, the process
id and the cgroup's OOM-kill count in the trial's record. A trial that ends in Python — finished
or raised — copies what it captured back to the worker's own stderr (Ray's log keeps it) and
removes the file; a process that died leaves it.

Driver side, `death_cause` reads the record and that file and names the cause:
  - `oom` only when memory killed it: Ray's memory-monitor message in the error, or the node's
    cgroup `memory.events` oom_kill count grew while the trial ran (read where the driver shares
    the worker's host) — never for a bare SIGKILL, which other things send;
  - otherwise `failed`, with the fatal signal faulthandler reported (SIGSEGV, SIGABRT, …) and the
    last lines of the worker's stderr, or "died without a Python error" when there is no signal.
"""
from __future__ import annotations

import contextlib
import faulthandler
import os
import re
import socket
import sys
import traceback
from pathlib import Path

TAIL_LINES = 30
MAX_MESSAGE = 500     # characters of an exception's message kept in a trial's error field
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# faulthandler's first line names the signal it caught
FATAL = {"Segmentation fault": "SIGSEGV", "Aborted": "SIGABRT", "Bus error": "SIGBUS",
         "Floating-point exception": "SIGFPE", "Floating point exception": "SIGFPE",
         "Illegal instruction": "SIGILL"}
_FATAL = re.compile(r"Fatal Python error: (" + "|".join(map(re.escape, FATAL)) + ")")
# Ray's memory monitor kills a worker with this text in the error it reports (raylet, Ray 2.x)
_RAY_OOM = re.compile(r"running low on memory|memory usage threshold|NODE_OUT_OF_MEMORY|OutOfMemoryError")
_CGROUP_EVENTS = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")


def oom_kills() -> int | None:
    """The kernel OOM killer's kill count in this process's cgroup (v2 memory.events, v1
    memory.oom_control); None where neither file is readable."""
    for path in _CGROUP_EVENTS:
        try:
            for line in Path(path).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def stderr_name(tids: list[str]) -> str:
    """The capture file of a trial (or of a fused unit: its first member and how many more)."""
    more = f"+{len(tids) - 1}" if len(tids) > 1 else ""
    return f"crash/{tids[0]}{more}.stderr"


def capture_fields(tids: list[str]) -> dict:
    """What the records of `tids` say about their capture: the file, the worker's pid, the cgroup's OOM-kill count."""
    return {"stderr_log": stderr_name(tids), "pid": os.getpid(), "oom_kills_at_start": oom_kills()}


@contextlib.contextmanager
def captured_stderr(store, tids: list[str]):
    """Inside a Ray worker, for one trial (or fused unit): fd 2 and faulthandler write into
    RUN_DIR/crash/<trial>.stderr (see the module doc). The caller records `capture_fields(tids)` in
    each record, in the start-of-attempt write it makes anyway."""
    path = store.path / stderr_name(tids)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    log = open(path, "w+b", buffering=0)
    os.dup2(log.fileno(), 2)
    faulthandler.enable(file=log, all_threads=True)
    try:
        yield path
    finally:
        sys.stderr.flush()
        if sys.__stderr__ is not None:   # back to the worker's own stderr (Ray's log)
            faulthandler.enable(file=sys.__stderr__, all_threads=True)
        else:
            faulthandler.disable()
        os.dup2(saved, 2)
        os.close(saved)
        log.seek(0)
        captured = log.read()
        log.close()
        if captured:
            os.write(2, captured)   # Ray's worker log keeps what the trial printed
        path.unlink(missing_ok=True)


def settle_memory_kill(store, text: str, since: float) -> list[str] | None:
    """Ray Tune 2.60 lets the OutOfMemoryError of a worker its memory monitor killed escape from
    `Tuner.fit()` ("Caught unexpected exception: … running low on memory"), ending Tune's loop. Then
    the trials of this host that started at or after `since`, are still `running` and whose worker
    process is gone are recorded `oom`. Returns their ids; None when `text` is no memory kill."""
    import psutil

    if not _RAY_OOM.search(text):
        return None
    said = next((ln.strip() for ln in text.splitlines() if _RAY_OOM.search(ln)), "")
    said = said.removeprefix("Caught unexpected exception: ")[:400]
    host, out = socket.gethostname(), []
    running = {tid: rec for tid, rec in store.records().items()
               if rec.get("status") == "running" and rec.get("hostname") == host and rec.get("pid")
               and (rec.get("started_at") or 0) >= since}
    procs = []
    for rec in running.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(rec["pid"]))
    psutil.wait_procs(procs, timeout=10)   # the error can reach the driver before the process is gone
    for tid, rec in running.items():
        pid = rec["pid"]
        if not psutil.pid_exists(pid):
            store.update_record(tid, status="oom", error=f"worker pid {pid} on {host} was killed by Ray's memory "
                                f"monitor (node memory above its threshold): {said}")
            out.append(tid)
    return out


def _tail(path: Path, n: int = TAIL_LINES) -> list[str]:
    """What matters of a capture file: around a fatal signal, the lines before faulthandler's report
    (glibc's message), the report's first line and the crashing thread's stack; else the last n lines."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    lines = [ln for ln in text.splitlines() if ln.strip()]
    fatal = next((i for i in range(len(lines) - 1, -1, -1) if _FATAL.search(lines[i])), None)
    if fatal is None:
        return lines[-n:]
    current = next((i for i in range(fatal, len(lines)) if lines[i].startswith("Current thread")), None)
    stack = []
    if current is not None:
        stack = [lines[current]] + [ln for ln in lines[current + 1:current + n] if ln.startswith("  File")][:n // 2]
    return lines[max(0, fatal - 6):fatal + 1] + stack


def death_cause(run_dir, record: dict, ray_error: str, full: str = "") -> tuple[str, str, list[str]]:
    """(status, message, stderr tail) for a trial whose worker ended with `ray_error` (Ray's
    error, short form; `full`: its whole text) and recorded no Python error of its own."""
    tail = _tail(Path(run_dir) / record["stderr_log"]) if record.get("stderr_log") else []
    where = f"worker pid {record.get('pid', '?')} on {record.get('hostname', '?')}"
    said = ray_error.strip().splitlines()[0][:300] if ray_error.strip() else "no error text"
    if _RAY_OOM.search(ray_error) or _RAY_OOM.search(full):
        return "oom", f"{where} was killed by Ray's memory monitor (node memory above its threshold): {said}", tail
    before, now = record.get("oom_kills_at_start"), None
    if before is not None and record.get("hostname") == socket.gethostname():
        now = oom_kills()
    if now is not None and now > before:
        return "oom", (f"{where} was killed by the kernel's OOM killer (cgroup memory.events oom_kill "
                       f"{before} -> {now} while it ran)"), tail
    match = next((m for m in map(_FATAL.search, tail) if m), None)
    shown = "\n".join(f"  | {ln}" for ln in tail[:20])
    if match:
        sig = FATAL[match.group(1)]
        return "failed", f"{where} died by {sig} ({match.group(1)}); last lines of its stderr:\n{shown}", tail
    if tail:
        return "failed", (f"{where} died without a Python error (SIGKILL, or its node was lost); Ray said: {said}; "
                          f"last lines of its stderr:\n{shown}"), tail
    return "failed", f"{where} died without a Python error and left no stderr; Ray said: {said}", tail


# ---------------------------------------------------------------------- errors
def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception: through Ray's wrappers (`.cause`) and Python's chaining."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nxt = getattr(exc, "cause", None)
        if not isinstance(nxt, BaseException):
            nxt = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if nxt is None:
            break
        exc = nxt
    return exc


def raised_in_python(exc: BaseException) -> bool:
    """Whether Ray's error carries a Python exception the trial raised (a RayTaskError), rather than
    the death of its process (ActorDiedError, WorkerCrashedError, OutOfMemoryError, …)."""
    return any(c.__name__ == "RayTaskError" for c in type(exc).__mro__)


def format_error(exc: BaseException, frames: int = 3) -> str:
    """`Type: message` of the root exception, then its last `frames` frames — no Ray banner."""
    root = root_cause(exc)
    msg = _ANSI.sub("", str(root)).strip()
    if type(root).__name__.startswith("RayTaskError") or "ray::" in msg:
        # the cause did not survive the trip to the driver: keep the traceback's last line
        lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
        return lines[-1] if lines else type(root).__name__
    if len(msg) > MAX_MESSAGE:
        msg = msg[:MAX_MESSAGE] + " …"
    out = [f"{type(root).__name__}: {msg}" if msg else type(root).__name__]
    for f in traceback.extract_tb(root.__traceback__)[-frames:] if frames else []:
        out.append(f"  {Path(f.filename).name}:{f.lineno} in {f.name}: {f.line}")
    return "\n".join(out)
