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
import posixpath
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from nccore.catalogue import SCHEMA_VERSION, row_schema   # row column types are declared in the catalogue

from .faults import fault
from .layout import (CHECKPOINT_FILE, CHECKPOINTS, KEY, MANIFEST, MERGED, ROWS, SPEC, TRIALS, TRIALS_TABLE, Location,
                     epoch_file, epoch_of, is_epoch_file, record_name, scratch_dir)

INT_COLUMNS = {f.name for f in row_schema() if pa.types.is_integer(f.type)}


class DamagedRows(ValueError):
    """A trial's rows file that cannot be read (truncated, overwritten)."""


def atomic_write_bytes(path: Path, data: bytes, step: str | None = None) -> None:
    """Write a local file whole: a temporary name (leading '.', skipped by every reader), fsynced,
    renamed (`sweeps.layout.Location.write_bytes`); `step` is the fault hook before the rename."""
    Location(Path(path).parent).write_bytes(Path(path).name, data, (lambda: fault(step)) if step else None)


def json_bytes(obj) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True, default=str).encode()


# An epoch file holds a few rows: dictionary pages and min/max statistics only add footer and page
# decoding to every read (a reader of 10^5 such files spends ~35% less CPU without them).
EPOCH_FILE_OPTIONS = {"use_dictionary": False, "write_statistics": False}
ROLL_EVERY = 10   # epoch files after which a running trial merges them into its trial.parquet


def atomic_write_table(path: Path, table: pa.Table, step: str | None = None, **options) -> str:
    """A Parquet file written to a temporary name and renamed into place (`options`: those of
    `pyarrow.parquet.write_table`). Returns its SHA-256."""
    data = table_bytes(table, **options)
    atomic_write_bytes(path, data, step)
    return hashlib.sha256(data).hexdigest()


