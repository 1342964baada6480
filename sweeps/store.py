"""The run directory: results as Parquet (exactly once), trial records, and the manifest.

    RUN_DIR/
      manifest.json            the spec, its digest, the planned trials (atomic writes)
      spec.json                a second copy of the spec, so `ncsweep repair` can rebuild the manifest
      lock.json                the driver holding the directory (host, pid, start, heartbeat) — sweeps.lock
      ray_procs.json           the Ray processes that driver started (pid, start) — sweeps.procs
      rows/<trial_id>/epoch-0003.parquet   one file per (trial, epoch), atomically replaced;
      rows/<trial_id>/trial.parquet        the trial's epochs merged into one file: every ROLL_EVERY
                                           epochs while it runs, and when it ends
      trials/<trial_id>.json   one record per trial: config, status, attempts, error, times
      trials.parquet           the trials table, rebuilt from the records
      checkpoints/<trial_id>/state.pt      nccore trial checkpoints (resume)
      _tune/                   Ray Tune's experiment directory: a cache, never read back
      ncsweep.log              the driver's and Ray's log lines

Exactly once: a row's file name is a function of (trial_id, epoch), and it is written to a
temporary name (leading '.', which pyarrow and our readers skip) and renamed over the old file.
A re-run epoch — after a retry, a crash or a resume — replaces its file whole, so each
(trial_id, epoch, split, group) appears once, and a reader never sees half a file.
Compaction is idempotent (an epoch file replaces that epoch's rows in the merged file), and a
finished trial's record holds the merged file's row count and SHA-256, which `sweeps.verify`
checks. Every write step calls `sweeps.faults.fault(step)`, the hook the fault-injection tests use.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nccore.catalogue import SCHEMA_VERSION, row_schema   # row column types are declared in the catalogue

from .faults import fault
from .layout import KEY, MANIFEST, MERGED, ROWS, TRIALS, epoch_file

INT_COLUMNS = {f.name for f in row_schema() if pa.types.is_integer(f.type)}


class DamagedRows(ValueError):
    """A trial's rows file that cannot be read (truncated, overwritten)."""


