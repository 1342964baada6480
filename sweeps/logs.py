"""RUN_DIR/ncsweep.log: the driver's log and each failed trial's error, and `ncsweep logs`.

    with driver_log(run_dir):      # the `ncsweep` and `ray` loggers write to RUN_DIR/ncsweep.log
        run the sweep

The handler is attached for the duration of one run and removed after it, so running two sweeps in
one process (tests, notebooks) never writes one sweep's lines into the other's log.
"""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from .store import RunDir
from .summary import aligned, trial_rows

LOG_NAME = "ncsweep.log"
LOGGERS = ("ncsweep", "ray")
FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


@contextlib.contextmanager
def driver_log(run_dir):
    """Append the `ncsweep` logger (INFO and up) and Ray's (WARNING and up) to RUN_DIR/ncsweep.log."""
    handler = logging.FileHandler(Path(run_dir) / LOG_NAME)
    handler.setFormatter(logging.Formatter(FORMAT))
    saved = []
    for name in LOGGERS:
        lg = logging.getLogger(name)
        saved.append((lg, lg.level, lg.propagate))
        lg.addHandler(handler)
        lg.setLevel(logging.INFO if name == "ncsweep" else logging.WARNING)
        lg.propagate = False
    try:
        yield handler
    finally:
        for lg, level, propagate in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate
        handler.close()


def show_logs(run_dir, trial: str | None = None) -> str:
    """The text `ncsweep logs DIR [TRIAL]` prints: the whole driver log, or one trial's record
    (status, attempts, error, traceback) followed by the log lines that name it. TRIAL may be any
    unique prefix of a trial id."""
    store = RunDir(run_dir)
    if not store.exists(store.manifest_path):
        raise FileNotFoundError(f"{store.uri}: no manifest.json — not an ncsweep run directory")
    log_file = store.path / LOG_NAME   # on this machine (for a run directory on an object store: its scratch)
    lines = log_file.read_text().splitlines() if log_file.exists() else []
    if trial is None:
        return "\n".join(lines) if lines else f"{log_file}: empty (nothing was logged)"
    match = _matching(store, trial)
    if len(match) > 1:
        return _listing(store, trial, match)
    tid = match[0]
    rec = store.read_record(tid) or {}
    out = [f"trial {tid}: {rec.get('status')}, {rec.get('attempts', 0)} attempts, "
           f"{rec.get('epochs_done', 0)} epochs"]
    if rec.get("error"):
        out.append(f"error: {rec['error']}")
    if rec.get("traceback"):
        out.append(rec["traceback"].rstrip())
    out += _key_values("config", {k: v for k, v in (rec.get("config") or {}).items() if k != "trial_id"})
    final = dict(rec.get("final") or {})
    epoch = final.pop("epoch", None)
    out += _key_values("metrics at its latest epoch" + (f" ({epoch})" if epoch is not None else ""), final)
    mentions = [ln for ln in lines if tid in ln]
    if mentions:
        out += ["", f"{LOG_NAME} lines naming {tid}:", *mentions]
    return "\n".join(out)


def _key_values(title: str, d: dict) -> list[str]:
    """`title:` then one `  key = value` line per entry, sorted; nothing when d is empty."""
    if not d:
        return []
    width = max(len(k) for k in d)
    return ["", f"{title}:", *(f"  {k.ljust(width)} = {json.dumps(v) if isinstance(v, (dict, list)) else v}"
                               for k, v in sorted(d.items()))]


def _listing(store: RunDir, prefix: str, match: list[str]) -> str:
    """Several trials start with `prefix`: how many, and only those, one line each (status, epochs,
    swept values, the headline metric at the latest epoch)."""
    header, rows = trial_rows(store, {t: store.read_record(t) or {} for t in match})
    return (f"{len(match)} trials of {store.uri} start with {prefix!r} (give more of the id for one trial's "
            f"log):\n{aligned(header, rows)}")


SHOWN = 10    # trial ids an error message lists


def _matching(store: RunDir, prefix: str) -> list[str]:
    """The trial ids starting with `prefix` (at least one, else an error listing some of the run's ids)."""
    ids = sorted(store.record_files())
    run_dir = store.uri
    match = [t for t in ids if t.startswith(prefix)]
    if match:
        return match
    names = f"{', '.join(ids[:SHOWN]) or 'none'}{f' … ({len(ids) - SHOWN} more)' if len(ids) > SHOWN else ''}"
    raise ValueError(f"trial {prefix!r}: no trial of {run_dir} matches; its {len(ids)} trials are {names} "
                     f"(see `ncsweep status {run_dir} --trials`)")
