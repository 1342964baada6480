"""Analysis time and memory for 10^6 synthetic result rows: write a run directory like a sweep's,
then run the whole analysis (`analysis.pipeline.analyse`: one duckdb scan, epoch selection, trial
table, every sensitivity table in parallel processes, architecture comparisons, correlations).

    PYTHONPATH=. python bench/analysis_speed.py                      # 2000 trials × 50 epochs × 10 rows, compacted
    PYTHONPATH=. python bench/analysis_speed.py --per-epoch          # one file per (trial, epoch): 10^5 files
    PYTHONPATH=. python bench/analysis_speed.py --dir /tmp/x --keep  # reuse / keep the written run directory
    PYTHONPATH=. python bench/analysis_speed.py --per-epoch --wide 86 # rows as wide as the runner's (catalogue metrics added)
    PYTHONPATH=. python bench/analysis_speed.py --wide 86 --dir /tmp/x --timeline   # wall and CPU per stage
    PYTHONPATH=. python bench/analysis_speed.py --wide 86 --seeds 5  # 400 configurations × 5 seeds

The last line printed is one JSON object: {rows, files, load_s, tables_s, total_s, peak_rss_mb, cpu_s,
cli_analyze_s, status_s} (peak RSS of this process plus its largest child, in MB; cpu_s: CPU seconds
of the analysis in this process and its workers — on a shared machine a steadier figure than wall
time; cli_analyze_s: wall seconds of `ncsweep analyze DIR` in a fresh process, imports and written
tables included; status_s: wall seconds of `ncsweep status DIR` in a fresh process, after the trial
records a sweep keeps are written — completed trials with row counts and checksums for the
compacted layout, running trials with per-epoch row counts for the per-epoch one).

Files are written as the runner writes them (`sweeps.store`): epoch files with
`EPOCH_FILE_OPTIONS`, merged trial files with pyarrow's defaults.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sweeps.store import EPOCH_FILE_OPTIONS

GROUPS = [("train", "all"), ("train", "0"), ("train", "1"), ("val", "all"), ("val", "0"), ("val", "1"),
          ("test", "all"), ("test", "0"), ("test", "1"), ("test", "2")]


def extra_metrics(wide: int) -> list[str]:
    """Catalogue metric names to add as columns until a row has `wide` columns (0: none) — rows the
    runner writes for an ERM trial have ~86 columns, the bench's own 16."""
    from nccore.catalogue import METRICS

    have = {"acc", "majority_acc", "nc1", "gap", "worst_group_acc", "train_loss"}
    names = [m for m in METRICS if m not in have and "panel" not in m]
    return names[:max(0, wide - 16)]


def write_run(root: Path, trials: int, epochs: int, per_epoch: bool, seed: int = 0, wide: int = 0,
              seeds: int = 1) -> int:
    """One file per trial, as a finished sweep leaves them (the runner compacts each finished
    trial), or with per_epoch one file per (trial, epoch), as a sweep in progress has them.
    seeds: trials per configuration (1: every trial its own configuration, its seed t % 5; more:
    trial t runs configuration t // seeds with seed t % seeds, so per-architecture tables are fitted)."""
    rng = np.random.default_rng(seed)
    extra = extra_metrics(wide)
    archs = np.array(["resnet18", "vgg11", "densenet121"])
    configs: dict[int, tuple] = {}
    n = 0
    for t in range(trials):
        arch, lr = archs[t % 3], float(10 ** rng.uniform(-3, -1))
        wd, bias = float(10 ** rng.uniform(-5, -3)), float(rng.choice([0.0, 0.5, 0.9]))
        if seeds > 1:
            arch, lr, wd, bias = configs.setdefault(t // seeds, (archs[(t // seeds) % 3], lr, wd, bias))
        replicate = t % seeds if seeds > 1 else t % 5
        d = root / "rows" / f"t{t:05d}"
        d.mkdir(parents=True)
        parts = []
        for e in range(epochs):
            k = len(GROUPS)
            base = 0.3 * np.log10(lr) - 0.3 * bias + e / epochs
            table = pa.table({
                "trial_id": [f"t{t:05d}"] * k, "epoch": pa.array([e] * k, pa.int64()),
                "split": [s for s, _ in GROUPS], "group": [g for _, g in GROUPS], "status": ["ok"] * k,
                "attempt": pa.array([1] * k, pa.int64()), "arch": [arch] * k, "lr": [lr] * k, "weight_decay": [wd] * k,
                "bias_level": [bias] * k, "seed": pa.array([replicate] * k, pa.int64()),
                "worst_group_acc": base + rng.normal(0, 0.1, k), "acc": 0.7 + 0.2 * base + rng.normal(0, 0.02, k),
                "majority_acc": [0.5] * k, "nc1": np.exp(-base) + rng.normal(0, 0.1, k), "gap": rng.normal(0, 0.1, k),
                **{m: rng.normal(0, 1, k) for m in extra}})
            if per_epoch:
                pq.write_table(table, d / f"epoch-{e:04d}.parquet", **EPOCH_FILE_OPTIONS)
            parts.append(table)
            n += k
        if not per_epoch:
            pq.write_table(pa.concat_tables(parts), d / "trial.parquet")
    space = {"arch": {"grid": list(archs)}, "lr": {"loguniform": [1e-3, 1e-1]},
             "weight_decay": {"loguniform": [1e-5, 1e-3]}, "bias_level": {"choice": [0.0, 0.5, 0.9]}}
    (root / "manifest.json").write_text(json.dumps({"name": "bench", "spec": {"name": "bench", "space": space}}))
    return n


def write_records(root: Path, epochs: int, per_epoch: bool) -> None:
    """The trial records a sweep keeps beside its rows: running trials with each epoch's row count
    (per-epoch layout), or completed trials with their merged file's row count and SHA-256."""
    (root / "trials").mkdir(exist_ok=True)
    trials = sorted(p.name for p in (root / "rows").iterdir())
    for tid in trials:
        rec = {"trial_id": tid, "epochs_done": epochs, "attempts": 1, "config": {"epochs": epochs}}
        if per_epoch:
            rec.update(status="running", rows_by_epoch={str(e): len(GROUPS) for e in range(epochs)})
        else:
            merged = root / "rows" / tid / "trial.parquet"
            rec.update(status="completed", rows=epochs * len(GROUPS),
                       rows_sha256=hashlib.sha256(merged.read_bytes()).hexdigest())
        (root / "trials" / f"{tid}.json").write_text(json.dumps(rec))
    m = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**m, "planned_count": len(trials)}))


