"""Read a sweep's Parquet results (duckdb underneath; no torch, no Ray).

`Source(run_dirs, columns)` scans every result file of one or several run directories ONCE,
reading only the named columns, and keeps each (trial_id, epoch, split, group) once: the newest
by recorded time (the `epoch_ended_at` the runner writes into every row; the file's modification
time for rows without it), then the highest attempt. The result is a duckdb temporary table `rows` that the epoch
selection, the trial table and the curves query without touching the files again.

Damaged files — a truncated footer, or an intact footer over damaged pages — are skipped with a
warning naming each one. Every query is parameterised (paths are values, never SQL text), so a
run directory may be called `it's run`.

`load(run_dirs)` is the simple form: all columns of all rows as a pandas DataFrame, with the trial
records' status added as `trial_status`.
"""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq

from sweeps import layout   # the run directory's names (sweeps/layout.py)
from sweeps.layout import MERGED, epoch_of, is_epoch_file
from sweeps.store import file_sha256   # the run directory's own checksum (sweeps/store.py writes it)

from . import vocab
from .vocab import status_class

KEY = list(layout.KEY)


def per_trial(column: str) -> bool:
    """A column whose value is the same in every row of a trial: a config key copied into the rows
    (the trial id is a hash of the config), or where the trial last ran (host, device, versions)."""
    return column in vocab.row_columns("host") or column == "family" or vocab.is_axis(column)


class ResultsError(ValueError):
    """A run directory that cannot be analysed (missing, empty, nothing readable)."""


class ResultsWarning(RuntimeWarning):
    """Something a reader of the tables should know (a damaged or changed file, a skipped fit):
    `ncsweep analyze` prints each on stderr."""


def ident(name: str) -> str:
    """A column name as a quoted SQL identifier (names come from files, so quote every one)."""
    return '"' + str(name).replace('"', '""') + '"'


def as_dirs(run_dirs) -> list[Path]:
    return [Path(d) for d in ([run_dirs] if isinstance(run_dirs, (str, Path)) else run_dirs)]


def row_files(run_dir: Path) -> list[str]:
    """The result files under run_dir/rows as path strings (10^5 Path objects cost ~0.5 s),
    sorted: a trial's files together, trial.parquet last."""
    if not run_dir.is_dir():
        raise ResultsError(f"{run_dir}: not a directory; pass the --out directory of `ncsweep run`")
    rows = run_dir / "rows"
    if not rows.is_dir():
        return []
    out: list[str] = []
    with os.scandir(rows) as trials:                # scandir and plain strings: 10^5 files in ~0.2 s
        for t in trials:
            if t.is_dir():
                with os.scandir(t.path) as files:
                    out += [f.path for f in files if f.name.endswith(".parquet") and not f.name.startswith(".")]
    out.sort()
    return out


def readable(files: list[str], columns: list[str] | None = None) -> list[str]:
    """Files whose footer and pages (of `columns`) decode; the others are named in a warning and skipped."""
    good, bad = [], []
    for f in files:
        try:
            meta = pq.read_metadata(f)
            cols = None if columns is None else [c for c in columns if c in meta.schema.names]
            if meta.num_rows > 0:
                pq.read_table(f, columns=cols)
                good.append(f)
        except Exception as e:  # truncated, damaged pages, not Parquet, permission
            bad.append(f"{f} ({type(e).__name__})")
    if bad:
        warnings.warn(f"skipped {len(bad)} damaged result file(s): {'; '.join(bad)}", ResultsWarning, stacklevel=3)
    return good


def newest_per_trial(files: list[str]) -> list[str]:
    """The newest file of each trial directory in sorted `files`: its latest epoch file while it has
    any (a running trial's merged file holds its earlier epochs), else its merged file."""
    last: dict[str, tuple[str, bool]] = {}
    for f in files:
        d = f.rpartition(os.sep)[0]
        epoch = is_epoch_file(f)
        if epoch or d not in last or not last[d][1]:
            last[d] = (f, epoch)
    return [f for f, _ in last.values()]


