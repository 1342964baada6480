"""Run directories on object storage (`--out s3://bucket/path`), against an S3-compatible server the
tests start (moto's server mode): rows, records, manifest and checkpoints through pyarrow's
filesystem layer, the lock by conditional writes, `verify`/`repair`, the analysis's local mirror,
and (slow) `ncsweep run`/`status`/`verify`/`analyze`/`resume` end to end through the CLI."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from sweeps import lock
from sweeps.finish import finish_trial
from sweeps.layout import Location, mirror
from sweeps.probe import StorageError, check_out
from sweeps.store import RunDir
from sweeps.verify import repair, verify

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "ncsweep-test"
DATA = {"n_train": 32, "n_val": 16, "n_test": 16, "image_size": 8}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """An S3-compatible server on localhost, with credentials and endpoint in the environment
    (as boto3 and pyarrow read them: Ray workers started from here inherit them)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)   # one line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    yield env
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _rows(epoch: int) -> list[dict]:
    return [{"trial_id": "t0", "epoch": epoch, "split": s, "group": "all", "acc": 0.5 + epoch / 10}
            for s in ("train", "val", "test")]


def test_rows_records_and_manifest_live_on_the_object_store(s3):
    uri = f"s3://{BUCKET}/runs/unit"
    store = RunDir(uri)
    assert store.remote and store.uri == uri and not store.path.is_relative_to(Path.cwd())
    store.write_manifest({"name": "unit", "digest": "d", "planned": ["t0"]})
    store.write_spec("unit", "d", {"name": "unit"})
    store.update_record("t0", status="running", config={"epochs": 2})
    for epoch in range(2):
        store.write_epoch("t0", epoch, _rows(epoch), {"attempt": 1})
        store.record_epoch("t0", epoch, 3)
    fs, root = pafs.FileSystem.from_uri(uri)
    names = sorted(i.path[len(root) + 1:] for i in fs.get_file_info(pafs.FileSelector(root, recursive=True))
                   if i.type == pafs.FileType.File)
    assert names == ["manifest.json", "rows/t0/epoch-0000.parquet", "rows/t0/epoch-0001.parquet", "spec.json",
                     "trials/t0.json"]
    assert store.read_manifest()["name"] == "unit" and store.files_per_trial() == {"t0": 2}
    store.update_record("t0", ran_to_end=True)
    assert finish_trial(store, "t0", {"epoch": 1, "epoch_rows": 3}, None) == "completed"
    rec = store.read_record("t0")
    assert rec["rows"] == 6 and rec["rows_sha256"] == store.sha256(store.merged_path("t0"))
    store.write_trials_table()
    assert store.epoch_files("t0") == [] and verify(uri) == []
    with fs.open_output_stream(f"{root}/rows/t0/trial.parquet") as f:   # damage the merged rows
        f.write(b"not parquet")
    assert [p["what"] for p in verify(uri)] == ["rows"]
    assert any("re-planned trial t0" in line for line in repair(uri))
    assert store.read_record("t0")["status"] == "pending" and not store.exists(store.rows_dir("t0"))


def test_the_lock_is_a_conditional_write_taken_over_only_when_stale(s3):
    uri = f"s3://{BUCKET}/runs/locked"
    with lock.RunLock(uri) as held:
        assert lock.read(uri)["token"] == held._mine["token"]
        with pytest.raises(lock.LockHeld, match="in use by another ncsweep driver"):
            lock.RunLock(uri).acquire()
        held.renew()                                   # If-Match on the ETag it wrote
        lock.lock_file(uri).replace({"token": "someone else", "host": "x"})   # replaced behind its back
        with pytest.raises(lock.LockHeld, match="no longer this driver's"):
            held.renew()
    assert lock.read(uri)["token"] == "someone else"   # not ours: left alone on release
    old = {"host": "a-dead-head", "pid": 1, "token": "old", "locked_at": time.time() - 600,
           "heartbeat": time.time() - 600, "lease_s": 60}
    f = lock.lock_file(uri)
    f.delete()
    assert f.create(old) and not lock.lock_file(uri).create(old)   # If-None-Match: the second create is refused
    with pytest.warns(RuntimeWarning, match="taking over the lock of a driver that is gone.*a-dead-head"):
        with lock.RunLock(uri) as took:
            assert took.previous["host"] == "a-dead-head"
    assert lock.read(uri) is None
    f.create({**old, "heartbeat": time.time()})        # a live foreign lock: unlock refuses without --force
    with pytest.raises(lock.LockHeld, match="looks alive"):
        lock.unlock(uri)
    assert lock.unlock(uri, force=True)["host"] == "a-dead-head" and lock.read(uri) is None


def test_checkpoints_and_the_tuning_base_cache_go_to_the_object_store(s3):
    import torch

    from nccore import checkpoint

    d = RunDir(f"s3://{BUCKET}/runs/ckpt").checkpoint_dir("t0")
    assert str(d).startswith("s3://")
    checkpoint.save(d, {"epoch": 3, "w": torch.arange(4.0)})
    state = checkpoint.load(d)
    assert state["epoch"] == 3 and torch.equal(state["w"], torch.arange(4.0))
    assert torch.equal(checkpoint.load_model_state(checkpoint.join(d, checkpoint.FILE))["w"], torch.arange(4.0))
    checkpoint.write_file(checkpoint.join(d, checkpoint.FILE), b"garbage")
    with pytest.raises(checkpoint.CorruptCheckpoint):
        checkpoint.load(d)
    checkpoint.set_aside(d)
    assert checkpoint.load(d) is None and checkpoint.read_file(checkpoint.join(d, "state.pt.corrupt")) == b"garbage"
    assert checkpoint.parent(d) == f"s3://{BUCKET}/runs/ckpt/checkpoints"


