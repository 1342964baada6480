"""What a run directory holds, from its trial records and directory listings — fast enough for
`ncsweep status` on a sweep of 10^5 result files (no Ray import, no result file opened).

Row counts come from the records: a finished trial's record holds its merged file's row count
(`finish_trial`), a running trial's record the rows of each epoch it wrote (`RunDir.record_epoch`).
Result files no record accounts for (a directory written by an older ncsweep, or by hand) are
counted as files, not opened.
"""
from __future__ import annotations

from .layout import FAILED, TERMINAL
from .store import RunDir
from .verify import verify


def planned_count(store: RunDir) -> int:
    m = store.read_manifest() or {}
    return int(m.get("planned_count") or 0)


def sweep_summary(store: RunDir, records: dict[str, dict] | None = None) -> dict:
    recs = list((store.records() if records is None else records).values())
    counts: dict[str, int] = {}
    for r in recs:
        counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
    planned = planned_count(store)
    terminal = sum(v for k, v in counts.items() if k in TERMINAL)
    overhead = [r["overhead_s"] for r in recs if "overhead_s" in r]
    inner = [r["run_trial_s"] for r in recs if "run_trial_s" in r]
    return {"run_dir": store.uri, "planned": planned, "finished": terminal,
            "pending": max(planned - terminal, 0), "counts": counts,
            "failures": {r["trial_id"]: r.get("error") for r in recs if r.get("status") in FAILED},
            "mean_trial_overhead_s": sum(overhead) / len(overhead) if overhead else None,
            "mean_run_trial_s": sum(inner) / len(inner) if inner else None}


def recorded_rows(rec: dict) -> int | None:
    """Rows a trial's record accounts for: its merged file's count once finished, else the sum of
    its epochs' counts; None for a record that holds neither (written by an older ncsweep)."""
    if rec.get("rows_sha256") and rec.get("rows") is not None:
        return int(rec["rows"])
    by_epoch = rec.get("rows_by_epoch")
    return sum(int(n) for n in by_epoch.values()) if by_epoch is not None else None


def status_summary(store: RunDir) -> dict:
    """`sweep_summary` plus epochs run, rows written (from the records), result files (listed,
    not opened), and `verify`'s problems."""

    recs = store.records()
    s = sweep_summary(store, recs)
    files = store.files_per_trial()
    counted = {tid: recorded_rows(r) for tid, r in recs.items()}
    walls = [r["wall_s"] for r in recs.values() if "wall_s" in r]
    s["epochs"] = sum(int(r.get("epochs_done", 0)) for r in recs.values())
    s["rows"] = sum(n for n in counted.values() if n)
    s["files"] = sum(files.values())
    s["uncounted_files"] = sum(n for tid, n in files.items() if counted.get(tid) is None)
    s["mean_trial_wall_s"] = sum(walls) / len(walls) if walls else None
    s["problems"] = verify(store.uri, recs, footers=False)   # `ncsweep verify` reads them
    return s


def exit_code(summary: dict) -> int:
    """0: every trial completed, stopped or diverged; 1: some failed, ran out of memory, or are
    still unfinished after the run's passes (they continue with `ncsweep resume`)."""
    return 1 if summary.get("failures") or summary.get("pending") else 0


def failure_line(summary: dict) -> str | None:
    """The one-line summary printed when trials failed or are left unfinished, or None."""
    fails, pending = summary.get("failures") or {}, int(summary.get("pending") or 0)
    if not fails and not pending:
        return None
    counts = summary.get("counts", {})
    parts = [f"{counts.get(k, 0)} {k}" for k in FAILED if counts.get(k)]
    if pending:
        parts.append(f"{pending} unfinished: `ncsweep resume {summary['run_dir']}` continues them")
    n = len(fails) + pending
    return (f"{n} of {summary.get('planned') or n} trials did not finish ({', '.join(parts)}); "
            f"see `ncsweep status {summary['run_dir']}`")


def swept_keys(manifest: dict | None) -> list[str]:
    """The keys a run's spec sweeps (its `space` and every variant's), in spec order, seed included."""
    spec = (manifest or {}).get("spec") or {}
    spaces = [spec.get("space") or {}] + [v for v in spec.get("variants") or [] if isinstance(v, dict)]
    return list(dict.fromkeys(k for s in spaces if isinstance(s, dict) for k in s))


def headline_metric(manifest: dict | None, records: dict[str, dict]) -> str | None:
    """The metric `status --trials` shows: the spec's search metric, else its scheduler's, else the
    first of val_worst_group_acc / val_acc that a trial reported."""
    spec = (manifest or {}).get("spec") or {}
    for part in ("search", "scheduler"):
        m = (spec.get(part) or {}).get("metric")
        if m:
            return m
    seen = {k for r in records.values() for k in (r.get("final") or {})}
    return next((m for m in ("val_worst_group_acc", "val_acc") if m in seen), None)


def trial_rows(store: RunDir, records: dict[str, dict] | None = None) -> tuple[list[str], list[list[str]]]:
    """(header, one row per trial): id, status, epochs, each swept key's value and the headline
    metric at the trial's latest epoch, from the records only (no result file is opened)."""
    recs = store.records() if records is None else records
    manifest = store.read_manifest()
    keys = swept_keys(manifest)
    metric = headline_metric(manifest, recs)
    header = ["trial_id", "status", "epochs", *keys] + ([f"{metric} (latest)"] if metric else [])
    rows = []
    for tid, r in sorted(recs.items()):
        cfg = r.get("config") or {}
        row = [tid, str(r.get("status", "?")), str(r.get("epochs_done", 0)), *(_fmt(cfg.get(k)) for k in keys)]
        if metric:
            row.append(_fmt((r.get("final") or {}).get(metric)))
        rows.append(row)
    return header, rows


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.4f}".rstrip("0").rstrip(".")
    return str(v)


def aligned(header: list[str], rows: list[list[str]], indent: str = "  ") -> str:
    """Rows as left-aligned text columns."""
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    return "\n".join(indent + "  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip() for r in [header, *rows])
