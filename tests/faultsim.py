"""A sweep's write path without Ray or training, for the fault-injection tests (tests/test_faults.py):
the same `RunDir` / `finish_trial` calls the runner makes, in the runner's order, with synthetic rows.
Kept free of torch so a subprocess that runs it (and is SIGKILLed part-way) starts fast."""
from pathlib import Path

import pyarrow.parquet as pq

from sweeps import lock
from sweeps.plan import planned_configs
from sweeps.spec import parse_spec
from sweeps.store import RunDir
from sweeps.finish import finish_trial
from sweeps.verify import build_manifest, remove_temp_files, replan_damaged

EPOCHS, TRIALS = 3, ("t0", "t1")
SPLITS, GROUPS = ("train", "val", "test"), ("all", "0", "1")
PLANNED = {(t, e, s, g) for t in TRIALS for e in range(EPOCHS) for s in SPLITS for g in GROUPS}
SPEC = {"name": "sim", "dataset": {"name": "biased_shapes", "options": {"n_train": 64, "image_size": 8}},
        "base": {"epochs": EPOCHS, "width": 0.0625}, "space": {"seed": {"grid": [0, 1]}}, "search": {"algorithm": "grid"}}


def keys(run_dir) -> list[tuple]:
    """Every (trial_id, epoch, split, group) in the run directory's row files, duplicates kept."""
    out = []
    for f in sorted(Path(run_dir).glob("rows/*/*.parquet")):
        t = pq.read_table(f, columns=["trial_id", "epoch", "split", "group"]).to_pylist()
        out += [(r["trial_id"], r["epoch"], r["split"], r["group"]) for r in t]
    return out


def assert_exactly_once(run_dir, planned=PLANNED):
    k = keys(run_dir)
    assert len(k) == len(set(k)), f"{len(k) - len(set(k))} duplicated keys"
    assert set(k) == planned


def worker(store: RunDir, tid: str) -> None:
    """What a trial does in its Ray worker: from its last checkpoint (here: epochs_done), each epoch's
    rows, then the record (standing in for the checkpoint written after the rows)."""
    rec = store.read_record(tid) or {}
    store.update_record(tid, status="running", attempts=rec.get("attempts", 0) + 1, config={"epochs": EPOCHS})
    for e in range(int(rec.get("epochs_done") or 0), EPOCHS):
        rows = [{"trial_id": tid, "epoch": e, "split": s, "group": g, "status": "ok", "acc": 0.5}
                for s in SPLITS for g in GROUPS]
        store.write_epoch(tid, e, rows, {"attempt": 1})
        store.record_epoch(tid, e, len(rows), final={"epoch": e})
    store.update_record(tid, ran_to_end=True)


def sweep(run_dir) -> None:
    """A whole run with the runner's write steps in the runner's order: lock, spec, manifest,
    records and rows (workers), finishing (driver: visibility, compaction, record), trials table."""
    store = RunDir(run_dir)
    spec = parse_spec(SPEC)
    with lock.RunLock(store.path):
        store.write_spec(spec.name, spec.digest, spec.raw)
        store.write_manifest(build_manifest(spec, planned_configs(spec), {"cpu": 1, "gpu": 0}, 0.0))
        remove_temp_files(store)
        replan_damaged(store)
        for tid in TRIALS:
            if (store.read_record(tid) or {}).get("status") != "completed":
                worker(store, tid)
                finish_trial(store, tid, {"epoch": EPOCHS - 1, "epoch_rows": 9, "hostname": "h", "node_id": "n"}, None)
        store.write_trials_table()
