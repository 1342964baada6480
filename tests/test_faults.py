"""Fault injection: after a crash at any write step, a damaged file, a second driver or a dead
one, every planned (trial_id, epoch, split, group) key is in the run directory exactly once — or
the tool refused with a message that says why.

The default-suite tests drive the run directory's write path directly with synthetic rows (the
same `RunDir` / `finish_trial` calls the runner makes, no Ray, no training); the slow test at the
end drives the `ncsweep` CLI with real Ray trials and faults injected through NCSWEEP_FAULT.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from nccore import checkpoint
from sweeps import faults, lock, procs
from sweeps.driver import max_epochs
from sweeps.spec import parse_spec
from sweeps.store import RunDir
from sweeps.summary import exit_code, failure_line, status_summary
from sweeps.crash import format_error
from sweeps.finish import finish_trial
from sweeps.verify import check_trial, repair, replan_damaged, verify
from sweeps.worker import start_fresh_if_corrupt
from tests.faultsim import EPOCHS, GROUPS, PLANNED, SPEC, SPLITS, assert_exactly_once, sweep, worker

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- the write path without Ray
def test_a_clean_run_has_every_key_once_and_verifies(tmp_path):
    sweep(tmp_path)
    assert_exactly_once(tmp_path)
    recs = RunDir(tmp_path).records()
    assert all(r["status"] == "completed" and r["rows"] == EPOCHS * 9 and len(r["rows_sha256"]) == 64
               for r in recs.values())
    assert verify(tmp_path) == []


def _parquet_rows(run_dir: Path) -> int:
    return sum(pq.read_metadata(f).num_rows for f in RunDir(run_dir).row_files())


def test_status_counts_rows_from_the_records_as_the_files_hold_them(tmp_path):
    """`ncsweep status` opens no result file: its row count comes from the records, running
    trials' per-epoch counts (a crash mid-sweep) and finished trials' merged counts."""
    store = RunDir(tmp_path)
    worker(store, "t0")            # ran, not finished: per-epoch files and counts only
    worker(store, "t1")
    store.record_epoch("t1", 1, 9)  # resumed from epoch 1's checkpoint: epoch 2's count is gone until it reruns
    s = status_summary(store)
    assert s["files"] == 2 * EPOCHS and s["uncounted_files"] == 0
    assert s["rows"] == _parquet_rows(tmp_path) - 9
    sweep(tmp_path)                # finishes both (and compacts them)
    s = status_summary(store)
    assert s["rows"] == _parquet_rows(tmp_path) == len(PLANNED) and s["files"] == len(store.records())


def test_status_leaves_the_footers_of_trials_recorded_before_checksums_to_verify(tmp_path):
    store = RunDir(tmp_path)
    worker(store, "t0")
    store.update_record("t0", status="done")      # an older ncsweep's record: finished, no checksum
    _truncate(store.epoch_files("t0")[1])
    rows = lambda problems: [p["detail"] for p in problems if p["what"] == "rows"]  # noqa: E731
    assert rows(status_summary(store)["problems"]) == []           # 10^5 footers would take a minute
    assert "epoch-0001.parquet is unreadable" in rows(verify(tmp_path))[0]


@pytest.mark.parametrize("step", sorted(faults.STEPS))
def test_a_crash_at_any_write_step_then_a_rerun_gives_each_key_once(step, tmp_path, monkeypatch):
    monkeypatch.setenv(faults.ENV, f"{step}:raise")
    with pytest.raises(faults.InjectedFault):
        sweep(tmp_path)
    monkeypatch.delenv(faults.ENV)
    sweep(tmp_path)
    assert_exactly_once(tmp_path)
    assert {r["status"] for r in RunDir(tmp_path).records().values()} == {"completed"}
    assert verify(tmp_path) == []


@pytest.mark.parametrize("step", ["epoch.renamed", "compact.merged", "finish.before_record"])
def test_sigkill_at_a_write_step_then_a_rerun_gives_each_key_once(step, tmp_path):
    env = {**os.environ, faults.ENV: f"{step}:kill", "PYTHONPATH": str(ROOT)}
    code = f"from tests.faultsim import sweep; sweep({str(tmp_path)!r})"
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == -signal.SIGKILL, res.stderr[-1500:]
    with pytest.warns(RuntimeWarning, match="taking over the lock"):   # the dead process's lock
        sweep(tmp_path)
    assert_exactly_once(tmp_path)
    assert verify(tmp_path) == []


def test_compaction_repeated_after_a_crash_before_the_deletes_keeps_each_key_once(tmp_path):
    store = RunDir(tmp_path)
    worker(store, "t0")
    parts = store.epoch_files("t0")
    store.compact("t0")
    for p in parts:       # as if the deletes never happened: the epoch files are back beside the merged file
        store.write_epoch("t0", int(p.stem.split("-")[1]), [{"trial_id": "t0", "epoch": int(p.stem.split("-")[1]),
                                                              "split": s, "group": g} for s in SPLITS for g in GROUPS], {})
    info = store.compact("t0")
    assert info["rows"] == EPOCHS * 9 and not store.epoch_files("t0")
    assert_exactly_once(tmp_path, {k for k in PLANNED if k[0] == "t0"})


# ---------------------------------------------------------------------- damaged files
def _truncate(path: Path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_a_truncated_merged_file_is_found_and_its_trial_rerun(tmp_path):
    sweep(tmp_path)
    store = RunDir(tmp_path)
    _truncate(store.merged_path("t1"))
    problems = status_summary(store)["problems"]     # what `ncsweep status` prints
    assert [p["what"] for p in problems] == ["rows"] and "t1" in problems[0]["detail"]
    assert "checksum" in problems[0]["detail"]
    sweep(tmp_path)          # a resume: t1 re-planned and re-run, t0 untouched
    assert_exactly_once(tmp_path)
    rec = store.read_record("t1")
    assert rec["status"] == "completed" and rec["replans"] == 1 and "checksum" in rec["replanned_because"]
    assert verify(tmp_path) == []


def test_a_deleted_merged_file_is_never_reported_completed(tmp_path):
    sweep(tmp_path)
    store = RunDir(tmp_path)
    store.merged_path("t0").unlink()
    assert "missing" in check_trial(store, "t0", store.read_record("t0"))
    assert replan_damaged(store) and store.read_record("t0")["status"] == "pending"


def test_a_truncated_epoch_file_replans_the_trial_instead_of_failing_it(tmp_path):
    store = RunDir(tmp_path)
    worker(store, "t0")
    _truncate(store.epoch_files("t0")[1])
    assert finish_trial(store, "t0", {"epoch": EPOCHS - 1, "epoch_rows": 9}, None) == "pending"
    rec = store.read_record("t0")
    assert "unreadable" in rec["replanned_because"] and rec["epochs_done"] == 0
    assert not store.rows_dir("t0").exists()
    worker(store, "t0")
    assert finish_trial(store, "t0", {"epoch": EPOCHS - 1, "epoch_rows": 9}, None) == "completed"
    assert_exactly_once(tmp_path, {k for k in PLANNED if k[0] == "t0"})


def test_a_truncated_manifest_is_refused_then_rebuilt_by_repair(tmp_path):
    sweep(tmp_path)
    store = RunDir(tmp_path)
    before = store.read_manifest()
    _truncate(store.manifest_path, 40)
    res = subprocess.run([sys.executable, "-m", "sweeps.cli", "resume", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "ncsweep repair" in res.stderr
    assert [p["what"] for p in verify(tmp_path)] == ["manifest"]
    res = subprocess.run([sys.executable, "-m", "sweeps.cli", "repair", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    after = store.read_manifest()
    assert {k: after[k] for k in ("name", "digest", "spec", "planned_count")} == \
           {k: before[k] for k in ("name", "digest", "spec", "planned_count")}
    assert verify(tmp_path) == []
    assert_exactly_once(tmp_path)


def test_repair_deletes_temporary_files_and_unreadable_records(tmp_path):
    sweep(tmp_path)
    (tmp_path / "rows" / "t0" / ".epoch-0001.parquet.1.ab.tmp").write_bytes(b"half")
    (tmp_path / "trials" / "t1.json").write_text("{not json")
    assert {p["what"] for p in verify(tmp_path)} >= {"temp", "record"}
    done = repair(tmp_path)
    assert any("t1.json" in d for d in done) and verify(tmp_path) == []


# ---------------------------------------------------------------------- two drivers, dead drivers
def test_a_second_driver_is_refused_with_who_holds_the_lock(tmp_path):
    sweep(tmp_path)
    with lock.RunLock(tmp_path):
        with pytest.raises(lock.LockHeld, match=f"pid {os.getpid()} on host"):
            sweep(tmp_path)
        res = subprocess.run([sys.executable, "-m", "sweeps.cli", "resume", str(tmp_path)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and "in use by another ncsweep driver" in res.stderr
    assert_exactly_once(tmp_path)
    assert not (tmp_path / lock.FILE).exists()


def test_a_stale_lock_of_this_host_is_taken_over_with_a_warning(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    (tmp_path / lock.FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "started": 1.0,
                                                  "locked_at": time.time()}))
    with pytest.warns(RuntimeWarning, match="taking over the lock"):
        with lock.RunLock(tmp_path) as held:
            assert held.previous["pid"] == dead.pid
    now = time.time()   # another host's lock with a fresh heartbeat: refused (tests/sweeps/test_lock.py: leases)
    (tmp_path / lock.FILE).write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": 1.0, "locked_at": now,
                                                  "heartbeat": now}))
    with pytest.raises(lock.LockHeld, match="host 'elsewhere'"):
        lock.RunLock(tmp_path).acquire()


def test_cleanup_ends_only_the_processes_a_dead_driver_recorded(tmp_path):
    code = ("import subprocess, os; from sweeps import procs; "
            "subprocess.Popen(['sleep', '120']); procs.record(%r); os._exit(0)" % str(tmp_path))
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
    recorded = json.loads((tmp_path / procs.FILE).read_text())["procs"]
    bystander = subprocess.Popen(["sleep", "120"])   # same name, not recorded: must survive
    try:
        assert [p["name"] for p in recorded] == ["sleep"] and lock.alive(recorded[0]["pid"], recorded[0]["started"])
        assert procs.cleanup(tmp_path) == [recorded[0]["pid"]]
        assert not lock.alive(recorded[0]["pid"], recorded[0]["started"]) and bystander.poll() is None
        assert not (tmp_path / procs.FILE).exists()
    finally:
        bystander.kill()


# ---------------------------------------------------------------------- trial endings
def test_finishing_a_trial_twice_changes_nothing(tmp_path):
    store = RunDir(tmp_path)
    worker(store, "t0")
    _truncate(store.epoch_files("t0")[0])
    result = {"epoch": EPOCHS - 1, "epoch_rows": 9}
    assert finish_trial(store, "t0", result, None) == "pending"      # re-planned as it ended ...
    assert finish_trial(store, "t0", result, None) == "pending"      # ... and not failed when settled again
    worker(store, "t0")
    assert finish_trial(store, "t0", result, None) == finish_trial(store, "t0", result, None) == "completed"


def test_rows_the_driver_cannot_see_fail_the_trial_with_the_node_named(tmp_path):
    store = RunDir(tmp_path)
    store.update_record("t0", status="running", epochs_done=EPOCHS, config={"epochs": EPOCHS})
    result = {"epoch": EPOCHS - 1, "epoch_rows": 9, "hostname": "gpu-node-7", "node_id": "abc123"}
    assert finish_trial(store, "t0", result, None) == "failed"
    assert store.read_record("t0")["error"] == (
        "rows written on node gpu-node-7 (Ray node abc123) are not visible to the driver: "
        "is --out on storage every node shares?")


@pytest.mark.parametrize("epochs_done, ran_to_end, diverged, status", [
    (EPOCHS, True, False, "completed"),
    (EPOCHS, False, False, "completed"),   # ASHA stops a trial at max_t: it still ran all its epochs
    (1, False, False, "stopped"),
    (1, True, True, "diverged"),
])
def test_statuses_mean_what_they_say(tmp_path, epochs_done, ran_to_end, diverged, status):
    store = RunDir(tmp_path)
    worker(store, "t0")
    for p in store.epoch_files("t0")[epochs_done:]:
        p.unlink()
    store.update_record("t0", epochs_done=epochs_done, ran_to_end=ran_to_end, final={"diverged": 1} if diverged else {})
    assert finish_trial(store, "t0", {}, None) == status


def test_asha_max_t_is_the_largest_epochs_of_the_spec():
    spec = parse_spec({**SPEC, "space": {"epochs": {"grid": [2, 7, 4]}}})
    assert max_epochs(spec) == 7 and max_epochs(parse_spec(SPEC)) == EPOCHS


def test_exit_code_and_summary_line():
    ok = {"run_dir": "d", "planned": 4, "counts": {"completed": 3, "stopped": 1}, "failures": {}}
    bad = {"run_dir": "d", "planned": 4, "counts": {"completed": 2, "failed": 1, "oom": 1},
           "failures": {"a": "x", "b": "y"}}
    assert exit_code(ok) == 0 and failure_line(ok) is None
    assert exit_code(bad) == 1 and failure_line(bad).startswith("2 of 4 trials did not finish (1 failed, 1 oom)")
    left = {"run_dir": "d", "planned": 4, "pending": 1, "counts": {"completed": 3, "running": 1}, "failures": {}}
    assert exit_code(left) == 1   # a trial still unfinished after the run's passes is no success
    assert failure_line(left) == ("1 of 4 trials did not finish (1 unfinished: `ncsweep resume d` continues them); "
                                  "see `ncsweep status d`")


def test_the_error_field_is_the_root_exception_without_ray_banner():
    from ray.exceptions import RayTaskError

    def inner():
        raise ValueError("the real cause")

    try:
        try:
            inner()
        except ValueError as e:
            raise RuntimeError("wrapper") from e
    except RuntimeError as e:
        wrapped = RayTaskError("ImplicitFunc.train", "\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=1)\n...", e)
    text = format_error(wrapped)
    assert text.splitlines()[0] == "ValueError: the real cause"
    assert "in inner" in text and "\x1b" not in text and "ray::" not in text


# ---------------------------------------------------------------------- checkpoints
def test_checkpoints_load_with_weights_only_and_a_corrupt_one_restarts_from_scratch(tmp_path):
    gen = torch.Generator().manual_seed(3)
    state = {"epoch": 1, "rng": checkpoint.rng_state(gen), "method": {"model": {"w": torch.ones(2)},
             "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}}, "config": {"lr": 0.1}}
    store = RunDir(tmp_path)
    checkpoint.save(store.checkpoint_dir("t0"), state)
    loaded = checkpoint.load(store.checkpoint_dir("t0"))   # weights_only=True inside
    checkpoint.set_rng_state(loaded["rng"], gen)
    assert torch.equal(loaded["method"]["model"]["w"], torch.ones(2))
    worker(store, "t0")
    (store.checkpoint_dir("t0") / checkpoint.FILE).write_bytes(b"not a checkpoint")
    start_fresh_if_corrupt(store, "t0")
    rec = store.read_record("t0")
    assert "unreadable checkpoint" in rec["restarted_from_scratch"] and rec["epochs_done"] == 0
    assert checkpoint.load(store.checkpoint_dir("t0")) is None and not store.rows_dir("t0").exists()


def test_init_from_a_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    p = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, p)
    with pytest.raises(ValueError, match="tensors and plain data"):
        checkpoint.load_model_state(p)


# ---------------------------------------------------------------------- the CLI on real Ray trials
def _cli(*args, env=None, timeout=400):
    return subprocess.run([sys.executable, "-m", "sweeps.cli", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_cli_killed_worker_and_driver_corrupt_checkpoint_truncated_file_then_resume(tmp_path):
    """One small sweep (4 trials, 2 of them failing on a corrupt weights file) through every fault
    the CLI meets: a worker SIGKILLed after an epoch's rows and before its checkpoint, the driver
    SIGKILLed inside compaction, a corrupt checkpoint, a truncated merged file."""
    import psutil

    bad_weights = tmp_path / "corrupt.pt"
    bad_weights.write_bytes(b"definitely not a torch file")
    spec = {"name": "faults", "dataset": {"name": "biased_shapes",
                                          "options": {"n_train": 64, "n_val": 32, "n_test": 32, "image_size": 8}},
            "base": {"epochs": 2, "width": 0.0625, "batch_size": 32, "arch": "vgg11"},
            "space": {"seed": {"grid": [0, 1]}, "weights": {"grid": [None, str(bad_weights)]}},
            "search": {"algorithm": "grid"}, "max_concurrent": 2, "retries": 1}
    (tmp_path / "faults.yaml").write_text(json.dumps(spec))
    out = tmp_path / "run"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", faults.ENV: "epoch.renamed:kill,compact.merged:kill",
           faults.ONCE_ENV: str(tmp_path / "fired")}
    res = _cli("run", tmp_path / "faults.yaml", "--out", out, env=env)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert (tmp_path / "fired.epoch.renamed").exists() and (tmp_path / "fired.compact.merged").exists()
    recorded = json.loads((out / procs.FILE).read_text())["procs"]
    assert any(lock.alive(p["pid"], p["started"]) for p in recorded)    # the dead driver's Ray lingers

    store = RunDir(out)
    victim = next(t for t, r in store.records().items() if r["config"]["weights"] is None and r["status"] == "running")
    store.checkpoint_dir(victim).mkdir(parents=True, exist_ok=True)
    (store.checkpoint_dir(victim) / checkpoint.FILE).write_bytes(b"garbage")
    env = {k: v for k, v in env.items() if k not in (faults.ENV, faults.ONCE_ENV)}

    res = _cli("resume", out, env=env)
    assert res.returncode == 1, res.stderr[-2000:]
    assert "2 of 4 trials did not finish (2 failed)" in res.stdout
    good = sorted(t for t, r in store.records().items() if r["config"]["weights"] is None)
    assert len(good) == 2
    assert not any(lock.alive(p["pid"], p["started"]) for p in recorded)
    planned = {(t, e, s, g) for t in good for e in range(2) for s in ("train", "val", "test") for g in ("all", "0", "1")}
    assert_exactly_once(out, planned)
    assert "unreadable checkpoint" in store.read_record(victim)["restarted_from_scratch"]
    assert {store.read_record(t)["status"] for t in good} == {"completed"}
    row = pq.read_table(store.merged_path(good[0])).to_pylist()[0]
    assert row["hostname"] and row["node_id"] and row["device"]
    assert all("\x1b" not in r["error"] and "Error" in r["error"].splitlines()[0]
               for r in store.records().values() if r["status"] == "failed")

    _truncate(store.merged_path(good[1]))
    status = json.loads(_cli("status", out, "--json", env=env).stdout)
    assert [p["what"] for p in status["problems"]] == ["rows"]
    res = _cli("resume", out, env=env)
    assert res.returncode == 1 and store.read_record(good[1])["replans"] == 1
    assert_exactly_once(out, planned)
    assert _cli("verify", out, env=env).returncode == 0
    assert not (out / lock.FILE).exists() and not (out / procs.FILE).exists()