def atomic_write_bytes(path: Path, data: bytes, step: str | None = None) -> None:
    """Write to a temporary name (leading '.', skipped by every reader), flush it to disk, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if step:
            fault(step)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj, step: str | None = None) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True, default=str).encode(), step)


# An epoch file holds a few rows: dictionary pages and min/max statistics only add footer and page
# decoding to every read (a reader of 10^5 such files spends ~35% less CPU without them).
EPOCH_FILE_OPTIONS = {"use_dictionary": False, "write_statistics": False}
ROLL_EVERY = 10   # epoch files after which a running trial merges them into its trial.parquet


def atomic_write_table(path: Path, table: pa.Table, step: str | None = None, **options) -> str:
    """A Parquet file written to a temporary name and renamed into place (`options`: those of
    `pyarrow.parquet.write_table`). Returns its SHA-256."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)
    data = sink.getvalue().to_pybytes()
    atomic_write_bytes(path, data, step)
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_rows(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except Exception as e:   # truncated, not Parquet, permission
        raise DamagedRows(f"{path}: unreadable rows file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e


def merge_epochs(old: pa.Table | None, parts: list[pa.Table]) -> pa.Table:
    """A trial's rows with each (trial_id, epoch, split, group) once: an epoch file's rows replace
    that epoch's rows in `old` (so a merge repeated after a crash changes nothing), and within
    what is left the last copy of a key wins."""
    tables = list(parts)
    if old is not None and old.num_rows:
        redone = pa.array(sorted({e for t in parts for e in t.column("epoch").to_pylist()}), pa.int64())
        tables.insert(0, old.filter(pc.invert(pc.is_in(old.column("epoch"), value_set=redone))))
    table = pa.concat_tables(tables, promote_options="default")
    keys = [k for k in KEY if k in table.column_names]
    idx = table.append_column("_i", pa.array(range(table.num_rows), pa.int64()))
    last = idx.group_by(keys, use_threads=False).aggregate([("_i", "max")]).column("_i_max")
    if len(last) < table.num_rows:
        table = table.take(pa.array(sorted(last.to_pylist()), pa.int64()))
    return table


def _column(name: str, values: list) -> pa.Array:
    if name in INT_COLUMNS:
        return pa.array([None if v is None or v != v else int(v) for v in values], pa.int64())   # v != v: NaN
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
        """Write one epoch's rows (the worker, before the epoch's checkpoint); once the trial has
        ROLL_EVERY epoch files, merge them into its trial.parquet (`compact`), so that a sweep in
        progress holds at most ROLL_EVERY + 1 result files per running trial. Returns the file
        that holds the rows."""
        table = rows_table(rows, {**extra, "schema_version": SCHEMA_VERSION})
        path = self.path / ROWS / trial_id / epoch_file(epoch)
        atomic_write_table(path, table, "epoch.tmp", **EPOCH_FILE_OPTIONS)
        fault("epoch.renamed")
        if len(self.epoch_files(trial_id)) >= ROLL_EVERY:
            try:
                self.compact(trial_id, driver=False)
                return self.merged_path(trial_id)
            except DamagedRows:
                pass   # left as they are: the driver's compaction when the trial ends names the file
        return path

    def row_files(self) -> list[Path]:
        return sorted((self.path / "rows").glob("*/*.parquet"))

    def files_per_trial(self) -> dict[str, int]:
        """{trial_id: result files in rows/<trial_id>/} from directory listings only (os.scandir:
        10^5 files in well under a second; no file is opened)."""
        out: dict[str, int] = {}
        try:
            trials = os.scandir(self.path / "rows")
        except FileNotFoundError:
            return out
        with trials:
            for t in trials:
                if t.is_dir():
                    with os.scandir(t.path) as files:
                        out[t.name] = sum(1 for f in files if f.name.endswith(".parquet") and not f.name.startswith("."))
        return out

    def rows_dir(self, trial_id: str) -> Path:
        return self.path / ROWS / trial_id

    def merged_path(self, trial_id: str) -> Path:
        return self.rows_dir(trial_id) / MERGED

    def epoch_files(self, trial_id: str) -> list[Path]:
        return sorted(self.rows_dir(trial_id).glob("epoch-*.parquet"))

    def compact(self, trial_id: str, driver: bool = True) -> dict:
        """Merge a trial's epoch files into rows/<trial_id>/trial.parquet, then delete them.
        Returns {"rows", "sha256", "epochs"} of the merged file (zeros if the trial has no rows).

        Many small files make a large sweep slow to read; one file per finished trial does not.
        Safe to repeat after a crash at any point: the merge keeps each key once (`merge_epochs`).
        A reader that lists the directory between the rename and the deletes sees each row twice
        with the same attempt; `analysis.load` keeps one of each (trial_id, epoch, split, group).
        Raises `DamagedRows` naming an unreadable file (then nothing is changed). driver: False for
        a running trial's own roll-up (`write_epoch`), which passes no driver fault points."""
        merged, parts = self.merged_path(trial_id), self.epoch_files(trial_id)
        old = read_rows(merged) if merged.exists() else None
        if not parts:
            if old is None:
                return {"rows": 0, "sha256": None, "epochs": []}
            return {"rows": old.num_rows, "sha256": file_sha256(merged),
                    "epochs": sorted(set(old.column("epoch").to_pylist()))}
        table = merge_epochs(old, [read_rows(p) for p in parts])
        table = table.replace_schema_metadata({b"ncsweep_schema_version": str(SCHEMA_VERSION).encode()})
        sha = atomic_write_table(merged, table)
        if driver:
            fault("compact.merged")
        for i, p in enumerate(parts):
            p.unlink(missing_ok=True)
            if i == 0 and driver:
                fault("compact.partial")
        return {"rows": table.num_rows, "sha256": sha, "epochs": sorted(set(table.column("epoch").to_pylist()))}

    # ------------------------------------------------------------------ trial records
    def record_path(self, trial_id: str) -> Path:
        return self.path / TRIALS / f"{trial_id}.json"

    def read_record(self, trial_id: str) -> dict | None:
        p = self.record_path(trial_id)
        try:
            return json.loads(p.read_text()) if p.exists() else None
        except json.JSONDecodeError:
            return None  # never half-written (atomic), but a hand-edited file should not kill a resume

    def update_record(self, trial_id: str, **fields) -> dict:
        rec = self.read_record(trial_id) or {"trial_id": trial_id, "attempts": 0, "status": "pending"}
        rec.update(fields, updated_at=time.time())
        atomic_write_json(self.record_path(trial_id), rec, "record.tmp")
        return rec

    def record_epoch(self, trial_id: str, epoch: int, n_rows: int, **fields) -> dict:
        """After an epoch's rows are written: epochs_done and the epoch's row count in the record
        (`rows_by_epoch`, so `ncsweep status` counts rows without opening 10^5 files)."""
        rec = self.read_record(trial_id) or {}
        counts = {k: v for k, v in (rec.get("rows_by_epoch") or {}).items() if int(k) < epoch}
        counts[str(epoch)] = int(n_rows)
        return self.update_record(trial_id, epochs_done=epoch + 1, rows_by_epoch=counts, **fields)

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
        atomic_write_table(path, table, "trials_table.tmp")
        return path

    # ------------------------------------------------------------------ manifest
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def read_manifest(self) -> dict | None:
        if not self.manifest_path.exists():
            return None
        try:
            return json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{self.manifest_path}: unreadable manifest ({e}); rebuild it from the stored "
                             f"spec and trial records with `ncsweep repair {self.path}`") from e

    def write_manifest(self, manifest: dict) -> None:
        atomic_write_json(self.manifest_path, {**manifest, "schema_version": SCHEMA_VERSION}, "manifest.tmp")

    @property
    def spec_path(self) -> Path:
        return self.path / "spec.json"

    def write_spec(self, name: str, digest: str, raw: dict, resources: dict | None = None) -> None:
        """The spec once more, apart from the manifest: what `ncsweep repair` rebuilds it from."""
        atomic_write_json(self.spec_path, {"name": name, "digest": digest, "spec": raw, "resources": resources})

    def read_spec(self) -> dict | None:
        try:
            return json.loads(self.spec_path.read_text()) if self.spec_path.exists() else None
        except json.JSONDecodeError:
            return None

    def checkpoint_dir(self, trial_id: str) -> Path:
        return self.path / "checkpoints" / trial_id
