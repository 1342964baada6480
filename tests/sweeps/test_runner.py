"""The runner end to end on a local Ray: retries and failures, divergence, exactly-once Parquet,
idempotent re-runs, and resume after the driver is SIGKILLed."""
import json
import os
import signal
import subprocess
import sys
import time

import duckdb
import psutil
import pandas as pd
import pyarrow.dataset as ds
import pytest
import yaml

from sweeps.procs import kill_all
from sweeps.driver import run_sweep
from sweeps.spec import parse_spec
from sweeps.store import SCHEMA_VERSION, RunDir

TINY_DATA = {"n_train": 128, "n_val": 64, "n_test": 64, "image_size": 8}
TINY_BASE = {"epochs": 2, "width": 0.125, "batch_size": 32, "arch": "vgg11"}
ROWS_PER_EPOCH = 9  # 3 splits × (all + 2 subgroups)


def _keys(run_dir):
    df = duckdb.connect().execute(
        f"select trial_id, epoch, split, \"group\" from read_parquet('{run_dir}/rows/*/*.parquet', union_by_name=true)"
    ).df()
    return df


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("faulty")
    corrupt = root / "corrupt.pt"
    corrupt.write_bytes(b"definitely not a torch checkpoint")
    spec = parse_spec({
        "name": "faulty", "dataset": {"name": "biased_shapes", "options": TINY_DATA}, "base": TINY_BASE,
        "space": {"lr": {"grid": [0.05, 1.0e12]}, "weights": {"grid": [None, str(corrupt)]}},
        "search": {"algorithm": "grid"}, "max_concurrent": 2, "retries": 1,
    })
    out = root / "run"
    summary = run_sweep(spec, out, quiet=True)
    return spec, out, summary


def test_failures_are_retried_then_recorded_and_the_sweep_finishes(faulty_run):
    spec, out, summary = faulty_run
    recs = RunDir(out).records().values()
    by = {(r["config"]["lr"], r["config"]["weights"] is not None): r for r in recs}
    assert by[(0.05, False)]["status"] == "completed"
    assert by[(1e12, False)]["status"] == "diverged"
    for lr in (0.05, 1e12):
        failed = by[(lr, True)]
        assert failed["status"] == "failed" and failed["attempts"] == 2   # 1 try + 1 retry
        assert "UnpicklingError" in failed["error"] or "corrupt.pt" in failed["error"]
    assert summary["finished"] == summary["planned"] == 4 and summary["pending"] == 0


def test_rows_exactly_once_readable_by_pandas_pyarrow_duckdb(faulty_run):
    _, out, _ = faulty_run
    keys = _keys(out)
    assert not keys.duplicated().any()
    done = [r for r in RunDir(out).records().values() if r["status"] == "completed"][0]
    assert (keys.trial_id == done["trial_id"]).sum() == 2 * ROWS_PER_EPOCH
    df = pd.read_parquet(out / "rows")
    assert len(df) == len(keys) and ds.dataset(out / "rows", format="parquet").count_rows() >= 1
    row = df[df.trial_id == done["trial_id"]].iloc[0]
    for col in ("schema_version", "torch_version", "ray_version", "ncsweep_version", "device", "hostname", "node_id",
                "cudnn_deterministic",
                "seed", "arch", "lr", "weight_decay", "bias_level", "penalty", "width", "epochs", "attempt"):
        assert col in df.columns, col
    assert row.schema_version == SCHEMA_VERSION
    trials = pd.read_parquet(out / "trials.parquet")
    assert set(trials.status) == {"completed", "diverged", "failed"} and "error" in trials and "wall_s" in trials


def test_running_the_same_spec_again_redoes_nothing(faulty_run):
    spec, out, _ = faulty_run
    before = {r["trial_id"]: r["attempts"] for r in RunDir(out).records().values()}
    mtimes = {p: p.stat().st_mtime_ns for p in RunDir(out).row_files()}
    run_sweep(spec, out, quiet=True)
    after = {r["trial_id"]: r["attempts"] for r in RunDir(out).records().values()}
    assert before == after
    assert mtimes == {p: p.stat().st_mtime_ns for p in RunDir(out).row_files()}
    assert not _keys(out).duplicated().any()


