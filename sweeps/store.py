"""The run directory: results as Parquet (exactly once), trial records, and the manifest.

    RUN_DIR/
      manifest.json            the spec, its digest, the planned trials (atomic writes)
      rows/<trial_id>/epoch-0003.parquet   one file per (trial, epoch), atomically replaced;
      rows/<trial_id>/trial.parquet        a finished trial's epochs merged into one file
      trials/<trial_id>.json   one record per trial: config, status, attempts, error, times
      trials.parquet           the trials table, rebuilt from the records
      checkpoints/<trial_id>/state.pt      nccore trial checkpoints (resume)
      _tune/                   Ray Tune's experiment directory: a cache, never read back
      ncsweep.log              the driver's and Ray's log lines

Exactly once: a row's file name is a function of (trial_id, epoch), and it is written to a
temporary name (leading '.', which pyarrow and our readers skip) and renamed over the old file.
A re-run epoch — after a retry, a crash or a resume — replaces its file whole, so each
(trial_id, epoch, split, group) appears once, and a reader never sees half a file.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 1
INT_COLUMNS = {"epoch", "seed", "epochs", "batch_size", "n", "attempt", "metrics_train_samples", "schema_version"}
TERMINAL = {"done", "diverged", "failed", "oom", "stopped"}


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True, default=str).encode())


def atomic_write_table(path: Path, table: pa.Table) -> None:
    """A Parquet file written to a temporary name and renamed into place."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def _column(name: str, values: list) -> pa.Array:
    if name in INT_COLUMNS:
        return pa.array([None if v is None else int(v) for v in values], pa.int64())
    if all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    if all(v is None or isinstance(v, bool) for v in values):
        return pa.array(values, pa.bool_())
    return pa.array([None if v is None else str(v) for v in values], pa.string())


def rows_table(rows: list[dict], extra: dict) -> pa.Table:
    """Rows with stable column types: ints for counters, float64 for every other number,
    strings for names (so files written by different trials concatenate cleanly)."""
    rows = [{**r, **extra} for r in rows]
    names = list(dict.fromkeys(k for r in rows for k in r))
    return pa.table({k: _column(k, [r.get(k) for r in rows]) for k in names},
                    metadata={b"ncsweep_schema_version": str(SCHEMA_VERSION).encode()})


class RunDir:
    def __init__(self, path):
        self.path = Path(path).resolve()

    # ------------------------------------------------------------------ results
    def write_epoch(self, trial_id: str, epoch: int, rows: list[dict], extra: dict) -> Path:
        table = rows_table(rows, {**extra, "schema_version": SCHEMA_VERSION})
        path = self.path / "rows" / trial_id / f"epoch-{epoch:04d}.parquet"
        atomic_write_table(path, table)
        return path

    def row_files(self) -> list[Path]:
        return sorted((self.path / "rows").glob("*/*.parquet"))

    def compact(self, trial_id: str) -> Path | None:
        """Merge a finished trial's epoch files into rows/<trial_id>/trial.parquet, then delete them.

        Many small files make a large sweep slow to read; one file per finished trial does not.
        A reader that lists the directory between the rename and the deletes sees each row twice
        with the same attempt; `analysis.load` keeps one of each (trial_id, epoch, split, group)."""
        d = self.path / "rows" / trial_id
        parts = sorted(d.glob("epoch-*.parquet"))
        if not parts:
            return None
        old = d / "trial.parquet"
        tables = ([pq.read_table(old)] if old.exists() else []) + [pq.read_table(p) for p in parts]
        table = pa.concat_tables(tables, promote_options="default")
        atomic_write_table(old, table.replace_schema_metadata({b"ncsweep_schema_version": str(SCHEMA_VERSION).encode()}))
        for p in parts:
            p.unlink()
        return old

    # ------------------------------------------------------------------ trial records
    def record_path(self, trial_id: str) -> Path:
        return self.path / "trials" / f"{trial_id}.json"

    def read_record(self, trial_id: str) -> dict | None:
        p = self.record_path(trial_id)
        try:
            return json.loads(p.read_text()) if p.exists() else None
        except json.JSONDecodeError:
            return None  # never half-written (atomic), but a hand-edited file should not kill a resume

    def update_record(self, trial_id: str, **fields) -> dict:
        rec = self.read_record(trial_id) or {"trial_id": trial_id, "attempts": 0, "status": "pending"}
        rec.update(fields, updated_at=time.time())
        atomic_write_json(self.record_path(trial_id), rec)
        return rec

    def records(self) -> dict[str, dict]:
        out = {}
        for p in sorted((self.path / "trials").glob("*.json")):
            rec = self.read_record(p.stem)
            if rec is not None:
                out[p.stem] = rec
        return out

    def write_trials_table(self) -> Path:
        recs = list(self.records().values())
        flat = [{**{k: v for k, v in r.items() if k != "config"},
                 **{f"cfg_{k}": (json.dumps(v) if isinstance(v, (dict, list)) else v)
                    for k, v in (r.get("config") or {}).items()}} for r in recs]
        path = self.path / "trials.parquet"
        names = list(dict.fromkeys(k for r in flat for k in r))
        table = pa.table({k: _column(k, [r.get(k) for r in flat]) for k in names}) if flat else pa.table({})
        atomic_write_table(path, table)
        return path

    # ------------------------------------------------------------------ manifest
    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def read_manifest(self) -> dict | None:
        if not self.manifest_path.exists():
            return None
        try:
            return json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{self.manifest_path}: unreadable manifest ({e}); it is written atomically, "
                             f"so the file was changed by hand — restore it or start a new --out") from e

    def write_manifest(self, manifest: dict) -> None:
        atomic_write_json(self.manifest_path, {**manifest, "schema_version": SCHEMA_VERSION})

    def checkpoint_dir(self, trial_id: str) -> Path:
        return self.path / "checkpoints" / trial_id
