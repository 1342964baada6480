"""Read a sweep's Parquet results (duckdb underneath; no torch, no Ray).

`load(run_dirs)` returns one pandas DataFrame of every row of every readable file, keeping each
(trial_id, epoch, split, group) once — the latest attempt, and across several run directories
the newest file. Unreadable or partial files are skipped with a warning naming them. The trial
records add `trial_status` (done / diverged / failed / oom / stopped) to every row.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq

KEY = ["trial_id", "epoch", "split", "group"]


class ResultsError(ValueError):
    """A run directory that cannot be analysed (missing, empty, nothing readable)."""


def _files(run_dir: Path) -> list[Path]:
    if not run_dir.is_dir():
        raise ResultsError(f"{run_dir}: not a directory; pass the --out directory of `ncsweep run`")
    return sorted((run_dir / "rows").glob("*/*.parquet"))


def readable(files: list[Path]) -> list[Path]:
    """Files whose Parquet footer reads; the others are named in a warning and skipped."""
    good, bad = [], []
    for f in files:
        try:
            if pq.read_metadata(f).num_rows > 0:
                good.append(f)
        except Exception as e:  # truncated, not Parquet, permission
            bad.append(f"{f} ({type(e).__name__})")
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable result file(s): {'; '.join(bad[:5])}", RuntimeWarning,
                      stacklevel=3)
    return good


def trial_status(run_dirs: list[Path]) -> pd.DataFrame:
    recs = []
    for d in run_dirs:
        for p in sorted((d / "trials").glob("*.json")):
            try:
                r = json.loads(p.read_text())
            except json.JSONDecodeError:
                warnings.warn(f"skipped unreadable trial record {p}", RuntimeWarning, stacklevel=3)
                continue
            recs.append({"trial_id": r["trial_id"], "trial_status": r.get("status"), "run_dir": str(d)})
    cols = ["trial_id", "trial_status", "run_dir"]
    return pd.DataFrame(recs, columns=cols).drop_duplicates("trial_id", keep="last")


def _query(con, source: str, sel: str) -> pd.DataFrame:
    return con.execute(
        f"""select {sel} from read_parquet({source}, union_by_name=true, filename=true)
            qualify row_number() over (partition by trial_id, epoch, split, "group"
                                       order by attempt desc, filename desc) = 1"""
    ).df()


def load(run_dirs, columns: list[str] | None = None) -> pd.DataFrame:
    """All rows of one or several run directories as a DataFrame (see module doc).

    Fast path: one duckdb scan over the directories' globs. Only if that fails (a corrupt or
    half-copied file) is every file's footer checked, the bad ones named and skipped."""
    dirs = [Path(d) for d in ([run_dirs] if isinstance(run_dirs, (str, Path)) else run_dirs)]
    files = [f for d in dirs for f in _files(d)]
    if not files:
        raise ResultsError(f"no result files under {', '.join(str(d / 'rows') for d in dirs)}: "
                           "has the sweep run? (`ncsweep status DIR`)")
    con = duckdb.connect()
    sel = "*" if columns is None else ", ".join(f'"{c}"' for c in dict.fromkeys(KEY + ["attempt"] + columns))
    globs = "[" + ",".join(f"'{(d / 'rows').as_posix()}/*/*.parquet'" for d in dirs) + "]"
    try:
        df = _query(con, globs, sel)
    except duckdb.Error:
        files = readable(files)
        if not files:
            raise ResultsError(f"none of the result files under {', '.join(map(str, dirs))} could be read")
        df = _query(con, "[" + ",".join(f"'{f.as_posix()}'" for f in files) + "]", sel)
    df = df.drop(columns=[c for c in ("filename",) if c in df.columns])
    status = trial_status(dirs)
    df = df.merge(status[["trial_id", "trial_status"]], on="trial_id", how="left")
    return df.sort_values(KEY, kind="stable").reset_index(drop=True)