def table_bytes(table: pa.Table, **options) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)
    return sink.getvalue().to_pybytes()


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
    """A run directory, local or on an object store (`sweeps.layout.Location`). Its file paths
    (`merged_path`, `epoch_files`, …) are `Path`s for a local directory and paths on `fs` for an
    object store; read them through this class (`exists`, `read_table`, `sha256`, `delete`).
    `path` is always a local directory: the run directory itself, or for an object store this
    machine's scratch directory for node-local files (`scratch_dir`); `uri` is what to show users."""

    def __init__(self, where):
        self.loc = Location(where)
        self.remote, self.uri, self.fs = self.loc.remote, self.loc.uri, self.loc.fs
        self.path = scratch_dir(self.uri) if self.remote else Path(self.loc.root)

    def _at(self, name: str):
        full = self.loc.full(name)
        return full if self.remote else Path(full)

    def rel(self, path) -> str:
        """`path` relative to the run directory, for messages."""
        return posixpath.relpath(str(path), self.loc.root)

    def exists(self, path) -> bool:
        return self.fs.get_file_info(str(path)).type != pafs.FileType.NotFound

    def delete(self, path) -> None:
        try:
            self.fs.delete_file(str(path))
        except FileNotFoundError:
            pass

    def delete_tree(self, path) -> None:
        try:
            self.fs.delete_dir(str(path))
        except FileNotFoundError:
            pass

    def read_table(self, path, columns=None) -> pa.Table:
        return pq.read_table(str(path), columns=columns, filesystem=self.fs)

    def read_metadata(self, path):
        with self.fs.open_input_file(str(path)) as f:
            return pq.read_metadata(f)

    def sha256(self, path) -> str:
        h = hashlib.sha256()
        with self.fs.open_input_stream(str(path)) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def write_json(self, name: str, obj, step: str | None = None) -> None:
        """A JSON file of the run directory, written whole (`Location.write_bytes`)."""
        self.loc.write_bytes(name, json_bytes(obj), (lambda: fault(step)) if step else None)

    def _write_table(self, name: str, table: pa.Table, step: str | None = None, **options) -> str:
        data = table_bytes(table, **options)
        self.loc.write_bytes(name, data, (lambda: fault(step)) if step else None)
        return hashlib.sha256(data).hexdigest()

    # ------------------------------------------------------------------ results
    def write_epoch(self, trial_id: str, epoch: int, rows: list[dict], extra: dict):
        """Write one epoch's rows (the worker, before the epoch's checkpoint); once the trial has
        ROLL_EVERY epoch files, merge them into its trial.parquet (`compact`), so that a sweep in
        progress holds at most ROLL_EVERY + 1 result files per running trial. Returns the file
        that holds the rows."""
        table = rows_table(rows, {**extra, "schema_version": SCHEMA_VERSION})
        name = self._epoch_name(trial_id, epoch)
        self._write_table(name, table, "epoch.tmp", **EPOCH_FILE_OPTIONS)
        fault("epoch.renamed")
        if len(self.epoch_files(trial_id)) >= ROLL_EVERY:
            try:
                self.compact(trial_id, driver=False)
                return self.merged_path(trial_id)
            except DamagedRows:
                pass   # left as they are: the driver's compaction when the trial ends names the file
        return self._at(name)

    def row_files(self) -> list:
        return [self._at(f"{ROWS}/{t}/{f}") for t in self.loc.listdir(ROWS)
                for f in self.loc.listdir(f"{ROWS}/{t}") if f.endswith(".parquet")]

    def files_per_trial(self) -> dict[str, int]:
        """{trial_id: result files in rows/<trial_id>/} from directory listings only (locally
        os.scandir: 10^5 files in well under a second; no file is opened)."""
        out: dict[str, int] = {}
        if self.remote:
            for info in self.fs.get_file_info(pafs.FileSelector(self.loc.full(ROWS), recursive=True,
                                                                 allow_not_found=True)):
                trial, _, name = posixpath.relpath(info.path, self.loc.full(ROWS)).partition("/")
                if name.endswith(".parquet") and not name.startswith(".") and "/" not in name:
                    out[trial] = out.get(trial, 0) + 1
            return out
        try:
            trials = os.scandir(self.path / ROWS)
        except FileNotFoundError:
            return out
        with trials:
            for t in trials:
                if t.is_dir():
                    with os.scandir(t.path) as files:
                        out[t.name] = sum(1 for f in files if f.name.endswith(".parquet") and not f.name.startswith("."))
        return out

    def rows_dir(self, trial_id: str):
        return self._at(f"{ROWS}/{trial_id}")

    def merged_path(self, trial_id: str):
        return self._at(f"{ROWS}/{trial_id}/{MERGED}")

    def _epoch_name(self, trial_id: str, epoch: int) -> str:
        return f"{ROWS}/{trial_id}/{epoch_file(epoch)}"

    def epoch_path(self, trial_id: str, epoch: int):
        """One epoch's rows file (it may not exist: merged, or not written yet)."""
        return self._at(self._epoch_name(trial_id, epoch))

    def epoch_files(self, trial_id: str) -> list:
        return [self._at(f"{ROWS}/{trial_id}/{f}") for f in self.loc.listdir(f"{ROWS}/{trial_id}") if is_epoch_file(f)]

    def read_rows(self, path) -> pa.Table:
        try:
            return self.read_table(path)
        except Exception as e:   # truncated, not Parquet, permission
            raise DamagedRows(f"{path}: unreadable rows file ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from e

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
        old = self.read_rows(merged) if self.exists(merged) else None
        if not parts:
            if old is None:
                return {"rows": 0, "sha256": None, "epochs": []}
            return {"rows": old.num_rows, "sha256": self.sha256(merged),
                    "epochs": sorted(set(old.column("epoch").to_pylist()))}
        if old is None and len(parts) == 1:   # one epoch: its file becomes the merged file as it is
            return self._promote(trial_id, parts[0], driver)
        table = merge_epochs(old, [self.read_rows(p) for p in parts])
        table = table.replace_schema_metadata({b"ncsweep_schema_version": str(SCHEMA_VERSION).encode()})
        sha = self._write_table(f"{ROWS}/{trial_id}/{MERGED}", table)
        if driver:
            fault("compact.merged")
        for i, p in enumerate(parts):
            self.delete(p)
            if i == 0 and driver:
                fault("compact.partial")
        return {"rows": table.num_rows, "sha256": sha, "epochs": sorted(set(table.column("epoch").to_pylist()))}

    def _promote(self, trial_id: str, part, driver: bool) -> dict:
        """A trial's only rows file renamed to its trial.parquet (a 1-epoch trial: nothing to merge,
        ~20 ms of the driver's time per configuration saved). Checked readable first, like a merge."""
        try:
            meta = self.read_metadata(part)
        except Exception as e:   # truncated, not Parquet, gone
            raise DamagedRows(f"{part}: unreadable rows file ({type(e).__name__})") from e
        epochs = [epoch_of(str(part))]
        merged = self.merged_path(trial_id)
        self.fs.move(str(part), str(merged))
        if driver:
            fault("compact.merged")
        return {"rows": meta.num_rows, "sha256": self.sha256(merged), "epochs": epochs}

    # ------------------------------------------------------------------ trial records
    def record_path(self, trial_id: str):
        return self._at(record_name(trial_id))

    def read_record(self, trial_id: str) -> dict | None:
        return self.loc.record(trial_id)   # never half-written; a hand-edited, unreadable one reads as None

    def update_record(self, trial_id: str, **fields) -> dict:
        rec = self.read_record(trial_id) or {"trial_id": trial_id, "attempts": 0, "status": "pending"}
        rec.update(fields, updated_at=time.time())
        self.write_json(record_name(trial_id), rec, "record.tmp")
        return rec

    def record_epoch(self, trial_id: str, epoch: int, n_rows: int, **fields) -> dict:
        """After an epoch's rows are written: epochs_done and the epoch's row count in the record
        (`rows_by_epoch`, so `ncsweep status` counts rows without opening 10^5 files)."""
        rec = self.read_record(trial_id) or {}
        counts = {k: v for k, v in (rec.get("rows_by_epoch") or {}).items() if int(k) < epoch}
        counts[str(epoch)] = int(n_rows)
        return self.update_record(trial_id, epochs_done=epoch + 1, rows_by_epoch=counts, **fields)

    def records(self) -> dict[str, dict]:
        return self.loc.records()

    def record_files(self) -> list[str]:
        """The trial ids that have a record file, readable or not."""
        return [n[:-len(".json")] for n in self.loc.listdir(TRIALS) if n.endswith(".json")]

    def trials_table_path(self):
        return self._at(TRIALS_TABLE)

    def write_trials_table(self):
        recs = list(self.records().values())
        flat = [{**{k: v for k, v in r.items() if k != "config"},
                 **{f"cfg_{k}": (json.dumps(v) if isinstance(v, (dict, list)) else v)
                    for k, v in (r.get("config") or {}).items()}} for r in recs]
        names = list(dict.fromkeys(k for r in flat for k in r))
        table = pa.table({k: _column(k, [r.get(k) for r in flat]) for k in names}) if flat else pa.table({})
        self._write_table(TRIALS_TABLE, table, "trials_table.tmp")
        return self.trials_table_path()

    # ------------------------------------------------------------------ manifest
    @property
    def manifest_path(self):
        return self._at(MANIFEST)

    def read_manifest(self) -> dict | None:
        return self.loc.manifest()

    def write_manifest(self, manifest: dict) -> None:
        self.write_json(MANIFEST, {**manifest, "schema_version": SCHEMA_VERSION}, "manifest.tmp")

    @property
    def spec_path(self):
        return self._at(SPEC)

    def write_spec(self, name: str, digest: str, raw: dict, resources: dict | None = None) -> None:
        """The spec once more, apart from the manifest: what `ncsweep repair` rebuilds it from."""
        self.write_json(SPEC, {"name": name, "digest": digest, "spec": raw, "resources": resources})

    def read_spec(self) -> dict | None:
        try:
            return self.loc.read_json(SPEC)
        except ValueError:
            return None

    def checkpoint_dir(self, trial_id: str):
        """A trial's checkpoint directory: a Path, or for an object store its URI (`nccore.checkpoint`
        reads and writes both)."""
        return self.loc.url(f"{CHECKPOINTS}/{trial_id}") if self.remote else Path(self.loc.full(f"{CHECKPOINTS}/{trial_id}"))

    def checkpoint_path(self, trial_id: str):
        """The path on `fs` of a trial's checkpoint directory (`delete_tree`)."""
        return self._at(f"{CHECKPOINTS}/{trial_id}")

    def checkpoint_file(self, trial_id: str):
        """The path on `fs` of a trial's checkpoint file (`exists`, `delete`)."""
        return self._at(f"{CHECKPOINTS}/{trial_id}/{CHECKPOINT_FILE}")
