"""The run-directory lease lock (sweeps/lock.py), `ncsweep unlock`, and the driver's clean stop
(sweeps/stop.py) — without Ray. Leases are shortened to fractions of a second here; the defaults
(60 s lease, 10 s heartbeat, give up after 40 s) are checked by value."""
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from sweeps import lock, procs
from sweeps.cli import main
from sweeps.stop import StopOnSignal, Stopped

ROOT = Path(__file__).resolve().parents[2]


def plant(run_dir: Path, age_s: float, host: str = "node-gone", heartbeat: bool = True, **extra) -> dict:
    """A lock file of another driver whose last sign of life was `age_s` seconds ago (written now)."""
    t = time.time() - age_s
    info = {"host": host, "pid": 4242, "started": 1.0, "token": "f" * 32, "locked_at": t - 100, "lease_s": 60.0,
            **({"heartbeat": t} if heartbeat else {"locked_at": t}), **extra}
    (run_dir / lock.FILE).write_text(json.dumps(info))
    return info


def test_the_default_lease_is_60_s_renewed_every_10_s_and_given_up_after_40_s(monkeypatch):
    monkeypatch.delenv("NCSWEEP_LOCK_LEASE_S", raising=False)
    monkeypatch.delenv("NCSWEEP_LOCK_HEARTBEAT_S", raising=False)
    assert lock.lease_settings() == (60.0, 10.0) and lock.give_up_s(60.0, 10.0) == 40.0
    held = lock.RunLock("unused")
    assert (held.lease_s, held.heartbeat_s) == (60.0, 10.0)


def test_the_holder_renews_its_heartbeat(tmp_path):
    with lock.RunLock(tmp_path, lease_s=1.2, heartbeat_s=0.1):
        first = lock.read(tmp_path)
        time.sleep(0.5)
        later = lock.read(tmp_path)
        assert first["lease_s"] == 1.2 and later["token"] == first["token"]
        assert later["heartbeat"] - first["heartbeat"] >= 0.2 and later["locked_at"] == first["locked_at"]
        assert not lock.stale(later)
    assert not (tmp_path / lock.FILE).exists()


def test_a_stale_lock_of_another_host_is_taken_over_with_a_warning_naming_its_holder(tmp_path):
    old = plant(tmp_path, age_s=61)
    with pytest.warns(RuntimeWarning, match=r"taking over the lock .*pid 4242 on host 'node-gone'.*heartbeat 61 s ago"):
        with lock.RunLock(tmp_path) as held:
            assert held.previous == old
            assert lock.read(tmp_path)["host"] == socket.gethostname()


@pytest.mark.parametrize("age_s", [0, 59])
def test_a_live_lock_of_another_host_is_refused_with_the_way_out(tmp_path, age_s):
    plant(tmp_path, age_s=age_s)
    with pytest.raises(lock.LockHeld, match=rf"pid 4242 on host 'node-gone'.*stale 60 s after.*ncsweep unlock {tmp_path}"):
        lock.RunLock(tmp_path).acquire()
    assert lock.read(tmp_path)["host"] == "node-gone"


def test_a_lock_from_before_heartbeats_is_judged_by_locked_at(tmp_path):
    plant(tmp_path, age_s=30, heartbeat=False)
    with pytest.raises(lock.LockHeld):
        lock.RunLock(tmp_path).acquire()
    plant(tmp_path, age_s=90, heartbeat=False)
    with pytest.warns(RuntimeWarning, match="taking over"):
        lock.RunLock(tmp_path).acquire().release()


def test_a_lock_file_that_is_not_ours_is_refused_and_unlock_removes_it(tmp_path):
    (tmp_path / lock.FILE).write_text("[1, 2]")
    with pytest.raises(lock.LockHeld, match="unreadable lock file"):
        lock.RunLock(tmp_path).acquire()
    assert lock.unlock(tmp_path) == {} and not (tmp_path / lock.FILE).exists()


def test_the_holders_lease_decides(tmp_path):
    plant(tmp_path, age_s=61, lease_s=600.0)
    with pytest.raises(lock.LockHeld, match="stale 600 s after"):
        lock.RunLock(tmp_path).acquire()


def test_a_holder_that_cannot_renew_gives_up_before_its_lease_ends(tmp_path):
    class Unwritable(lock.RunLock):
        def renew(self):
            raise OSError(116, "Stale file handle")

    lost = []
    t0 = time.monotonic()
    held = Unwritable(tmp_path, on_lost=lambda reason: lost.append((time.monotonic() - t0, reason)), lease_s=2.4,
                      heartbeat_s=0.4).acquire()
    time.sleep(2.8)
    held.release()
    assert len(lost) == 1
    when, reason = lost[0]
    assert 1.6 <= when < 2.4, when      # gives up after lease - 2 periods, before anyone may take over
    assert "could not renew" in reason and "Stale file handle" in reason and held.lost == reason
    assert (tmp_path / lock.FILE).exists()   # a lost lock is not deleted: it may be another driver's now


def test_a_holder_whose_lock_was_taken_over_stops_at_once_and_leaves_the_new_lock(tmp_path):
    lost = []
    held = lock.RunLock(tmp_path, on_lost=lost.append, lease_s=1.2, heartbeat_s=0.1).acquire()
    plant(tmp_path, age_s=0, host="new-head")          # what a driver that took it over wrote
    time.sleep(0.4)
    held.release()
    assert len(lost) == 1 and "no longer this driver's" in lost[0] and "'new-head'" in lost[0]
    assert lock.read(tmp_path)["host"] == "new-head"