def test_the_endpoint_may_come_in_the_url_as_pyarrow_takes_it(s3, monkeypatch):
    """`s3://bucket/path?endpoint_override=HOST:PORT&scheme=http`: files, lock and checkpoints all use it."""
    import torch

    from nccore import checkpoint

    host = s3["AWS_ENDPOINT_URL"].split("://", 1)[1]
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    uri = f"s3://{BUCKET}/runs/query?endpoint_override={host}&scheme=http"
    store = RunDir(uri)
    store.write_manifest({"name": "q", "digest": "d"})
    assert RunDir(uri).read_manifest()["name"] == "q" and store.uri == uri
    with lock.RunLock(uri):
        assert lock.read(uri)["host"] == socket.gethostname()
    d = store.checkpoint_dir("t0")
    assert d.endswith(f"checkpoints/t0?endpoint_override={host}&scheme=http")
    checkpoint.save(d, {"w": torch.ones(2)})
    assert torch.equal(checkpoint.load(d)["w"], torch.ones(2))
    assert checkpoint.join(checkpoint.parent(d), "_bases", "x.pt").endswith(f"checkpoints/_bases/x.pt?endpoint_override={host}&scheme=http")


def test_an_object_store_out_is_checked_before_anything_is_written(s3):
    with pytest.raises(StorageError, match="S3's API"):
        check_out("gs://bucket/runs/x")
    with pytest.raises(StorageError, match="no-such-bucket|NoSuchBucket|does not exist|bucket"):
        check_out("s3://no-such-bucket/runs/x")
    check_out(f"s3://{BUCKET}/runs/fresh")   # a bucket that answers: accepted


def test_the_analysis_reads_a_local_mirror_that_follows_the_store(s3):
    uri = f"s3://{BUCKET}/runs/mirrored"
    store = RunDir(uri)
    with pytest.raises(FileNotFoundError, match="not an ncsweep run directory"):
        mirror(uri)
    store.write_manifest({"name": "mirrored", "digest": "d"})
    store.update_record("t0", status="running")
    store.write_epoch("t0", 0, _rows(0), {})
    local = mirror(uri)
    assert (local / "rows/t0/epoch-0000.parquet").is_file() and json.loads((local / "manifest.json").read_text())
    store.update_record("t0", ran_to_end=True, config={"epochs": 1})
    finish_trial(store, "t0", {"epoch": 0, "epoch_rows": 3}, None)   # epoch file merged away on the store
    local = mirror(uri)
    assert sorted(p.name for p in (local / "rows/t0").iterdir()) == ["trial.parquet"]
    assert Location(uri).record("t0")["status"] == "completed"


@pytest.mark.slow
def test_ncsweep_runs_resumes_checks_and_analyses_a_sweep_on_the_object_store(s3, tmp_path):
    """The CLI end to end, each command its own process (as a user runs them), Ray workers writing
    to the store through the same endpoint."""
    spec = tmp_path / "s3.yaml"
    spec.write_text(json.dumps({"name": "s3sweep", "dataset": {"name": "biased_shapes", "options": DATA},
                                "base": {"epochs": 2, "width": 0.0625, "batch_size": 16, "arch": "vgg11"},
                                "space": {"seed": {"grid": [0, 1, 2]}}, "pack": 2, "max_concurrent": 2}))
    uri = f"s3://{BUCKET}/runs/e2e"
    env = {**os.environ, **s3, "PYTHONPATH": str(ROOT)}

    def ncsweep(*args, code=0):
        r = subprocess.run([sys.executable, "-m", "sweeps.cli", *args], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=600)
        assert r.returncode == code, r.stdout + r.stderr
        return r.stdout + r.stderr

    ncsweep("run", str(spec), "--out", uri)
    store = RunDir(uri)
    recs = store.records()
    assert len(recs) == 3 and {r["status"] for r in recs.values()} == {"completed"}
    assert all(store.exists(store.checkpoint_file(t)) for t in recs)      # checkpoints on the store too
    assert not Path(tmp_path / "s3:").exists()                             # never a local folder named like the URL
    assert "3/3 trials finished" in ncsweep("status", uri)
    assert "ok" in ncsweep("verify", uri)
    before = {t: r["attempts"] for t, r in recs.items()}
    ncsweep("resume", uri)                                                 # nothing left: nothing re-run
    assert {t: r["attempts"] for t, r in store.records().items()} == before
    out = ncsweep("analyze", uri)
    assert f"{uri}/analysis" in out and store.loc.exists("analysis/trials.csv")
    with lock.RunLock(uri):                                                # a live driver holds it: refused
        assert "in use by another ncsweep driver" in ncsweep("resume", uri, code=2)
