"""Analysis time for 10^6 synthetic result rows: write a run directory like a sweep's (one Parquet
file per trial × epoch), then time load → epoch selection → trial table → sensitivity tables.

    PYTHONPATH=. python bench/analysis_speed.py [--trials 2000 --epochs 50]   # 2000×50×10 = 10^6 rows
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.load import load
from analysis.select import select_epochs, trial_table
from analysis.sensitivity import sensitivity_tables

GROUPS = [("train", "all"), ("train", "0"), ("train", "1"), ("val", "all"), ("val", "0"), ("val", "1"),
          ("test", "all"), ("test", "0"), ("test", "1"), ("test", "2")]


def write_run(root: Path, trials: int, epochs: int, per_epoch: bool, seed: int = 0) -> int:
    """One file per trial, as a finished sweep leaves them (the runner compacts each finished
    trial), or with per_epoch one file per (trial, epoch), as a sweep in progress has them."""
    rng = np.random.default_rng(seed)
    archs = np.array(["resnet18", "vgg11", "densenet121"])
    n = 0
    for t in range(trials):
        arch, lr = archs[t % 3], float(10 ** rng.uniform(-3, -1))
        wd, bias = float(10 ** rng.uniform(-5, -3)), float(rng.choice([0.0, 0.5, 0.9]))
        d = root / "rows" / f"t{t:05d}"
        d.mkdir(parents=True)
        parts = []
        for e in range(epochs):
            k = len(GROUPS)
            base = 2 * np.log10(lr) - bias + e / epochs
            table = pa.table({
                "trial_id": [f"t{t:05d}"] * k, "epoch": pa.array([e] * k, pa.int64()),
                "split": [s for s, _ in GROUPS], "group": [g for _, g in GROUPS], "status": ["ok"] * k,
                "attempt": pa.array([1] * k, pa.int64()), "arch": [arch] * k, "lr": [lr] * k, "weight_decay": [wd] * k,
                "bias_level": [bias] * k, "seed": pa.array([t % 5] * k, pa.int64()),
                "worst_group_acc": base + rng.normal(0, 0.1, k), "acc": base + rng.normal(0, 0.1, k),
                "nc1": np.exp(-base) + rng.normal(0, 0.1, k), "gap": rng.normal(0, 0.1, k)})
            if per_epoch:
                pq.write_table(table, d / f"epoch-{e:04d}.parquet")
            parts.append(table)
            n += k
        if not per_epoch:
            pq.write_table(pa.concat_tables(parts), d / "trial.parquet")
    return n


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--per-epoch", action="store_true", help="one file per (trial, epoch): a sweep in progress")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        n = write_run(root, args.trials, args.epochs, args.per_epoch)
        files = args.trials * (args.epochs if args.per_epoch else 1)
        print(f"# analysis speed: {n} rows in {files} files (written in {time.perf_counter() - t:.0f}s)")
        t0 = time.perf_counter()
        df = load(root)
        t1 = time.perf_counter()
        sel = select_epochs(df, "best:worst_group_acc")
        trials = trial_table(sel, ["test_worst_group_acc", "test_nc1", "train_nc1_g1", "test_gap"])
        t2 = time.perf_counter()
        tables = sensitivity_tables(trials, ["test_worst_group_acc", "test_nc1", "train_nc1_g1", "test_gap"])
        t3 = time.perf_counter()
        print(f"load {t1 - t0:.1f}s ({len(df)} rows), select+trial table {t2 - t1:.1f}s, "
              f"{len(tables)} sensitivity tables {t3 - t2:.1f}s, total {t3 - t0:.1f}s")


if __name__ == "__main__":
    main()
