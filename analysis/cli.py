"""`ncsweep analyze` / `ncsweep report` entry points (argparse lines live in sweeps/cli.py)."""
from __future__ import annotations

import time
import warnings
from pathlib import Path

from .filters import parse_statuses
from .pipeline import analyse
from .report import spec_name, write_report, write_tables


def _metrics(text):
    return [m.strip() for m in text.split(",") if m.strip()] if text else None


def _run(dirs, select, metrics, include_status, correction, interactions, axes):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        res = analyse(dirs, select, _metrics(metrics), include_status=parse_statuses(include_status),
                      correction=correction or "holm", interactions=interactions, axes=_metrics(axes))
    for w in caught:
        if "damaged" in str(w.message) or "unreadable" in str(w.message):
            print(f"ncsweep: warning: {w.message}", flush=True)
    return res


def analyze(dirs, select="final", metrics=None, include_status=None, correction="holm", interactions=None,
            axes=None) -> int:
    t = time.perf_counter()
    res = _run(dirs, select, metrics, include_status, correction, interactions, axes)
    out = Path(dirs[0]) / "analysis"
    write_tables(res, out)
    left = "; ".join(f"{n} {k}" for k, n in res["excluded"].items()) or "none"
    print(f"analysed {len(res['trials'])} trials ({res['n_rows']} rows) in {time.perf_counter() - t:.1f}s; "
          f"{len(res['tables'])} tables in {out}; left out of effect fits: {left}")
    return 0


def report(dirs, select="final", metrics=None, include_status=None, correction="holm", interactions=None,
           axes=None) -> int:
    from .studies import study_sections

    res = _run(dirs, select, metrics, include_status, correction, interactions, axes)
    write_tables(res, Path(dirs[0]) / "analysis")
    name = spec_name(dirs[0])
    page, summary = write_report(res, Path(dirs[0]) / "report", f"ncsweep report — {name}", study_sections(name, res))
    print(f"report: {page}\nsummary: {summary}")
    return 0
