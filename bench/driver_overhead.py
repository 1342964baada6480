"""Driver overhead per configuration, unpacked vs packed (`pack: k`, sequential units), measured in
one run: N trivial configurations (vgg11, width 1/16, 8x8 images, 64 training images, 1 epoch, a
seed grid), `max_concurrent` 2, each mode in a fresh driver process.

    .venv/bin/python bench/driver_overhead.py [--n 300 --pack 15 --concurrent 2 --modes unpacked,packed]

Per mode it prints:
  overhead_s  per configuration: (sweep wall − Ray start) × concurrent / N − mean run_trial time,
              i.e. what a configuration costs beyond its own training and evaluation (run_trial_s is
              each record's time inside nccore's iter_epochs, rows and checkpoint writes excluded);
              it includes the fixed costs of a sweep (Tune's setup, the worker processes' start,
              Ray's shutdown: ~8–10 s on busy cores, i.e. 0.055–0.065 s per configuration at N=300);
  steady      the same from the first configuration's start to the last one's end (records'
              started_at and wall_s): the cost per configuration once the workers run;
  rss_mb      the driver process's peak resident memory (ru_maxrss; Ray's own processes and the
              trial workers are separate processes and not counted);
  fixed       where the rest goes: Ray start; from `run_sweep` to the first configuration's start
              (spec checks, Tune's set-up, the worker processes' start and imports); from the last
              configuration's end to `run_sweep`'s return (settling, Ray's shutdown, trials.parquet);
  in_train    per configuration, the worker's own cost inside `sweeps.worker.train` beyond
              run_trial (its epoch files and record writes; records' overhead_s — a lone
              configuration's end is written with its last epoch, after wall_s is taken, so that
              write counts as idle time below);
  idle        a worker process's time between the end of one configuration and the start of its
              next (the records' pid, started_at, wall_s): inside a packed unit, and from one Tune
              trial to the next (Tune's per-trial cost; unpacked, every configuration pays it).
The last line compares the modes: packed ÷ unpacked overhead, and each against the goal (0.1 s).
Not a CI test: on 2 shared cores the figures move by ±30% between runs; compare modes of one run.
Records section "driver_overhead" in bench/cpu_results.json (or gpu_results.json) with --record.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_S = 0.1   # issue 30 item 7: overhead per configuration

CHILD = r"""
import json, os, resource, sys, time
from sweeps.driver import run_sweep
from sweeps.spec import parse_spec
from sweeps.store import RunDir
n, pack, conc, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
raw = {"name": "overhead", "dataset": {"name": "biased_shapes",
                                       "options": {"n_train": 64, "n_val": 32, "n_test": 32, "image_size": 8}},
       "base": {"arch": "vgg11", "width": 0.0625, "epochs": 1, "batch_size": 32},
       "space": {"seed": {"grid": list(range(n))}}, "max_concurrent": conc, "resources": {"cpu": 1, "gpu": 0}}
if pack:
    raw["pack"] = pack
called = time.time()
s = run_sweep(parse_spec(raw), out, quiet=True)
returned = time.time()
recs = [r for r in RunDir(out).records().values() if "wall_s" in r]
first, last = min(r["started_at"] for r in recs), max(r["started_at"] + r["wall_s"] for r in recs)
gaps = {"within": [], "change": []}   # idle time of a worker process between two configurations it ran
by_pid = {}
for r in recs:
    by_pid.setdefault(r.get("pid"), []).append(r)
for rs in by_pid.values():
    rs.sort(key=lambda r: r["started_at"])
    for a, b in zip(rs, rs[1:]):
        same = a.get("packed_in") is not None and a.get("packed_in") == b.get("packed_in")
        gaps["within" if same else "change"].append(b["started_at"] - a["started_at"] - a["wall_s"])
mean = lambda xs: sum(xs) / len(xs) if xs else None
print(json.dumps({"span_s": last - first, "wall_s": s["wall_s"], "ray_init_s": s["ray_init_s"],
                  "finished": s["finished"], "mean_run_trial_s": s["mean_run_trial_s"], "counts": s["counts"],
                  "before_first_s": first - called - s["ray_init_s"], "after_last_s": returned - last,
                  "in_train_s": sum(r["overhead_s"] for r in recs) / len(recs),
                  "gap_within_unit_s": mean(gaps["within"]), "gap_unit_change_s": mean(gaps["change"]),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(n: int, pack: int, concurrent: int) -> dict:
    """One sweep in a fresh driver process; its figures."""
    with tempfile.TemporaryDirectory(prefix="ncsweep-overhead-") as tmp:
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-c", CHILD, str(n), str(pack), str(concurrent), f"{tmp}/run"],
                           cwd=ROOT, env=env, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"driver exited {p.returncode}:\n{p.stderr[-3000:]}")
        out = json.loads(p.stdout.strip().splitlines()[-1])
    out["process_s"] = time.perf_counter() - t
    busy = out["wall_s"] - out["ray_init_s"]
    out["overhead_s"] = busy * concurrent / n - (out["mean_run_trial_s"] or 0.0)
    out["steady_overhead_s"] = out["span_s"] * concurrent / n - (out["mean_run_trial_s"] or 0.0)
    return out


def _s(x) -> str:
    return "-" if x is None else f"{x:.3f} s"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--pack", type=int, default=15, help="k of the packed mode")
    ap.add_argument("--concurrent", type=int, default=2)
    ap.add_argument("--modes", default="unpacked,packed")
    ap.add_argument("--record", action="store_true", help="write bench/*_results.json section driver_overhead")
    a = ap.parse_args(argv)
    print(f"# driver overhead: {a.n} trivial configurations, {a.concurrent} at a time; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    results = {}
    for mode in a.modes.split(","):
        r = measure(a.n, a.pack if mode == "packed" else 0, a.concurrent)
        results[mode] = {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
        print(f"{mode:9s} pack={a.pack if mode == 'packed' else 0:<3d} overhead/config {r['overhead_s']:.3f} s "
              f"(steady {r['steady_overhead_s']:.3f} s) · "
              f"run_trial {r['mean_run_trial_s'] or 0:.3f} s · sweep {r['wall_s']:.1f} s (Ray start "
              f"{r['ray_init_s']:.1f} s) · driver peak RSS {r['rss_mb']:.0f} MB · {r['counts']}\n"
              f"{'':9s} fixed: Ray start {r['ray_init_s']:.1f} s, to the first configuration "
              f"{r['before_first_s']:.1f} s, after the last {r['after_last_s']:.1f} s · in_train "
              f"{r['in_train_s']:.3f} s/config · a worker idle between two configurations "
              f"{_s(r['gap_within_unit_s'])} in a unit, {_s(r['gap_unit_change_s'])} from one Tune trial to the next",
              flush=True)
    if {"unpacked", "packed"} <= set(results):
        u, p = results["unpacked"], results["packed"]
        print(f"ratios: packed/unpacked overhead {p['overhead_s'] / u['overhead_s']:.2f} "
              f"(steady {p['steady_overhead_s'] / u['steady_overhead_s']:.2f}); overhead/goal {GOAL_S} s: "
              f"unpacked {u['overhead_s'] / GOAL_S:.2f}, packed {p['overhead_s'] / GOAL_S:.2f}")
    if a.record:
        sys.path.insert(0, str(ROOT))
        from bench.common import record

        record("driver_overhead", results, {"n": a.n, "pack": a.pack, "concurrent": a.concurrent})


if __name__ == "__main__":
    main()
