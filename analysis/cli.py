"""`ncsweep analyze` / `ncsweep report` entry points."""
from __future__ import annotations

import time
from pathlib import Path

from .report import analyse, spec_name, write_report, write_tables


def _metrics(text):
    return [m.strip() for m in text.split(",")] if text else None


def analyze(dirs, select="final", metrics=None) -> int:
    t = time.perf_counter()
    res = analyse(dirs, select, _metrics(metrics))
    out = Path(dirs[0]) / "analysis"
    write_tables(res, out)
    print(f"analysed {len(res['trials'])} trials ({len(res['rows'])} rows) in {time.perf_counter() - t:.1f}s; "
          f"tables in {out}")
    return 0


def report(dirs, select="final", metrics=None) -> int:
    from .studies import study_sections

    res = analyse(dirs, select, _metrics(metrics))
    out = Path(dirs[0]) / "report"
    write_tables(res, Path(dirs[0]) / "analysis")
    name = spec_name(dirs[0])
    page, summary = write_report(res, out, f"ncsweep report — {name}", study_sections(name, res))
    print(f"report: {page}\nsummary: {summary}")
    return 0
