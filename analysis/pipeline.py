"""The analysis pipeline: run directories → trial table → every table of the report.

    res = analyse(["runs/demo"], select="best:worst_group_acc")
    res["trials"]     one row per trial (status, learned_nothing, axes, metrics at the selected epoch)
    res["tables"]     SensitivityTable per (metric, subset)
    res["arch"], res["paired"], res["nc_fair"], res["leaderboard"]
    res["curves"]     per-epoch curves split by the axis with the largest effect (analysis/curves.py)
    res["rows"]       every row of every file (read on first access only: the study sections use it)

One scan of the files (duckdb, only the needed columns); the sensitivity tables run in parallel
processes when there are many trials. No torch, no Ray.
"""
from __future__ import annotations

import os
import threading
import time
import warnings

import numpy as np
import pandas as pd

from . import vocab
from .compare import arch_summary, leaderboard, nc_vs_fairness, paired_differences
from .curves import split_curves, trial_curves
from .filters import DEFAULT_STATUS, describe_exclusions, usable
from .load import (KEY, PARALLEL_SCAN_FILES, ResultsError, ResultsWarning, Source, checksum_mismatches,
                   load, manifests, trial_records)
from .select import SPLITS, check_metrics, parse_metric, trial_table_from
from .parallel import default_workers, import_table_libraries, run_all
from .sensitivity import fit_tables, parse_interactions, table_batches

PARALLEL_FROM = 200                # trials; below this forking costs more than it saves


class Result(dict):
    """The analysis result; `result["rows"]` loads every row of every file on first use."""

    def __missing__(self, key):
        if key == "rows":
            self["rows"] = load(self["run_dirs"])
            return self["rows"]
        raise KeyError(key)


def default_metrics(columns, groups: list[str]) -> list[str]:
    """Every metric the catalogue marks as reported and that has a direction, on its primary
    split (vocab.primary_split), plus the per-subgroup columns of the catalogue's Metric.by_group metrics."""
    from nccore import catalogue

    out = []
    for m in catalogue.METRICS.values():
        if not m.reported or m.higher_is_better is None or m.scope == "trial" and m.name == "train_loss":
            continue
        if m.name not in columns or m.name == "loss":
            continue
        split = vocab.primary_split(m.name)
        out.append(f"{split}_{m.name}")
        if vocab.by_group(m.name):
            out += [f"{split}_{m.name}_g{g}" for g in groups]
    return out


def run_axes(dirs, trials: pd.DataFrame) -> tuple[list[str], str]:
    """(the axes to analyse, where they came from): the manifests' swept keys, else every catalogue axis
    that varies in the rows."""
    swept = [vocab.swept_axes(m) for m in manifests(dirs)]
    if any(s is not None for s in swept):
        keys = list(dict.fromkeys(k for s in swept if s for k in s))
        return [k for k in keys if k in trials.columns], "the run's manifest (swept keys)"
    keys = [c for c in trials.columns if vocab.is_axis(c) and c != vocab.REPLICATE
            and trials[c].astype(str).nunique() > 1]
    return keys, "catalogue axes that vary in the rows (no manifest)"


def check_axes(names, valid: list[str], what: str) -> None:
    bad = [n for n in names if n not in valid]
    if bad:
        raise ValueError(f"{what}: unknown axis {', '.join(map(repr, bad))}; this run's axes: {', '.join(valid) or 'none'}")


def analyse(run_dirs, select: str = "final", metrics: list[str] | None = None, include_status=DEFAULT_STATUS,
            correction: str = "holm", interactions: str | None = None, keep_learned_nothing: bool = False,
            workers: int | None = None, fanova: bool = True, axes: list[str] | None = None,
            rank_by: str | None = None, strict: bool = False) -> Result:
    """strict: a result file that differs from its record's checksum is an error (ResultsError),
    not a warning."""
    dirs = [run_dirs] if isinstance(run_dirs, (str, os.PathLike)) else list(run_dirs)
    records = trial_records(dirs)
    # While duckdb scans (it releases the GIL), two threads: the files' checksums (hashlib releases it
    # too) and the import of SciPy, statsmodels and scikit-learn (~1.5 CPU-s), so that table
    # workers forked later inherit them instead of each loading them. Both end before any fork.
    checked: list[str] = []
    loader = Background(import_table_libraries, lambda: checked.extend(checksum_mismatches(records)))
    src = Source(dirs, columns=None, lazy=True)
    loader.then = lambda: _checksums(checked, strict)
    try:
        return _analyse(src, dirs, records, select, metrics, include_status, correction, interactions,
                        keep_learned_nothing, workers, fanova, axes, rank_by, loader)
    finally:
        src.close()
        loader.join()           # no thread outlives the call (a no-op after the join before forking)


