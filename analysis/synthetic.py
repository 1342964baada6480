"""Synthetic run directories with planted effects (known truth) for tests and benchmarks.

    trials = grid(arch=["resnet18", "vgg11"], lr=[1e-3, 1e-2, 1e-1], bias_level=[0.0, 0.5, 0.9], seeds=3)
    write_run(tmp / "run", trials, epochs=3)

Each trial's rows follow the planted model `truth(trial)` (test worst-group accuracy
= 0.85 − 0.4·bias_level + 0.05·log10(lr) + ARCH_OFFSET[arch] at the last epoch, approached
linearly over epochs) plus Gaussian noise: a per-configuration term (`config_sd`, shared by the
seeds of a configuration) and a per-trial term (`noise_sd`). A trial dict may set
`status` (completed / stopped / failed / oom / diverged), `stop_at` (last epoch written),
`diverge_at`, `learned_nothing` (accuracy = majority rate), `wga` (a fixed worst-group accuracy)
and `error` (the record's error text). Layout and records follow `sweeps/store.py`.
"""
from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sweeps import layout

ARCH_OFFSET = {"resnet18": 0.0, "vgg11": -0.08, "densenet121": 0.04}
FAMILY = {"resnet18": "resnet", "vgg11": "vgg", "densenet121": "densenet"}
GROUPS = ("all", "0", "1")
MAJORITY = 0.5


def grid(seeds: int = 3, **axes) -> list[dict]:
    """Every combination of the axes' values × seeds, each a trial dict with a trial_id."""
    keys = list(axes)
    out = []
    for vals in itertools.product(*axes.values()):
        for s in range(seeds):
            cfg = dict(zip(keys, vals), seed=s)
            cfg["trial_id"] = "t" + "-".join(f"{v}" for v in vals) + f"-s{s}"
            out.append(cfg)
    return out


def truth(t: dict) -> float:
    """The planted final test worst-group accuracy of trial t (before noise)."""
    return (0.85 - 0.4 * float(t.get("bias_level", 0.0)) + 0.05 * math.log10(float(t.get("lr", 0.1)))
            + ARCH_OFFSET.get(t.get("arch", "resnet18"), 0.0) + float(t.get("offset", 0.0)))


def _rows(t: dict, epoch: int, epochs: int, rng, cfg_noise: float, noise_sd: float) -> list[dict]:
    frac = (epoch + 1) / epochs
    wga = t["wga"] if "wga" in t else truth(t) * frac + cfg_noise + rng.normal(0, noise_sd)
    acc = MAJORITY if t.get("learned_nothing") else min(0.99, 0.62 + 0.3 * wga)
    nc1 = math.exp(-2 * frac) * (1 + float(t.get("bias_level", 0.0))) + abs(rng.normal(0, 0.02))
    fixed = {k: v for k, v in t.items() if k not in ("status", "stop_at", "diverge_at", "learned_nothing", "wga",
                                                        "error", "offset", "attempt", "written_at")}
    fixed.update(family=FAMILY.get(t.get("arch"), "other"), method=t.get("method", "erm"),
                 dataset="biased_shapes", epoch=epoch, attempt=t.get("attempt", 1), hostname="synthhost",
                 device="cpu", torch_version="0.0-synthetic")
    if t.get("diverge_at") is not None and epoch == t["diverge_at"]:
        return [{**fixed, "split": "train", "group": "all", "status": "diverged", "train_loss": float("nan")}]
    rows = []
    for split in ("train", "val", "test"):
        for g in GROUPS:
            r = {**fixed, "split": split, "group": g, "status": "ok", "n": 100,
                 "acc": acc + (0.0 if g == "all" else (0.03 if g == "0" else -0.03)),
                 "nc1": nc1 * (1.0 if g == "all" else (0.9 if g == "0" else 1.1)), "train_loss": 1 - frac}
            if g == "all":
                r.update(worst_group_acc=wga if split == "test" else wga + 0.02, gap=0.2 * float(t.get("bias_level", 0)),
                         majority_acc=MAJORITY, loss=1.0 - acc)
            rows.append(r)
    return rows


def _table(rows: list[dict]) -> pa.Table:
    names = list(dict.fromkeys(k for r in rows for k in r))
    cols = {}
    for k in names:
        vals = [r.get(k) for r in rows]
        if k in ("epoch", "seed", "attempt", "n"):
            cols[k] = pa.array([None if v is None else int(v) for v in vals], pa.int64())
        elif all(v is None or isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            cols[k] = pa.array([None if v is None else float(v) for v in vals], pa.float64())
        else:
            cols[k] = pa.array([None if v is None else str(v) for v in vals], pa.string())
    return pa.table(cols)


def write_run(root, trials: list[dict], epochs: int = 3, per_epoch: bool = False, seed: int = 0,
              noise_sd: float = 0.02, config_sd: float = 0.0, name: str = "synthetic", swept=None,
              records: bool = True) -> Path:
    """Write a run directory (rows, trial records, manifest) for `trials`; returns its path."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    cfg_noise: dict = {}
    for t in trials:
        tid = t["trial_id"]
        key = tuple(sorted((k, str(v)) for k, v in t.items() if k not in ("seed", "trial_id")))
        cn = cfg_noise.setdefault(key, rng.normal(0, config_sd) if config_sd else 0.0)
        last = t.get("stop_at", epochs - 1)
        if t.get("diverge_at") is not None:
            last = t["diverge_at"]
        if t.get("status") in ("failed", "oom") and "stop_at" not in t:
            last = -1
        d = root / "rows" / tid
        d.mkdir(parents=True, exist_ok=True)
        tables = [_table(_rows(t, e, epochs, rng, cn, noise_sd)) for e in range(last + 1)]
        if per_epoch:
            for e, tb in enumerate(tables):
                pq.write_table(tb, d / layout.epoch_file(e))
        elif tables:
            pq.write_table(pa.concat_tables(tables, promote_options="default"), d / layout.MERGED)
        if "written_at" in t:
            for f in d.glob("*.parquet"):
                os.utime(f, (t["written_at"], t["written_at"]))
        if records:
            rec = {"trial_id": tid, "status": t.get("status", "completed"), "attempts": t.get("attempt", 1),
                   "config": {k: v for k, v in t.items() if k in ("arch", "lr", "bias_level", "seed", "weight_decay",
                                                                   "method", "penalty")},
                   "error": t.get("error"), "updated_at": t.get("written_at", 1.0e9), "epochs_done": last + 1}
            (root / "trials").mkdir(parents=True, exist_ok=True)
            (root / "trials" / f"{tid}.json").write_text(json.dumps(rec))
    keys = swept or [k for k in trials[0] if k not in ("trial_id", "status", "stop_at", "diverge_at", "learned_nothing",
                                                         "wga", "error", "offset", "attempt", "written_at")]
    space = {k: {"grid": sorted({t[k] for t in trials if k in t}, key=str)} for k in keys}
    manifest = {"name": name, "digest": "synthetic", "spec": {"name": name, "space": space,
                                                              "base": {"epochs": epochs}}, "planned_count": len(trials)}
    (root / layout.MANIFEST).write_text(json.dumps(manifest))
    return root