def chosen_files(files: list[str], picks: dict[str, int], trials: set[str]) -> list[str]:
    """The files that can hold the rows of trial t at epoch picks[t]: in the directory named t, its
    `epoch-NNNN.parquet` of that epoch and every file that is not an epoch file; the whole of a
    directory named after no trial in `trials` (a layout the runner does not write)."""
    out = []
    for f in files:
        tid = f.rpartition(os.sep)[0].rpartition(os.sep)[2]
        if tid not in trials:
            out.append(f)
        elif tid in picks and (not is_epoch_file(f) or epoch_of(f) == picks[tid]):
            out.append(f)
    return out


def schema_names(files: list[str]) -> list[str]:
    """Column names over the newest file of each trial directory (`newest_per_trial`: a finished
    trial's merged file holds its last-epoch-only metrics), in first-seen order."""
    last = newest_per_trial(files)
    con = duckdb.connect()
    try:
        return [r[0] for r in con.execute("describe select * from read_parquet(?, union_by_name=true)", [last]).fetchall()]
    except duckdb.Error:   # a damaged footer: read the others (the scan's fallback names it)
        names: dict[str, None] = {}
        for f in last:
            try:
                names.update(dict.fromkeys(pq.read_schema(f).names))
            except Exception:
                continue
        return list(names)
    finally:
        con.close()


def trial_records(run_dirs) -> pd.DataFrame:
    """One row per trial record: trial_id, trial_status (raw), status (one of the five), error,
    config (dict), updated_at, run_dir. Across run directories the newest record wins."""
    recs, checks = [], []
    for d in as_dirs(run_dirs):
        loc = layout.Location(d)   # the run directory's records, through sweeps/layout.py
        for name in loc.listdir(layout.TRIALS):
            tid = name.removesuffix(".json")
            r = loc.record(tid) if name.endswith(".json") else None
            if r is None:
                if name.endswith(".json"):
                    warnings.warn(f"skipped unreadable trial record {loc.url(layout.record_name(tid))}",
                                  ResultsWarning, stacklevel=3)
                continue
            if r.get("rows_sha256"):
                checks.append((str(d / "rows" / tid / MERGED), r["rows_sha256"]))
            recs.append({"trial_id": r.get("trial_id", tid), "trial_status": r.get("status"),
                         "status": status_class(r.get("status")), "error": r.get("error"),
                         "config": r.get("config") or {}, "attempts": r.get("attempts"),
                         "updated_at": float(r.get("updated_at") or r.get("finished_at")
                                             or os.stat(loc.full(layout.record_name(tid))).st_mtime),
                         "run_dir": str(d)})
    cols = ["trial_id", "trial_status", "status", "error", "config", "attempts", "updated_at", "run_dir"]
    df = pd.DataFrame(recs, columns=cols)
    df = df.sort_values("updated_at", kind="stable").drop_duplicates("trial_id", keep="last").reset_index(drop=True)
    df.attrs["checksums"] = checks
    return df