def test_unlock_refuses_a_live_lock_and_removes_a_stale_one(tmp_path, capsys):
    plant(tmp_path, age_s=5)
    assert main(["unlock", str(tmp_path)]) == 2
    assert "looks alive" in capsys.readouterr().err and (tmp_path / lock.FILE).exists()
    assert main(["unlock", "--force", str(tmp_path)]) == 0
    assert "removed the lock of pid 4242 on host 'node-gone'" in capsys.readouterr().out
    plant(tmp_path, age_s=120)
    assert main(["unlock", str(tmp_path)]) == 0 and not (tmp_path / lock.FILE).exists()
    assert main(["unlock", str(tmp_path)]) == 0 and "not locked" in capsys.readouterr().out


def test_the_ray_processes_recorded_on_another_host_are_never_signalled_here(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        p = {"pid": sleeper.pid, "started": __import__("psutil").Process(sleeper.pid).create_time(), "name": "sleep"}
        (tmp_path / procs.FILE).write_text(json.dumps({"host": "node-gone", "driver": 1, "driver_started": 1.0,
                                                        "procs": [p]}))
        assert procs.cleanup(tmp_path) == [] and sleeper.poll() is None
        assert not (tmp_path / procs.FILE).exists()
    finally:
        sleeper.kill()


# ---------------------------------------------------------------------- stopping the driver
def test_sigterm_in_the_stop_block_becomes_stopped_with_exit_143():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped, match="stopped by SIGTERM") as e:
        with StopOnSignal():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
    assert e.value.exit_code == 143 and signal.getsignal(signal.SIGTERM) is before   # handler put back


def test_sigterm_calls_ray_tunes_interrupt_handler_while_a_fit_runs():
    seen = []
    old = signal.signal(signal.SIGUSR1, lambda s, f: seen.append(s))   # what Tuner.fit installs
    try:
        with pytest.raises(Stopped):
            with StopOnSignal():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert seen == [signal.SIGUSR1]


def test_a_lost_lock_stops_the_driver_from_the_heartbeat_thread_with_exit_2(tmp_path):
    with pytest.raises(Stopped, match="no longer this driver's") as e:
        with StopOnSignal() as stop, lock.RunLock(tmp_path, on_lost=stop.request, lease_s=1.2, heartbeat_s=0.1):
            plant(tmp_path, age_s=0, host="new-head")
            for _ in range(50):
                time.sleep(0.05)
                stop.check()
    assert e.value.exit_code == 2 and lock.read(tmp_path)["host"] == "new-head"


def test_ncsweep_exits_with_the_stop_code_and_message(monkeypatch, capsys, tmp_path):
    from sweeps import cli

    def stopped(*a, **k):
        raise Stopped(f"stopped by SIGTERM: continue with `ncsweep resume {tmp_path}`", 143)

    monkeypatch.setattr(cli, "run_sweep", stopped)
    assert main(["run", str(ROOT / "sweeps/specs/demo.yaml"), "--out", str(tmp_path)]) == 143
    assert f"ncsweep resume {tmp_path}" in capsys.readouterr().err


def test_a_lock_of_a_live_process_of_this_host_is_never_stale_however_old(tmp_path):
    import psutil

    me = psutil.Process()
    plant(tmp_path, age_s=3600, host=socket.gethostname(), pid=me.pid, started=me.create_time())
    with pytest.raises(lock.LockHeld, match=f"pid {me.pid}"):
        lock.RunLock(tmp_path).acquire()


def test_a_rerun_after_a_driver_on_another_host_died_takes_its_old_style_lock_and_keeps_each_key_once(tmp_path):
    """The run directory's write path (tests/faultsim.py) behind a lock an older ncsweep left on a dead
    host two minutes ago (no heartbeat: judged by locked_at)."""
    from tests.faultsim import assert_exactly_once, sweep

    sweep(tmp_path)
    plant(tmp_path, age_s=120, heartbeat=False)
    with pytest.warns(RuntimeWarning, match="pid 4242 on host 'node-gone'"):
        sweep(tmp_path)
    assert_exactly_once(tmp_path)
    assert not (tmp_path / lock.FILE).exists()


def test_a_stop_asked_for_in_a_driver_off_the_main_thread_is_seen_at_the_next_check():
    caught = []

    def driver():
        try:
            with StopOnSignal() as stop:
                stop.request("lost the lock", exit_code=2)     # no signal: this is not the main thread
                stop.check()
        except Stopped as e:
            caught.append((str(e), e.exit_code))

    t = threading.Thread(target=driver)
    t.start()
    t.join(5)
    assert caught == [("lost the lock", 2)]


def test_ray_starting_up_does_not_replace_our_sigterm_handler():
    import ray._private.utils as ray_utils

    with StopOnSignal() as stop:
        ours = signal.getsignal(signal.SIGTERM)
        with stop.ray_keeps_our_handler():
            ray_utils.set_sigterm_handler(lambda s, f: None)      # what ray.init does
            assert signal.getsignal(signal.SIGTERM) is ours
        ray_utils.set_sigterm_handler(ours)                       # the real one is back afterwards
        assert ray_utils.set_sigterm_handler.__name__ == "set_sigterm_handler"