def _analyse(src, dirs, records, select, metrics, include_status, correction, interactions, keep_ln, workers,
             fanova, axes_override, rank_by, loader) -> Result:
    t0 = time.perf_counter()
    cols = src.available
    if metrics:
        check_metrics(metrics, cols)
    man = manifests(dirs)
    rank = rank_metric(rank_by, lead_metric(select, metrics or default_metrics(cols, []), man), cols)
    bases = {parse_metric(m)[1] for m in (metrics or default_metrics(cols, [])) + ([rank] if rank else [])}
    config = [c for c in cols if vocab.is_axis(c)] + [c for c in ("family",) if c in cols]
    every_epoch = set(vocab.curve_metrics()) | ({select.split(":", 1)[1].removeprefix("val_")}
                                               if select.startswith("best:") else set())
    metric_cols = sorted({c for c in bases if vocab.is_metric(c)} | {"acc", vocab.MAJORITY} | every_epoch)
    if len(src.files) >= PARALLEL_SCAN_FILES:
        loader.join()           # that scan forks processes: no thread may run then
    src.materialise(config + metric_cols + list(vocab.row_columns("host")), every_epoch=sorted(every_epoch))
    groups = sorted(g for g in src.groups() if g != "all")
    wanted = list(metrics) if metrics else default_metrics(cols, groups)
    trials = trial_table_from(src, records, select, list(dict.fromkeys(wanted + ([rank] if rank else []))), config,
                              vocab.MAJORITY)
    trials = trials.sort_values("trial_id", kind="stable", ignore_index=True)   # not the scan's order: it varies
    if rank in trials and rank not in wanted + ["val_acc", f"val_{vocab.MAJORITY}"]:   # for the leaderboard only: last
        trials = trials[[c for c in trials if c != rank] + [rank]]
    axes, axes_from = run_axes(dirs, trials)
    if axes_override:
        check_axes(axes_override, axes, "--axes")
        axes = list(axes_override)
    pairs = parse_interactions(interactions, axes)
    present = [m for m in wanted if m in trials and np.isfinite(trials[m].astype(float)).any()]
    n = len(trials)
    workers = workers or (default_workers() if n >= PARALLEL_FROM else 1)
    kw = dict(axes=axes, interactions=pairs, correction=correction, include_status=tuple(include_status),
              keep_learned_nothing=keep_ln, fanova=fanova)
    per_trial_curves = trial_curves(src)
    scan = {"hosts": src.hosts(), "n_rows": src.n_rows(), "n_files": len(src.files)}
    src.close()             # before forking the table workers
    t1 = time.perf_counter()
    used, excluded = usable(trials, include_status, keep_ln)
    has_arch = "arch" in used and used["arch"].nunique() > 1
    gap = next((m for m in present if m.endswith("_gap")), None)
    lead = lead_metric(select, present, man)
    empty = (pd.DataFrame, (), {})
    side = {"arch": (arch_summary, (used, present, axes), {}) if has_arch else empty,
            "paired": (paired_differences, (used, present, axes), {}) if has_arch else empty,
            "nc_fair": (nc_vs_fairness, (used, gap, axes), {}) if gap else empty,
            "leaderboard": (leaderboard, (used, lead, axes), {"rank_by": rank}) if lead else empty}
    batches = [(fit_tables, (trials, ms, s), kw) for ms, s in table_batches(trials, present)]  # a job per subset
    jobs = batches + list(side.values())
    loader.join()
    out = run_all(jobs, workers)
    tables = [t for batch in out[:len(batches)] for t in batch]
    res = Result(run_dirs=dirs, trials=trials, used=used, excluded=excluded, metrics=present, requested=wanted,
                 select=select, tables=tables, axes=axes, axes_from=axes_from, interactions=pairs,
                 correction=correction, include_status=tuple(include_status), records=records, manifests=man,
                 lead_metric=lead, rank_by=rank, **scan, **dict(zip(side, out[len(batches):])))
    note = describe_exclusions(excluded)
    for k in ("arch", "paired", "nc_fair", "leaderboard"):
        if not res[k].empty:
            res[k] = res[k].assign(excluded=note)
    res["curves"] = split_curves(per_trial_curves, used, tables)
    res["timings"] = {"load_s": t1 - t0, "tables_s": time.perf_counter() - t1}
    return res


class Background:
    """Functions run in threads; `join()` waits for them, then calls `then()` (once)."""

    def __init__(self, *fns):
        self.threads = [threading.Thread(target=f, daemon=True) for f in fns]
        self.then = lambda: None
        for t in self.threads:
            t.start()

    def join(self) -> None:
        for t in self.threads:
            t.join()
        then, self.then = self.then, (lambda: None)
        then()


def _checksums(bad: list[str], strict: bool) -> None:
    if bad:
        what = (f"{len(bad)} result file(s) differ from the checksum in their trial record (changed or damaged "
                f"since the trial finished; `ncsweep verify DIR` says more): {'; '.join(bad)}")
        if strict:
            raise ResultsError(what)
        warnings.warn(what + "; analysed as they are", ResultsWarning, stacklevel=4)


def lead_metric(select: str, present: list[str], manifests_: list[dict] = ()) -> str | None:
    """The leaderboard's metric: the test-split twin of a best:<metric> rule, else of the spec's
    search metric, else the first metric present."""
    names = [select.split(":", 1)[1]] if select.startswith("best:") else []
    names += [((m.get("spec") or {}).get("search") or {}).get("metric") or "" for m in manifests_]
    for n in names:
        base = n.split("_", 1)[1] if n.split("_", 1)[0] in SPLITS else n
        if f"test_{base}" in present:
            return f"test_{base}"
    return present[0] if present else None


def rank_metric(rank_by: str | None, lead: str | None, columns) -> str | None:
    """The metric the leaderboard ranks configurations on: `rank_by` (`worst_group_acc` means
    val_worst_group_acc), else the validation twin of the lead metric (DomainBed: select on
    validation, report test), else the lead metric itself when the rows hold no validation twin."""
    if rank_by:
        name = rank_by if rank_by.split("_", 1)[0] in SPLITS else f"val_{rank_by}"
        try:
            check_metrics([name], columns)
        except ValueError as e:
            raise ValueError(str(e).replace("--metrics", "--rank-by", 1)) from None
        return name
    if not lead:
        return None
    split, col, _ = parse_metric(lead)
    return f"val_{lead.split('_', 1)[1]}" if split != "val" and "val" in vocab.metric_splits(col) else lead


__all__ = ["analyse", "Result", "default_metrics", "KEY", "SPLITS"]
