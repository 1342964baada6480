"""The storage check before any trial starts (sweeps/probe.py), without Ray: each node's side
(`node_probe`) run here as if on three nodes, the driver's side (`read_probes`) naming the failing
ones; and `--address ray://` refused before anything is written. The same check on a real
three-node cluster with one failing node is in tests/test_multinode.py."""
from pathlib import Path

import pytest

from sweeps import faults
from sweeps.cli import main
from sweeps.probe import StorageError, check_address, node_probe, read_probes

ROOT = Path(__file__).resolve().parents[1]


def test_every_node_writing_shared_storage_passes(tmp_path):
    answers = [node_probe(str(tmp_path), "tok", n) for n in ("node-1", "node-2")]
    assert [a["error"] for a in answers] == [None, None]
    assert read_probes(tmp_path, "tok", answers) == []
    assert sorted(p.name for p in (tmp_path / ".probe-tok").iterdir()) == ["node-1.json", "node-2.json"]


def test_a_node_that_cannot_write_is_named_with_the_fix(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    bad = node_probe(str(blocker / "run"), "tok", "node-3")     # --out under a file: mkdir fails there
    assert bad["error"].startswith(("NotADirectoryError", "FileExistsError"))
    problems = read_probes(blocker / "run", "tok", [bad])
    assert len(problems) == 1
    assert problems[0].startswith(f"node {bad['host']} (Ray node node-3, uid {bad['uid']}) cannot write --out")
    assert "mount the same shared file system" in problems[0]


def test_a_node_writing_its_own_local_disk_is_named(tmp_path):
    """The node wrote 'RUN_DIR' on its own disk (here: another folder standing in for it), so the
    driver does not find the file at the same path."""
    shared, local = tmp_path / "shared", tmp_path / "node-local"
    answers = [node_probe(str(shared), "tok", "node-1"), node_probe(str(local), "tok", "node-2")]
    problems = read_probes(shared, "tok", answers)
    assert len(problems) == 1 and "(Ray node node-2," in problems[0]
    assert "cannot read it there: that path is not the same storage on both" in problems[0]


def test_an_injected_failure_and_a_silent_node_are_both_reported(tmp_path, monkeypatch):
    monkeypatch.setenv(faults.ENV, "probe.write:raise")
    bad = node_probe(str(tmp_path), "tok", "node-1")
    assert bad["error"] == "InjectedFault: injected fault at step 'probe.write'"
    problems = read_probes(tmp_path, "tok", [bad], missing=[{"node_id": "node-9", "host": "gpu-9"}])
    assert len(problems) == 2 and "did not answer the storage check" in problems[1] and "gpu-9" in problems[1]


def test_ray_client_addresses_are_refused_with_the_ways_that_work(tmp_path, capsys):
    with pytest.raises(StorageError, match=r"ncsweep submit SPEC --address http://head:8265"):
        check_address("ray://head:10001", tmp_path)
    check_address("auto", tmp_path)
    check_address("10.0.0.1:6379", tmp_path)
    out = tmp_path / "run"
    rc = main(["run", str(ROOT / "sweeps/specs/demo.yaml"), "--out", str(out), "--address", "ray://head:10001"])
    err = capsys.readouterr().err
    assert rc == 2 and "--address auto` in a shell on a cluster node" in err
    assert not out.exists()      # refused before the run directory, its lock or Ray


@pytest.mark.parametrize("cmd", [["run", str(ROOT / "sweeps/specs/demo.yaml"), "--out"], ["resume"]])
def test_an_unreachable_object_store_is_an_error_naming_the_fix_never_a_local_folder(tmp_path, monkeypatch, capsys, cmd):
    """(A reachable one runs the sweep there: tests/sweeps/test_s3.py.)"""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")   # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    rc = main([*cmd, "s3://bucket/runs/demo"])
    err = capsys.readouterr().err
    assert rc == 2 and "s3://bucket/runs/demo" in err and "AWS_ENDPOINT_URL" in err, err
    assert not (tmp_path / "s3:").exists()
