"""The Ray processes a driver started, recorded so that a later driver can end them if this one
dies (SIGKILL, power cut): Ray's GCS, raylet and agents outlive a killed driver.

RUN_DIR/ray_procs.json lists (pid, start time, name) of the driver's child processes (its local
Ray: GCS, raylet, agents, and the trial workers), written when Ray starts and again as trials start. `cleanup` kills exactly those that are still the same processes (pid
and start time match) — never anything found by a name match, so other Rays on the machine
are safe. A driver connected to an existing cluster (`--address`) started nothing and records
nothing.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import psutil

from .lock import alive

FILE = "ray_procs.json"


def record(run_dir) -> list[dict]:
    """Note this process's children (its local Ray) in RUN_DIR/ray_procs.json."""
    me = psutil.Process()
    procs = []
    for p in me.children(recursive=True):
        try:
            procs.append({"pid": p.pid, "started": p.create_time(), "name": p.name()})
        except psutil.NoSuchProcess:
            pass
    path = Path(run_dir) / FILE
    tmp = path.parent / f".{FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"host": socket.gethostname(), "driver": me.pid, "driver_started": me.create_time(),
                               "procs": procs}))
    os.replace(tmp, path)
    return procs


def recorder(run_dir):
    """A Ray Tune callback that records the processes again as trials start (their workers are
    started after Ray itself, by the raylet)."""
    from ray.tune import Callback

    class RecordProcs(Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            record(run_dir)

    return RecordProcs()


def forget(run_dir) -> None:
    """The driver shut its Ray down cleanly: nothing to clean up later."""
    (Path(run_dir) / FILE).unlink(missing_ok=True)


def cleanup(run_dir) -> list[int]:
    """Kill the recorded Ray processes of a driver that is gone; returns the pids killed."""
    path = Path(run_dir) / FILE
    try:
        info = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    if info.get("host", socket.gethostname()) != socket.gethostname():
        path.unlink(missing_ok=True)   # another host's processes (its lock was taken over): not ours to end
        return []
    if alive(info.get("driver"), info.get("driver_started")):
        return []   # that driver is alive: its Ray is in use
    live = []
    for rec in info.get("procs", []):
        if alive(rec["pid"], rec["started"]):
            try:
                live.append(psutil.Process(rec["pid"]))
            except psutil.NoSuchProcess:
                pass
    kill_all(live, timeout=15)
    path.unlink(missing_ok=True)
    return [p.pid for p in live]


def kill_all(procs, timeout: float = 15) -> None:
    """SIGKILL each psutil process (those already gone are skipped) and wait up to `timeout` s."""
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=timeout)