def test_a_different_spec_into_the_same_directory_is_refused(faulty_run):
    spec, out, _ = faulty_run
    other = parse_spec({**spec.raw, "base": {**TINY_BASE, "epochs": 3}})
    with pytest.raises(ValueError, match="different spec"):
        run_sweep(other, out, quiet=True)


def _kill(procs) -> None:
    kill_all(procs, timeout=30)


def test_sigkill_the_driver_then_resume_completes_exactly_once(tmp_path):
    spec = {"name": "killme", "dataset": {"name": "biased_shapes", "options": TINY_DATA},
            "base": {**TINY_BASE, "epochs": 3}, "space": {"seed": {"grid": [0, 1, 2, 3]}},
            "search": {"algorithm": "grid"}, "max_concurrent": 2, "retries": 1}
    path = tmp_path / "killme.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "run"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "sweeps.cli"]
    driver = subprocess.Popen(cli + ["run", str(path), "--out", str(out)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    orphans = []
    try:
        deadline = time.time() + 240
        while time.time() < deadline and len(list(out.glob("rows/*/*.parquet"))) < 2:
            time.sleep(0.2)
        assert driver.poll() is None, "the sweep finished before it could be killed"
        # the processes the driver started (its local Ray: GCS, raylet, workers, agents) linger after
        # a SIGKILL (shared/ENV.md): note them now, kill the driver as a crash would, then clean them up
        # — without touching any other Ray on the machine
        orphans = psutil.Process(driver.pid).children(recursive=True)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    _kill(orphans)
    assert len(list(out.glob("rows/*/*.parquet"))) < 4 * 3
    res = subprocess.run(cli + ["resume", str(out)], env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-2000:]
    recs = RunDir(out).records()
    assert len(recs) == 4 and all(r["status"] == "completed" for r in recs.values())
    keys = _keys(out)
    assert not keys.duplicated().any() and len(keys) == 4 * 3 * ROWS_PER_EPOCH
    status = subprocess.run(cli + ["status", str(out), "--json"], env=env, capture_output=True, text=True)
    assert json.loads(status.stdout)["pending"] == 0


def test_resume_of_a_directory_without_manifest_is_a_clear_error(tmp_path):
    res = subprocess.run([sys.executable, "-m", "sweeps.cli", "resume", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 2 and "no manifest.json" in res.stderr


def test_optuna_search_with_asha_runs_and_resumes_to_its_sample_count(tmp_path):
    spec = parse_spec({
        "name": "tpe", "dataset": {"name": "biased_shapes", "options": TINY_DATA}, "base": {**TINY_BASE, "epochs": 3},
        "space": {"lr": {"loguniform": [0.01, 0.2]}, "arch": {"choice": ["vgg11", "resnet18"]}},
        "search": {"algorithm": "optuna", "num_samples": 4, "metric": "val_worst_group_acc", "mode": "max", "seed": 0},
        "scheduler": {"type": "asha", "metric": "val_worst_group_acc", "mode": "max", "grace_period": 1},
        "max_concurrent": 2})
    out = tmp_path / "tpe"
    s = run_sweep(spec, out, quiet=True)
    recs = RunDir(out).records().values()
    assert s["finished"] == 4 and len(recs) == 4
    assert {r["status"] for r in recs} <= {"completed", "stopped"}
    # a trial that ran all its epochs is completed even when ASHA stopped it at max_t (= 3, the spec's epochs)
    assert all((r["status"] == "completed") == (r["epochs_done"] == 3) for r in recs)
    assert all(0.01 <= r["config"]["lr"] <= 0.2 for r in recs)
    again = run_sweep(spec, out, quiet=True)   # nothing left to sample
    assert again["finished"] == 4 and len(RunDir(out).records()) == 4
