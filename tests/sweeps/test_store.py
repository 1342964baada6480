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


def test_unreadable_rows_are_named_and_skipped_by_row_count(tmp_path):
    store = RunDir(tmp_path)
    good = store.write_epoch("t", 0, _epoch(0, 0.1).to_pylist(), {})
    bad = store.write_epoch("t", 1, _epoch(1, 0.1).to_pylist(), {})
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(DamagedRows, match="epoch-0001.parquet"):
        read_rows(bad)
    assert store.row_count() == 2 and read_rows(good).num_rows == 2
    with pytest.raises(DamagedRows):
        store.compact("t")
    assert len(store.epoch_files("t")) == 2 and not store.merged_path("t").exists()   # nothing changed
