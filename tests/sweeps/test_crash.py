"""A worker that dies gets a record naming the real cause (sweeps/crash.py): the fatal signal and
the last lines of its stderr; `oom` only when memory killed it."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sweeps import crash, faults
from sweeps.store import RunDir
from sweeps.finish import finish_trial

ROOT = Path(__file__).resolve().parents[2]
# a worker stand-in: captures its stderr like a trial, prints, then dies the way argv[2] says
CHILD = r"""
import os, sys
from sweeps import crash
from sweeps.store import RunDir
store = RunDir(sys.argv[1])
store.update_record("t0", status="running", attempts=1, hostname=__import__("socket").gethostname(),
                    **crash.capture_fields(["t0"]))
with crash.captured_stderr(store, ["t0"]):
    print("corrupted double-linked list", file=sys.stderr, flush=True)
    if sys.argv[2] == "abort":
        os.abort()
    if sys.argv[2] == "kill":
        os.kill(os.getpid(), 9)
print("after", flush=True)
"""


def _child(run_dir, how):
    return subprocess.run([sys.executable, "-c", CHILD, str(run_dir), how], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_an_aborted_worker_is_recorded_with_its_signal_and_stderr(tmp_path):
    p = _child(tmp_path, "abort")
    assert p.returncode == -6
    store = RunDir(tmp_path)
    assert (tmp_path / "crash" / "t0.stderr").exists()       # left behind by the dead process
    assert finish_trial(store, "t0", {}, RuntimeError("ActorDiedError: the actor died unexpectedly")) == "failed"
    rec = store.read_record("t0")
    assert "died by SIGABRT (Aborted)" in rec["error"]
    assert "corrupted double-linked list" in rec["error"]                      # glibc's line
    assert any("Fatal Python error: Aborted" in ln for ln in rec["stderr_tail"])
    assert any('line 11' in ln or "<string>" in ln for ln in rec["stderr_tail"])  # the Python stack


def test_a_sigkilled_worker_is_failed_not_oom(tmp_path):
    p = _child(tmp_path, "kill")
    assert p.returncode == -9
    store = RunDir(tmp_path)
    ray_guess = ("ActorDiedError: The actor died unexpectedly. (1) the process was killed by the OOM killer "
                 "due to high memory usage, (2) ray stop --force was called")
    # Ray's guess mentions the OOM killer: that alone is no evidence of memory
    status = finish_trial(store, "t0", {}, RuntimeError(ray_guess))
    rec = store.read_record("t0")
    assert status == "failed" and "without a Python error" in rec["error"]
    assert "corrupted double-linked list" in rec["error"]


def test_a_trial_that_ends_in_python_leaves_no_capture_and_gives_its_stderr_back(tmp_path):
    p = _child(tmp_path, "return")
    assert p.returncode == 0 and "after" in p.stdout
    assert "corrupted double-linked list" in p.stderr            # copied back to the worker's stderr
    assert not (tmp_path / "crash" / "t0.stderr").exists()
    rec = RunDir(tmp_path).read_record("t0")
    assert rec["stderr_log"] == "crash/t0.stderr" and rec["pid"] > 0


def test_rays_memory_monitor_message_makes_it_oom(tmp_path):
    store = RunDir(tmp_path)
    store.update_record("t0", status="running")
    msg = ("ray.exceptions.OutOfMemoryError: Task was killed due to the node running low on memory. Memory on the "
           "node was 22.1GB / 23.4GB (0.944), which exceeds the memory usage threshold of 0.9.")
    assert finish_trial(store, "t0", {}, RuntimeError(msg)) == "oom"
    assert "Ray's memory monitor" in store.read_record("t0")["error"]


def test_a_grown_cgroup_oom_kill_count_on_this_host_makes_it_oom(tmp_path, monkeypatch):
    store = RunDir(tmp_path)
    store.update_record("t0", status="running", hostname=socket.gethostname(), oom_kills_at_start=3, pid=42)
    monkeypatch.setattr(crash, "oom_kills", lambda: 4)
    assert finish_trial(store, "t0", {}, RuntimeError("ActorDiedError")) == "oom"
    assert "kernel's OOM killer (cgroup memory.events oom_kill 3 -> 4" in store.read_record("t0")["error"]
    store.update_record("t1", status="running", hostname="another-host", oom_kills_at_start=3, pid=42)
    assert finish_trial(store, "t1", {}, RuntimeError("ActorDiedError")) == "failed"   # not this host's cgroup


def test_a_python_error_the_worker_recorded_is_kept(tmp_path):
    store = RunDir(tmp_path)
    store.update_record("t0", status="error", error="ValueError: bad weights")
    assert finish_trial(store, "t0", {}, RuntimeError("RayTaskError")) == "failed"
    assert store.read_record("t0")["error"] == "ValueError: bad weights"


def test_an_aborted_worker_through_the_cli_is_recorded_with_sigabrt(tmp_path):
    """A real Ray trial whose worker aborts after its first epoch's rows (NCSWEEP_FAULT=epoch.renamed:abort)."""
    spec = {"name": "abort", "dataset": {"name": "biased_shapes",
                                         "options": {"n_train": 64, "n_val": 32, "n_test": 32, "image_size": 8}},
            "base": {"epochs": 2, "width": 0.0625, "batch_size": 32, "arch": "vgg11"},
            "space": {"seed": {"grid": [0]}}, "search": {"algorithm": "grid"}, "retries": 0}
    (tmp_path / "abort.yaml").write_text(json.dumps(spec))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", faults.ENV: "epoch.renamed:abort"}
    p = subprocess.run([sys.executable, "-m", "sweeps.cli", "run", str(tmp_path / "abort.yaml"), "--out",
                        str(tmp_path / "run")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert p.returncode == 1, p.stderr[-2000:]
    (rec,) = RunDir(tmp_path / "run").records().values()
    assert rec["status"] == "failed"
    assert "died by SIGABRT" in rec["error"], rec["error"]
    assert any("Fatal Python error: Aborted" in ln for ln in rec["stderr_tail"])
    assert any("faults.py" in ln for ln in rec["stderr_tail"])    # the Python stack names where it aborted


@pytest.mark.slow
def test_a_worker_ray_kills_for_memory_is_recorded_oom(tmp_path):
    """Ray's memory monitor, its threshold set a little above what the machine uses now, kills a
    trial whose worker allocates without end (NCSWEEP_FAULT=epoch.renamed:hog)."""
    import psutil

    vm = psutil.virtual_memory()
    used = (vm.total - vm.available) / vm.total
    spec = {"name": "hog", "dataset": {"name": "biased_shapes",
                                       "options": {"n_train": 64, "n_val": 32, "n_test": 32, "image_size": 8}},
            "base": {"epochs": 1, "width": 0.0625, "batch_size": 32, "arch": "vgg11"},
            "space": {"seed": {"grid": [0]}}, "search": {"algorithm": "grid"}, "retries": 0}
    (tmp_path / "hog.yaml").write_text(json.dumps(spec))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", faults.ENV: "epoch.renamed:hog",
           "RAY_memory_usage_threshold": f"{min(0.97, used + 0.12):.3f}", "RAY_memory_monitor_refresh_ms": "100"}
    p = subprocess.run([sys.executable, "-m", "sweeps.cli", "run", str(tmp_path / "hog.yaml"), "--out",
                        str(tmp_path / "run")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 1, p.stderr[-2000:]
    (rec,) = RunDir(tmp_path / "run").records().values()
    assert rec["status"] == "oom", rec["error"]
    assert "memory monitor" in rec["error"]