def cli_wall_s(*args: str) -> float:
    """Wall seconds of `ncsweep ARGS` in a fresh Python process (imports included)."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sweeps.cli", *args], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    return time.perf_counter() - t


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + child) / 1024      # Linux reports KiB; children: the largest one


def cpu_s() -> float:
    """User + system CPU seconds of this process and its (finished) children."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def timeline(root: Path) -> None:
    """`--timeline`: wall and CPU seconds (this process and its finished children) at the start and
    end of each stage of one analysis and of writing its tables — where the time goes."""
    import functools

    import analysis.pipeline as pipeline
    import analysis.report as report

    load = sys.modules["analysis.load"]
    t0, c0 = time.perf_counter(), cpu_s()

    def mark(label: str) -> None:
        print(f"# {time.perf_counter() - t0:6.2f}s wall {cpu_s() - c0:6.2f}s cpu  {label}", flush=True)

    def wrap(owner, name: str) -> None:
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def timed(*a, **k):
            mark(f"start {name}")
            try:
                return fn(*a, **k)
            finally:
                mark(f"end {name}")
        setattr(owner, name, timed)

    for name in ("trial_records", "trial_table_from", "trial_curves", "run_all", "split_curves"):
        wrap(pipeline, name)
    wrap(load.Source, "materialise")
    wrap(load, "schema_names")
    res = pipeline.analyse(root, select="best:worst_group_acc")
    mark("analysed")
    out = Path(tempfile.mkdtemp(prefix="ncsweep-tables-"))
    report.write_tables(res, out)
    mark("tables written")
    shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--per-epoch", action="store_true", help="one file per (trial, epoch): a sweep in progress")
    p.add_argument("--wide", type=int, default=0, help="columns per row, catalogue metrics added (86: as the runner writes)")
    p.add_argument("--seeds", type=int, default=1,
                   help="trials per configuration (default 1; e.g. 5: per-architecture tables are fitted)")
    p.add_argument("--dir", help="run directory to write (or reuse, if it holds rows already)")
    p.add_argument("--keep", action="store_true", help="keep the run directory")
    p.add_argument("--timeline", action="store_true", help="print wall and CPU seconds at each stage, then exit")
    args = p.parse_args()
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="ncsweep-bench-"))
    try:
        if not (root / "rows").exists():
            t = time.perf_counter()
            write_run(root, args.trials, args.epochs, args.per_epoch, wide=args.wide, seeds=args.seeds)
            os.sync()    # flush the written files now: the kernel's writeback would otherwise run during the timing
            print(f"# wrote {root} in {time.perf_counter() - t:.0f}s", flush=True)
        per_epoch = not (root / "rows" / "t00000" / "trial.parquet").exists()
        shutil.rmtree(root / "trials", ignore_errors=True)
        if not per_epoch:        # a finished sweep: completed trials' records, read by the analysis
            write_records(root, args.epochs, per_epoch)
        if args.timeline:
            timeline(root)
            return
        from analysis.pipeline import analyse

        t0, c0 = time.perf_counter(), cpu_s()
        res = analyse(root, select="best:worst_group_acc")
        total, cpu = time.perf_counter() - t0, cpu_s() - c0
        tm = res["timings"]
        print(f"# {len(res['trials'])} trials, {len(res['tables'])} sensitivity tables, metrics {res['metrics']}")
        out = {"rows": res["n_rows"], "files": res["n_files"], "load_s": round(tm["load_s"], 2),
               "tables_s": round(tm["tables_s"], 2), "total_s": round(total, 2),
               "peak_rss_mb": round(peak_rss_mb(), 1), "cpu_s": round(cpu, 2)}
        out["cli_analyze_s"] = round(cli_wall_s("analyze", str(root), "--select", "best:worst_group_acc"), 2)
        if per_epoch:            # a sweep in progress: running trials' records (the analysis would leave them out)
            write_records(root, args.epochs, per_epoch)
        out["status_s"] = round(cli_wall_s("status", str(root)), 2)
        print(json.dumps(out))
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
