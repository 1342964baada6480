"""SIGTERM to a real driver (SLURM's time limit, a pod stop): `ncsweep run` in a subprocess, stopped
part-way, exits 143 with a line saying how to resume, leaves no lock and no Ray behind; `ncsweep
resume` then gives every (trial, epoch, split, group) exactly once."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeps import lock, procs
from sweeps.store import RunDir
from tests.faultsim import assert_exactly_once

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 4


@pytest.mark.slow
def test_sigterm_stops_the_driver_with_143_and_resume_is_exact(tmp_path):
    spec = {"name": "sigterm", "dataset": {"name": "biased_shapes",
                                           "options": {"n_train": 64, "n_val": 32, "n_test": 32, "image_size": 8}},
            "base": {"epochs": EPOCHS, "width": 0.0625, "batch_size": 32, "arch": "vgg11"},
            "space": {"seed": {"grid": [0, 1, 2, 3]}}, "search": {"algorithm": "grid"}, "max_concurrent": 2}
    (tmp_path / "sigterm.yaml").write_text(json.dumps(spec))
    out = tmp_path / "run"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    driver = subprocess.Popen([sys.executable, "-m", "sweeps.cli", "run", str(tmp_path / "sigterm.yaml"), "--out",
                               str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while True:    # part-way: some trial has finished an epoch, and not every trial is finished
            assert driver.poll() is None, driver.communicate()[1][-2000:]
            assert time.monotonic() - t0 < 240, "no trial finished an epoch"
            recs = RunDir(out).records() if (out / "trials").exists() else {}
            if any(r.get("epochs_done", 0) >= 1 and r.get("status") == "running" for r in recs.values()):
                break
            time.sleep(0.2)
        recorded = json.loads((out / procs.FILE).read_text())["procs"]
        driver.send_signal(signal.SIGTERM)
        t_term = time.monotonic()
        _, err = driver.communicate(timeout=120)
        stop_s = time.monotonic() - t_term
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 143, err[-2000:]
    assert stop_s < 30, stop_s      # inside SLURM's default KillWait (30 s) before its SIGKILL
    print(f"stopped {stop_s:.1f} s after SIGTERM: {err.strip().splitlines()[-1]}")
    last = err.strip().splitlines()[-1]
    assert last.startswith("ncsweep: stopped by SIGTERM") and last.endswith(f"`ncsweep resume {out}`"), err[-2000:]
    assert not (out / lock.FILE).exists() and not (out / procs.FILE).exists()
    time.sleep(2)
    assert not any(lock.alive(p["pid"], p["started"]) for p in recorded if p["name"].startswith(("raylet", "gcs")))
    statuses = {r["status"] for r in RunDir(out).records().values()}
    assert "running" in statuses or len(RunDir(out).records()) < 4, statuses   # stopped part-way

    res = subprocess.run([sys.executable, "-m", "sweeps.cli", "resume", str(out)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]
    recs = RunDir(out).records()
    assert len(recs) == 4 and {r["status"] for r in recs.values()} == {"completed"}
    assert_exactly_once(out, {(t, e, s, g) for t in recs for e in range(EPOCHS)
                              for s in ("train", "val", "test") for g in ("all", "0", "1")})


@pytest.mark.slow
def test_sigterm_while_ray_starts_also_stops_with_143_before_any_trial(tmp_path):
    spec = {"name": "early", "dataset": {"name": "biased_shapes", "options": {"n_train": 64, "image_size": 8}},
            "base": {"epochs": 1, "width": 0.0625, "arch": "vgg11"}, "space": {"seed": {"grid": [0, 1]}},
            "search": {"algorithm": "grid"}}
    (tmp_path / "early.yaml").write_text(json.dumps(spec))
    out = tmp_path / "run"
    driver = subprocess.Popen([sys.executable, "-m", "sweeps.cli", "run", str(tmp_path / "early.yaml"), "--out",
                               str(out)], cwd=ROOT, env={**os.environ, "RAY_AUTH_MODE": "disabled"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while not (out / "manifest.json").exists():   # written just before Ray starts (~4 s)
            assert driver.poll() is None and time.monotonic() - t0 < 120, driver.communicate()[1][-2000:]
            time.sleep(0.02)
        driver.send_signal(signal.SIGTERM)
        _, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("ncsweep: stopped by SIGTERM")
    assert not (out / lock.FILE).exists() and not (out / procs.FILE).exists()
    assert not RunDir(out).records()          # no trial had started
