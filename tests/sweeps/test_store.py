"""sweeps.store: atomic writes leave nothing half-written, merges keep each key once, checksums."""
import hashlib

import pyarrow as pa
import pytest

from sweeps import faults
from sweeps.store import DamagedRows, RunDir, atomic_write_bytes, atomic_write_table, merge_epochs, read_rows


def _epoch(e: int, acc: float) -> pa.Table:
    return pa.table({"trial_id": ["t"] * 2, "epoch": [e, e], "split": ["val", "val"], "group": ["all", "0"],
                     "acc": [acc, acc]})


def test_merge_replaces_an_epoch_instead_of_appending_it():
    old = pa.concat_tables([_epoch(0, 0.1), _epoch(1, 0.2)])
    merged = merge_epochs(old, [_epoch(1, 0.9), _epoch(2, 0.3)])
    assert merged.num_rows == 6
    assert sorted(zip(merged.column("epoch").to_pylist(), merged.column("acc").to_pylist())) == \
        [(0, 0.1), (0, 0.1), (1, 0.9), (1, 0.9), (2, 0.3), (2, 0.3)]
    assert merge_epochs(merged, [_epoch(2, 0.3)]).num_rows == 6   # merging again changes nothing


def test_merge_drops_duplicate_keys_already_in_a_file():
    doubled = pa.concat_tables([_epoch(0, 0.1), _epoch(0, 0.5)])   # what the old merge could leave behind
    merged = merge_epochs(None, [doubled])
    assert merged.num_rows == 2 and set(merged.column("acc").to_pylist()) == {0.5}


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "x.json"
    atomic_write_bytes(path, b"old")
    monkeypatch.setenv(faults.ENV, "manifest.tmp:raise")
    with pytest.raises(faults.InjectedFault):
        atomic_write_bytes(path, b"new", "manifest.tmp")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_atomic_write_table_returns_the_sha256_of_the_file(tmp_path):
    path = tmp_path / "t.parquet"
    sha = atomic_write_table(path, _epoch(0, 0.1))
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()


def test_unreadable_rows_are_named_and_leave_the_trial_unchanged(tmp_path):
    store = RunDir(tmp_path)
    good = store.write_epoch("t", 0, _epoch(0, 0.1).to_pylist(), {})
    bad = store.write_epoch("t", 1, _epoch(1, 0.1).to_pylist(), {})
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(DamagedRows, match="epoch-0001.parquet"):
        read_rows(bad)
    assert read_rows(good).num_rows == 2
    with pytest.raises(DamagedRows):
        store.compact("t")
    assert len(store.epoch_files("t")) == 2 and not store.merged_path("t").exists()   # nothing changed


def test_records_count_each_epochs_rows_once_and_a_rerun_epoch_replaces_its_count(tmp_path):
    store = RunDir(tmp_path)
    for e, n in [(0, 2), (1, 2), (2, 5)]:
        store.record_epoch("t", e, n)
    assert store.read_record("t")["rows_by_epoch"] == {"0": 2, "1": 2, "2": 5}
    store.record_epoch("t", 1, 3)     # resumed from epoch 1's checkpoint: epochs 1.. run again
    rec = store.read_record("t")
    assert rec["rows_by_epoch"] == {"0": 2, "1": 3} and rec["epochs_done"] == 2


def test_files_per_trial_lists_result_files_without_temporaries(tmp_path):
    store = RunDir(tmp_path)
    assert store.files_per_trial() == {}
    for e in range(3):
        store.write_epoch("a", e, _epoch(e, 0.1).to_pylist(), {})
    store.write_epoch("b", 0, _epoch(0, 0.1).to_pylist(), {})
    (tmp_path / "rows" / "b" / ".epoch-0001.parquet.1.ab.tmp").write_bytes(b"half")
    assert store.files_per_trial() == {"a": 3, "b": 1}


def _keys(store: RunDir, tid: str) -> list[tuple]:
    out = []
    for f in sorted(store.rows_dir(tid).glob("*.parquet")):
        out += [(r["epoch"], r["group"], r["acc"]) for r in read_rows(f).to_pylist()]
    return out


def test_a_running_trial_merges_its_epoch_files_every_roll_every_epochs(tmp_path):
    from sweeps.store import ROLL_EVERY

    store = RunDir(tmp_path)
    n = 2 * ROLL_EVERY + 5
    for e in range(n):
        held = store.write_epoch("t", e, _epoch(e, 0.1).to_pylist(), {})
        assert held.exists() and len(store.epoch_files("t")) < ROLL_EVERY
    assert len(store.epoch_files("t")) == 5 and store.merged_path("t").exists()
    keys = _keys(store, "t")
    assert len(keys) == len(set(keys)) == 2 * n                    # every row once, across the files
    store.write_epoch("t", 3, _epoch(3, 0.9).to_pylist(), {})      # a re-run epoch after its merge
    info = store.compact("t")                                      # as the driver does when it ends
    assert info["rows"] == 2 * n and info["epochs"] == list(range(n)) and not store.epoch_files("t")
    assert sorted(a for e, _, a in _keys(store, "t") if e == 3) == [0.9, 0.9]


def test_a_damaged_epoch_file_stops_the_roll_up_not_the_trial(tmp_path):
    from sweeps.store import ROLL_EVERY

    store = RunDir(tmp_path)
    bad = store.write_epoch("t", 0, _epoch(0, 0.1).to_pylist(), {})
    bad.write_bytes(bad.read_bytes()[:50])
    for e in range(1, ROLL_EVERY + 1):
        store.write_epoch("t", e, _epoch(e, 0.1).to_pylist(), {})
    assert len(store.epoch_files("t")) == ROLL_EVERY + 1 and not store.merged_path("t").exists()


def test_a_one_epoch_trial_keeps_its_file_as_the_merged_file(tmp_path):
    """Nothing to merge: the epoch file is renamed to trial.parquet (its bytes and checksum kept);
    an unreadable one is refused as a merge refuses it, and nothing moves."""
    store = RunDir(tmp_path)
    rows = [{"trial_id": "t", "epoch": 0, "split": "val", "group": g, "acc": 0.5} for g in ("all", "0")]
    part = store.write_epoch("t", 0, rows, {"attempt": 1})
    data = part.read_bytes()
    info = store.compact("t")
    merged = store.merged_path("t")
    assert info == {"rows": 2, "sha256": hashlib.sha256(data).hexdigest(), "epochs": [0]}
    assert merged.read_bytes() == data and store.epoch_files("t") == []
    assert store.compact("t") == info                                   # again: nothing changes
    store.write_epoch("u", 0, [{**r, "trial_id": "u"} for r in rows], {"attempt": 1}).write_bytes(b"PAR1 truncated")
    with pytest.raises(DamagedRows, match="epoch-0000.parquet"):
        store.compact("u")
    assert len(store.epoch_files("u")) == 1 and not store.merged_path("u").exists()
