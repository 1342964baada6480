"""A run directory written before ncsweep merged finished trials' rows (one file per epoch, no
checksum in the record): `verify` says so, `repair` merges each trial into one file and records its
checksum, and the analysis reads the same rows afterwards from one file per trial."""
import pandas as pd

from sweeps.store import RunDir
from sweeps.verify import repair, verify


def _legacy_run(path, trials=3, epochs=4) -> RunDir:
    store = RunDir(path)
    store.write_manifest({"name": "old", "digest": "d", "spec": {"name": "old"}, "planned": None})
    store.write_spec("old", "d", {"name": "old"})
    for t in range(trials):
        tid = f"t{t}"
        for e in range(epochs):
            rows = [{"trial_id": tid, "epoch": e, "split": s, "group": "all", "acc": t + e / 10}
                    for s in ("train", "test")]
            store.write_epoch(tid, e, rows, {"attempt": 1})
        store.update_record(tid, status="completed", epochs_done=epochs, config={"epochs": epochs, "lr": 0.1 * (t + 1)})
    store.write_trials_table()
    return store


def test_repair_merges_finished_trials_left_as_epoch_files(tmp_path):
    from analysis.load import load

    store = _legacy_run(tmp_path / "run")
    before = load([store.path]).sort_values(["trial_id", "epoch", "split"]).reset_index(drop=True)
    problems = verify(store.path)
    assert [p["what"] for p in problems] == ["unmerged"] and "3 finished trials" in problems[0]["detail"] \
        and "12 epoch files" in problems[0]["detail"]
    done = repair(store.path)
    assert sum(line.startswith("merged 4 epoch files of finished trial") for line in done) == 3
    assert verify(store.path) == []
    assert store.files_per_trial() == {"t0": 1, "t1": 1, "t2": 1}
    rec = store.read_record("t1")
    assert rec["rows"] == 8 and rec["rows_sha256"] == store.sha256(store.merged_path("t1"))
    after = load([store.path]).sort_values(["trial_id", "epoch", "split"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(before[["trial_id", "epoch", "split", "acc"]], after[["trial_id", "epoch", "split", "acc"]])
    assert repair(store.path) == ["rebuilt trials.parquet"]   # nothing left to merge
