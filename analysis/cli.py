"""`ncsweep analyze` / `ncsweep report` entry points (argparse lines live in sweeps/cli.py).

Where the files go: `--out X` puts everything the command writes into X (analyze: the tables;
report: report.html, summary.md and the tables). Without it, one run directory DIR gets
DIR/analysis (tables) and DIR/report; several run directories get the same two folders under a
new folder beside them named after them (`runs/a` + `runs/b` → `runs/a+b/`), never the first's.
A run directory on an object store (`s3://…`) is read from a local mirror (`sweeps.layout.mirror`,
brought up to date each time); without --out, its tables and report are written there and copied
to its `analysis/` and `report/` on the store.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
import warnings
from pathlib import Path

from sweeps.layout import is_remote, mirror, upload

from .filters import parse_statuses
from .load import ResultsWarning
from .pipeline import analyse
from .report import spec_name, write_report, write_tables

TOP = 10           # leaderboard rows per data condition in the report (the CSV keeps every row)
MAX_NAME = 80      # characters of a combined folder's name; longer: the first run's name, a count and a hash


def _metrics(text):
    return [m.strip() for m in text.split(",") if m.strip()] if text else None


def results_root(dirs) -> Path:
    """The folder whose analysis/ and report/ receive a command's files when --out is not given:
    the run directory itself, or for several a folder in their common parent named after them."""
    paths = [Path(d).resolve() for d in dirs]
    if len(set(paths)) == 1:
        return paths[0]
    parent = Path(os.path.commonpath([str(p.parent) for p in paths]))
    name = "+".join(p.name for p in paths)
    if len(name) > MAX_NAME:
        digest = hashlib.sha1("\n".join(map(str, paths)).encode()).hexdigest()[:8]
        name = f"{paths[0].name}+{len(paths) - 1}-more-{digest}"
    return parent / name


def _run(dirs, select, metrics, include_status, correction, interactions, axes, rank_by=None, strict=False):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        res = analyse(dirs, select, _metrics(metrics), include_status=parse_statuses(include_status),
                      correction=correction or "holm", interactions=interactions, axes=_metrics(axes),
                      rank_by=rank_by, strict=strict)
    for message in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, ResultsWarning)):
        print(f"ncsweep: warning: {message}", file=sys.stderr, flush=True)
    return res


def _published(folder: Path, dirs, given_out, name: str) -> str:
    """Where a command's folder ended up: for one run directory on an object store and no --out,
    copied to `name` in it."""
    if given_out or len(dirs) != 1 or not is_remote(dirs[0]):
        return str(folder)
    return upload(folder, dirs[0], name)


def analyze(dirs, select="final", metrics=None, include_status=None, correction="holm", interactions=None,
            axes=None, out=None, rank_by=None, strict=False) -> int:
    t = time.perf_counter()
    local = [mirror(d) for d in dirs]
    res = _run(local, select, metrics, include_status, correction, interactions, axes, rank_by, strict)
    folder = Path(out) if out else results_root(local) / "analysis"
    write_tables(res, folder)
    out = _published(folder, dirs, out, "analysis")
    left = "; ".join(f"{n} {k}" for k, n in res["excluded"].items()) or "none"
    print(f"analysed {len(res['trials'])} trials ({res['n_rows']} rows) in {time.perf_counter() - t:.1f}s; "
          f"{len(res['tables'])} tables in {out}; left out of effect fits: {left}")
    return 0


def report(dirs, select="final", metrics=None, include_status=None, correction="holm", interactions=None,
           axes=None, out=None, rank_by=None, top=TOP, strict=False) -> int:
    from .studies import study_sections

    local = [mirror(d) for d in dirs]
    res = _run(local, select, metrics, include_status, correction, interactions, axes, rank_by, strict)
    res["leaderboard_top"] = top
    root = results_root(local)
    tables, pages = (Path(out), Path(out)) if out else (root / "analysis", root / "report")
    write_tables(res, tables)
    names = [spec_name(d) for d in local]
    name = names[0] if len(set(names)) == 1 else " + ".join(names)
    page, summary = write_report(res, pages, f"ncsweep report — {name}", study_sections(names[0], res))
    if not out and len(dirs) == 1 and is_remote(dirs[0]):
        tables, pages = _published(tables, dirs, out, "analysis"), _published(pages, dirs, out, "report")
        print(f"report: {pages}/{Path(page).name} (and here: {page})\nsummary: {pages}/{Path(summary).name}\n"
              f"tables: {tables}")
        return 0
    print(f"report: {page}\nsummary: {summary}\ntables: {tables}")
    return 0
