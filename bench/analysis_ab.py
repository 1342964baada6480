"""Interleaved A/B runs of `ncsweep analyze` on one run directory: the code of a git commit (A,
"before") against the working tree (B, "after"), with CPU seconds per stage.

    PYTHONPATH=. python bench/analysis_ab.py DIR --before COMMIT [--rounds 3] [--stages]

DIR is a run directory `bench/analysis_speed.py --wide 86 --dir DIR --keep` wrote (10^6 rows in
2000 compacted files at runner width). Each round runs A then B (then B then A in the next round,
so that neither always goes first on a machine whose speed drifts):
- `ncsweep analyze DIR --select best:worst_group_acc` in a fresh process: CPU seconds (user +
  system of the process and every worker it waited for: the main measure on a shared machine),
  wall seconds and peak RSS (the parent and its largest worker, added: both can be alive at once);
- with `--stages`, one in-process analysis (`stages`: one table worker, so every stage's CPU is
  counted where it runs; the scan's figure includes the threads that run beside it: checksums and
  library imports) with CPU seconds per stage: the scan, epoch selection, curves, each kind of
  table job, and writing the tables as CSV, Parquet and LaTeX.
A's code is `git archive COMMIT` unpacked in a temporary folder and put first on PYTHONPATH. The
last line printed is one JSON object: medians per side and the ratios B / A.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SELECT = "best:worst_group_acc"


def checkout(commit: str) -> Path:
    """The packages of `commit`, unpacked into a temporary folder."""
    where = Path(tempfile.mkdtemp(prefix="ncsweep-ab-"))
    files = subprocess.run(["git", "archive", commit, "analysis", "sweeps", "nccore"], cwd=ROOT, check=True,
                           capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=files, check=True)
    return where


def timed(cmd: list[str], code: Path) -> dict:
    """Run cmd with `code` first on PYTHONPATH; CPU s of its process tree, wall s, peak RSS (MB)."""
    env = {**os.environ, "PYTHONPATH": f"{code}{os.pathsep}{ROOT}", "RAY_AUTH_MODE": "disabled"}
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=code, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    line = out.strip().splitlines()[-1] if out.strip() else "{}"
    return {"wall_s": wall, **(json.loads(line) if line.startswith("{") else {})}


def cli(run: Path, code: Path, out: Path) -> dict:
    """`ncsweep analyze` through the stage script's `--cli` mode (it measures its own process tree)."""
    return timed([sys.executable, str(ROOT / "bench" / "analysis_stages.py"), "--cli", str(run), "--out", str(out)],
                 code)


def stages(run: Path, code: Path, out: Path) -> dict:
    return timed([sys.executable, str(ROOT / "bench" / "analysis_stages.py"), str(run), "--out", str(out)], code)


def median(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if key in r]
    return round(statistics.median(vals), 3) if vals else float("nan")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--before", required=True, help="git commit whose code is A")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--stages", action="store_true", help="also one in-process analysis per side with CPU per stage")
    args = p.parse_args()
    run = Path(args.dir)
    a_code = checkout(args.before)
    sides = {"A": a_code, "B": ROOT}
    res: dict[str, dict[str, list]] = {s: {"cli": [], "stages": []} for s in sides}
    scratch = Path(tempfile.mkdtemp(prefix="ncsweep-ab-out-"))
    try:
        for r in range(args.rounds):
            for side in (("A", "B") if r % 2 == 0 else ("B", "A")):
                c = cli(run, sides[side], scratch / f"{side}{r}")
                res[side]["cli"].append(c)
                print(f"# round {r} {side} cli: {c['cpu_s']:.2f} CPU-s, {c['wall_s']:.2f} s wall, "
                      f"{c['peak_rss_mb']:.0f} MB", flush=True)
                if args.stages:
                    s = stages(run, sides[side], scratch / f"{side}{r}s")
                    res[side]["stages"].append(s)
                    print(f"# round {r} {side} stages: " + ", ".join(f"{k} {v:.2f}" for k, v in s["stages"].items()),
                          flush=True)
        summary = {}
        for side in sides:
            cl = res[side]["cli"]
            summary[side] = {"cpu_s": median(cl, "cpu_s"), "wall_s_best": round(min(c["wall_s"] for c in cl), 2),
                             "wall_s": median(cl, "wall_s"), "peak_rss_mb": median(cl, "peak_rss_mb")}
            if res[side]["stages"]:
                names = dict.fromkeys(k for s in res[side]["stages"] for k in s["stages"])
                summary[side]["stages"] = {k: round(statistics.median(s["stages"].get(k, 0.0) for s in
                                                                      res[side]["stages"]), 3) for k in names}
        a, b = summary["A"], summary["B"]
        ratios = {k: round(b[k] / a[k], 3) for k in ("cpu_s", "wall_s_best", "wall_s", "peak_rss_mb") if a[k]}
        if "stages" in a:
            ratios["stages"] = {k: round(b["stages"].get(k, 0.0) / v, 3) if v else None for k, v in a["stages"].items()}
            print("# stage                       A CPU-s   B CPU-s   B/A")
            for k, v in a["stages"].items():
                w = b["stages"].get(k, 0.0)
                print(f"# {k:28s} {v:8.3f}  {w:8.3f}  {w / v if v else float('nan'):5.2f}")
        print(f"# CPU-s {a['cpu_s']} -> {b['cpu_s']} (x{ratios.get('cpu_s')}); best wall {a['wall_s_best']} -> "
              f"{b['wall_s_best']} (x{ratios.get('wall_s_best')}); "
              f"peak RSS MB {a['peak_rss_mb']} -> {b['peak_rss_mb']}")
        print(json.dumps({"before": args.before, "rounds": args.rounds, "A": a, "B": b, "B/A": ratios}))
    finally:
        shutil.rmtree(a_code, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