def checksum_mismatches(records: pd.DataFrame, workers: int = 4) -> list[str]:
    """The merged result files (of every run directory's records, not only the newest) whose
    SHA-256 differs from the one their trial record holds: changed or damaged since the trial
    finished. A missing file is not listed here (`ncsweep verify` reports it). Hashing runs in
    threads (hashlib releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    checks = [(f, sha) for f, sha in records.attrs.get("checksums", []) if os.path.exists(f)]
    with ThreadPoolExecutor(max(1, min(workers, len(checks)))) as ex:
        digests = list(ex.map(lambda c: file_sha256(Path(c[0])), checks))
    return [f for (f, sha), got in zip(checks, digests) if got != sha]


def manifests(run_dirs) -> list[dict]:
    out = []
    for d in as_dirs(run_dirs):
        try:
            out.append(layout.Location(d).manifest() or {})
        except (ValueError, OSError):
            warnings.warn(f"unreadable manifest {d / layout.MANIFEST}", ResultsWarning, stacklevel=2)
            out.append({})
    return out


PARALLEL_SCAN_FILES = 5000    # from this many files, split the scan over processes (1 duckdb thread each)


def over_files(con, before: str, after: str, files: list[str]):
    """Execute `before` read_parquet(files) `after`. Files that share the needed columns need no
    per-file schema pass (much faster for 10^5 files); a schema mismatch retries with union_by_name
    (a damaged file then raises duckdb.Error for the caller's fallback)."""
    try:
        return con.execute(f"{before}read_parquet(?){after}", [files])
    except duckdb.Error:
        return con.execute(f"{before}read_parquet(?, union_by_name=true){after}", [files])


def _create_rows(con, names: list[str], cols: str, table: str = "rows") -> None:
    """`table` (`cols`) from the files."""
    over_files(con, f"create or replace temp table {table} as select {cols} from ", "", names)


def epoch_file_keys(files: list[str]) -> pa.Table:
    """(file_index, trial_id, epoch) of epoch files as the runner names them: rows/<trial_id>/epoch-NNNN.parquet."""
    parts = [f.rsplit(os.sep, 2) for f in files]
    return pa.table({"file_index": pa.array(range(len(files)), pa.int64()),
                     "trial_id": [p[-2] for p in parts],
                     "epoch": pa.array([epoch_of(p[-1]) for p in parts], pa.int64())})


def paths_name_their_rows(con, epoch_files: list[str]) -> bool:
    """Whether the newest epoch file of each trial directory holds rows of the trial and epoch its
    path names (the runner writes them so; a hand-made layout may not)."""
    newest = newest_per_trial(epoch_files)
    con.register("_named", epoch_file_keys(newest))
    try:
        bad = over_files(con, "select count(*) from (select distinct trial_id, epoch, file_index from ",
                         """) r join _named k using (file_index) where r.trial_id::varchar is distinct from k.trial_id
                            or r.epoch::bigint is distinct from k.epoch""", newest).fetchall()[0][0]
    except duckdb.Error:   # other types, or a damaged file (the plain scan's fallback names it)
        return False
    finally:
        con.unregister("_named")
    return bad == 0


PATH_KEYED_FROM = 1000    # epoch files; from this many, their trial_id and epoch come from their paths


def create_rows(con, files: list[str], columns: list[str]) -> None:
    """`rows` (`columns`, in order) from `files`. With many epoch files their trial_id and epoch
    are taken from the path instead of read: two columns fewer per file (~15 % of the scan)."""
    epoch_files = [f for f in files if is_epoch_file(f)]
    keyed = (len(epoch_files) >= PATH_KEYED_FROM and {"trial_id", "epoch"} <= set(columns)
             and paths_name_their_rows(con, epoch_files))
    if not keyed:
        _create_rows(con, files, ", ".join(ident(c) for c in columns))
        return
    rest = [c for c in columns if c not in ("trial_id", "epoch")]
    inner = ", ".join(["file_index", *map(ident, rest)])
    outer = ", ".join(("k." if c in ("trial_id", "epoch") else "r.") + ident(c) for c in columns)
    con.register("_path_keys", epoch_file_keys(epoch_files))
    try:
        over_files(con, f"create or replace temp table rows as select {outer} from (select {inner} from ",
                   ") r join _path_keys k using (file_index)", epoch_files)
    finally:
        con.unregister("_path_keys")
    others = [f for f in files if not is_epoch_file(f)]
    if others:
        _create_rows(con, others, ", ".join(ident(c) for c in columns), "_others")
        con.execute("insert into rows select * from _others")
        con.execute("drop table _others")


def join_trial_columns(con, files: list[str], columns: list[str], trial_cols: list[str]) -> None:
    """Add `trial_cols` to `rows` (whose other columns are `columns`, in order) from the newest
    file of each trial directory (`newest_per_trial`): one file per trial instead of every epoch's.
    A file costs ~0.12 ms to open and ~0.01 ms more per column read."""
    if not trial_cols:
        return
    _create_rows(con, newest_per_trial(files), ", ".join(ident(c) for c in ["trial_id", "epoch", *trial_cols]), "newest")
    cols = ", ".join(ident(c) for c in ["trial_id", *trial_cols])
    con.execute(f"""create temp table trial_cols as select {cols} from newest
                    qualify row_number() over (partition by trial_id order by epoch desc) = 1""")
    order = ", ".join(("t." if c in trial_cols else "r.") + ident(c) for c in columns)
    con.execute(f"create temp table rows_joined as select {order} from rows r left join trial_cols t using (trial_id)")
    for t in ("rows", "newest", "trial_cols"):
        con.execute(f"drop table {t}")
    con.execute("alter table rows_joined rename to rows")


def scan(con, files: list[str], columns: list[str], trial_cols: list[str]) -> None:
    """`rows` (`columns`) from `files`: every file for the per-row columns, the newest file of each
    trial for `trial_cols`. Keys read twice are left for the caller to find. When no file is an
    epoch file (a finished sweep: one merged file per trial) everything is read in one pass and
    each trial's `trial_cols` set to their value at its latest epoch — the same result without
    opening every file a second time (~1 ms per file of 86 columns)."""
    if trial_cols and not any(map(is_epoch_file, files)):
        create_rows(con, files, columns)
        latest_trial_columns(con, columns, trial_cols)
        return
    create_rows(con, files, [c for c in columns if c not in trial_cols])
    join_trial_columns(con, files, columns, trial_cols)


def latest_trial_columns(con, columns: list[str], trial_cols: list[str]) -> None:
    """Set `trial_cols` of every row of `rows` to the trial's value at its latest epoch (a trial
    resumed elsewhere keeps the host it finished on). Columns that already agree are left alone."""
    counts = ", ".join(f"max(n{i})" for i in range(len(trial_cols)))
    per_trial_ = ", ".join(f"count(distinct {ident(c)}) as n{i}" for i, c in enumerate(trial_cols))
    most = con.execute(f"select {counts} from (select {per_trial_} from rows group by trial_id)").fetchall()[0]
    varying = [c for c, n in zip(trial_cols, most) if (n or 0) > 1]     # one scan of `rows` for all of them
    if not varying:
        return
    latest = ", ".join(f"arg_max({ident(c)}, epoch) as {ident(c)}" for c in varying)
    con.execute(f"create temp table trial_cols as select trial_id, {latest} from rows group by trial_id")
    order = ", ".join(("t." if c in varying else "r.") + ident(c) for c in columns)
    con.execute(f"create temp table rows_joined as select {order} from rows r left join trial_cols t using (trial_id)")
    for t in ("rows", "trial_cols"):
        con.execute(f"drop table {t}")
    con.execute("alter table rows_joined rename to rows")


def _scan_part(files: list[str], columns: list[str], trial_cols: list[str], out: str) -> str:
    """One worker's share of the scan. One duckdb thread and no asynchronous I/O threads: there is
    a worker per core already, and duckdb's 8 async-I/O threads cost a third more CPU per file."""
    con = duckdb.connect()
    con.execute("set threads = 1")
    con.execute("set async_threads = 0")
    con.execute("set enable_progress_bar = false")
    scan(con, files, columns, trial_cols)
    feather.write_feather(con.sql("select * from rows").to_arrow_table(), out, compression="uncompressed")
    con.close()
    return out


def _scan_in_processes(files: list[str], columns: list[str], trial_cols: list[str]) -> list[str] | None:
    """Scan many small files in one process per core (whole trial directories each), each writing
    one uncompressed Arrow IPC part (cheapest to write and read back); None when there is one core
    (or the pool fails: the caller then scans here)."""
    import tempfile

    from .parallel import default_workers, import_table_libraries, run_all

    workers = default_workers()
    if workers < 2:
        return None
    by_dir: dict[str, list[str]] = {}
    for f in files:
        by_dir.setdefault(os.path.dirname(f), []).append(f)
    chunks: list[list[str]] = [[] for _ in range(workers)]
    for fs in sorted(by_dir.values(), key=len, reverse=True):   # balance the file counts
        min(chunks, key=len).extend(fs)
    tmp = Path(tempfile.mkdtemp(prefix="ncsweep-scan-"))
    try:
        return run_all([(_scan_part, (sorted(c), columns, trial_cols, str(tmp / f"part-{i}.arrow")), {})
                        for i, c in enumerate(chunks) if c], workers, while_waiting=import_table_libraries)
    except Exception as e:  # a damaged file: the caller's fallback names it
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, duckdb.Error):
            raise
        return None


class Source:
    """The deduplicated rows of some run directories as the duckdb table `rows` (see module doc)."""

    def __init__(self, run_dirs, columns: list[str] | None = None, threads: int | None = None, lazy: bool = False):
        self.dirs = as_dirs(run_dirs)
        self.files = [f for d in self.dirs for f in row_files(d)]
        if not self.files:
            raise ResultsError(f"no result files under {', '.join(str(d / 'rows') for d in self.dirs)}: "
                               "has the sweep run? (`ncsweep status DIR`)")
        self.con = duckdb.connect()
        self.con.execute("set enable_progress_bar = false")
        if threads:
            self.con.execute(f"set threads = {int(threads)}")
        self.available = schema_names(self.files)
        self.time_col = next((c for c in vocab.row_columns("time") if c in self.available), None)
        self.columns: list[str] = []
        if not lazy:
            self.materialise(columns)

    def materialise(self, columns: list[str] | None = None, every_epoch: list[str] | None = None) -> None:
        """Scan the files once into the table `rows` (KEY, status and `columns`; None: all).
        every_epoch: the columns needed at every epoch (epoch selection, curves); the others of
        `columns` are then read later, by `at_chosen`, from the files holding the chosen epochs
        only — with one file per (trial, epoch), every column read from every file costs ~7 %.
        When most files are merged trial files, everything is read in the one pass."""
        have = set(self.available)
        want = self.available if columns is None else [c for c in dict.fromkeys(KEY + ["status"] + list(columns))
                                                       if c in have]
        self.columns = [c for c in want if c not in vocab.row_columns("time")]
        single = sum(map(is_epoch_file, self.files))
        if 2 * single < len(self.files):
            every_epoch = None      # mostly merged files: a second pass would reopen each for little gain
        self.late = [] if every_epoch is None else [c for c in self.columns if c not in KEY and c != "status"
                                                    and not per_trial(c) and c not in every_epoch]
        try:
            self._materialise(self.files)
        except duckdb.Error:
            self.files = readable(self.files, self.scanned + ([self.time_col] if self.time_col else []))
            if not self.files:
                raise ResultsError(f"none of the result files under {', '.join(map(str, self.dirs))} could be read")
            self._materialise(self.files)

    @property
    def scanned(self) -> list[str]:
        """The columns the first scan reads into `rows` (all but the late ones)."""
        return [c for c in self.columns if c not in self.late]

    def _materialise(self, files: list[str]) -> None:
        """One scan into `rows`; only when some key occurs twice (several run directories, a trial
        caught mid-compaction, a re-run epoch) a second scan keeps the newest of each, reading every
        column (none is left late). Columns that are constant over a trial's rows (`per_trial`) are
        read from its newest file only."""
        scanned = self.scanned
        trial_cols = [c for c in scanned if per_trial(c)]
        self.con.execute("drop table if exists rows")
        parts = _scan_in_processes(files, scanned, trial_cols) if len(files) >= PARALLEL_SCAN_FILES else None
        if parts is not None:
            self.con.register("_parts", pa.concat_tables([feather.read_table(p) for p in parts], promote_options="default"))
            self.con.execute("create temp table rows as select * from _parts")
            self.con.unregister("_parts")
            shutil.rmtree(Path(parts[0]).parent, ignore_errors=True)
        else:
            scan(self.con, files, scanned, trial_cols)
        dups = self.con.execute('select count(*) from (select 1 from rows group by trial_id, epoch, split, "group" '
                                "having count(*) > 1)").fetchall()[0][0]
        if dups:
            self.late = []
            trial_cols = [c for c in self.columns if per_trial(c)]
            self._dedup(files, [c for c in self.columns if c not in trial_cols])
            join_trial_columns(self.con, files, self.columns, trial_cols)

    def at_chosen(self, chosen: str, columns: list[str]) -> str:
        """SQL for the rows at each trial's chosen epoch: trial_id, split, group and `columns`.
        chosen: SQL giving (trial_id, sel) from `rows`. Late columns are read here from the files
        that hold those epochs: a trial's `epoch-NNNN.parquet` of its chosen epoch and its other
        (merged) files; a directory not named after a trial of the rows is read whole."""
        rows = f"rows r join ({chosen}) c on r.trial_id = c.trial_id and r.epoch = c.sel"
        want = ", ".join(("l." if c in self.late else "r.") + ident(c) for c in ["trial_id", "split", "group", *columns])
        if not self.late:
            return f"select {want} from {rows}"
        self.con.execute("create or replace temp table _chosen as " + chosen)
        picks = dict(self.con.execute("select trial_id, sel from _chosen where sel is not null").fetchall())
        known = {r[0] for r in self.con.execute("select distinct trial_id from rows").fetchall()}
        files = chosen_files(self.files, picks, known)
        self._read_late(files)
        return (f"select {want} from {rows} left join _late l on l.trial_id = r.trial_id and l.epoch = r.epoch "
                'and l.split = r.split and l."group" = r."group"')

    def _read_late(self, files: list[str]) -> None:
        """The table `_late` (KEY and the late columns at the chosen epochs) from `files`. A late
        column that none of them holds (a last-epoch-only metric at an earlier chosen epoch) stays
        missing; damaged files are skipped with a warning naming each (their late values stay missing)."""
        def create(fs: list[str], cols: list[str]) -> None:
            sel = ", ".join(ident(c) for c in KEY + cols)
            over_files(self.con, f"create or replace temp table _late as select {sel} from ",
                       " r semi join _chosen c on r.trial_id = c.trial_id and r.epoch = c.sel", fs)

        cols = list(self.late)
        try:
            if not files:
                raise FileNotFoundError
            try:
                create(files, cols)
            except duckdb.Error:
                names = set(schema_names(files))       # columns none of the files hold are left out
                cols = [c for c in self.late if c in names]
                try:
                    create(files, cols)
                except duckdb.Error:                    # a damaged file: skip it, named
                    files = readable(files, KEY + cols)
                    if not files:
                        raise FileNotFoundError from None
                    create(files, cols)
        except FileNotFoundError:
            cols = []
            self.con.execute("create or replace temp table _late as select " + ", ".join(
                ident(c) for c in KEY) + " from rows where false")
        for c in self.late:
            if c not in cols:
                self.con.execute(f"alter table _late add column {ident(c)} double")

    def _dedup(self, names: list[str], columns: list[str]) -> None:
        """`rows` (`columns`) keeping the newest of each key: by recorded time, then attempt, then
        file name. The ordering columns are read for the ordering even when not kept."""
        self.con.register("_mtimes", pa.table({"filename": names, "_mtime": [os.stat(f).st_mtime for f in names]}))
        newest = (f"coalesce(cast({ident(self.time_col)} as double), _mtime)" if self.time_col else "_mtime")
        attempt = "attempt desc nulls last, " if "attempt" in self.available else ""
        cols = ", ".join(ident(c) for c in columns)
        extra = "".join(f", {ident(c)}" for c in (self.time_col, "attempt" if attempt else None)
                        if c and c not in columns)
        self.con.execute("drop table if exists rows")
        self.con.execute(
            f"""create temp table rows as
                select {cols} from (
                  select {cols}{extra}, filename from read_parquet(?, union_by_name=true, filename=true)
                ) r join _mtimes using (filename)
                qualify row_number() over (partition by trial_id, epoch, split, "group"
                                           order by {newest} desc, {attempt}filename desc) = 1""", [names])

    def df(self, columns: list[str] | None = None) -> pd.DataFrame:
        cols = self.columns if columns is None else [c for c in columns if c in self.columns]
        return self.con.execute(f"select {', '.join(ident(c) for c in cols)} from rows").df()

    def groups(self) -> list[str]:
        return [r[0] for r in self.con.execute('select distinct "group" from rows order by 1').fetchall()]

    def n_rows(self) -> int:
        return int(self.con.execute("select count(*) from rows").fetchall()[0][0])

    def hosts(self) -> pd.DataFrame:
        """Trials per (host, device, versions) — whichever of those columns the rows carry."""
        cols = [c for c in vocab.row_columns("host") if c in self.columns]
        if not cols:
            return pd.DataFrame()
        keys = ", ".join(ident(c) for c in cols)
        return self.query(f"select {keys}, count(distinct trial_id) as trials from rows group by {keys} order by {keys}")

    def query(self, sql: str, params=None) -> pd.DataFrame:
        return self.con.execute(sql, params or []).df()

    def close(self) -> None:
        self.con.close()


def load(run_dirs, columns: list[str] | None = None) -> pd.DataFrame:
    """All rows of one or several run directories as a DataFrame (see module doc)."""
    src = Source(run_dirs, columns)
    try:
        df = src.df()
    finally:
        src.close()
    status = trial_records(src.dirs)
    df = df.merge(status[["trial_id", "trial_status"]], on="trial_id", how="left")
    return df.sort_values(KEY, kind="stable").reset_index(drop=True)
