"""`ncsweep` — validate, run, resume and inspect sweeps; analyse and report their results.

    ncsweep validate SPEC
    ncsweep run SPEC [--out DIR] [--address auto|ray://HOST:10001] [--resources cpu=1,gpu=0.25]
    ncsweep resume DIR [--address ...]
    ncsweep status DIR
    ncsweep analyze DIR [--select final|best:<metric>] [--metrics m1,m2]
    ncsweep report DIR [--select ...]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .spec import SpecError, load_spec, parse_spec


def _resources(text: str | None) -> dict | None:
    if not text:
        return None
    out = {}
    for part in text.split(","):
        k, _, v = part.partition("=")
        if k.strip() not in ("cpu", "gpu") or not v:
            raise SpecError(f"--resources {text!r}: expected e.g. cpu=1,gpu=0.25")
        out[k.strip()] = float(v)
    return out


def cmd_validate(a) -> int:
    from .plan import planned_configs

    spec = load_spec(a.spec)
    n = "Optuna: " + str(spec.search["num_samples"]) if spec.search["algorithm"] == "optuna" else len(planned_configs(spec))
    print(f"{a.spec}: valid — {spec.name!r}, {n} trials, algorithm {spec.search['algorithm']}, "
          f"resources {spec.resources}")
    return 0


def _report_summary(s: dict) -> int:
    print(f"results: {s['run_dir']}  ({s['finished']}/{s['planned']} trials finished, "
          f"{s['pending']} pending; {s['counts']})")
    for tid, err in s["failures"].items():
        print(f"  failed {tid}: {err}")
    return 0


def cmd_run(a) -> int:
    from .runner import run_sweep

    spec = load_spec(a.spec)
    out = a.out or str(Path("runs") / spec.name)
    s = run_sweep(spec, out, a.address, _resources(a.resources))
    print(f"sweep {spec.name!r} finished in {s['wall_s']:.1f}s (Ray start {s['ray_init_s']:.1f}s)")
    if s.get("mean_tune_trial_s") and s.get("mean_run_trial_s"):
        print(f"per trial: {s['mean_tune_trial_s']:.2f}s in Tune, {s['mean_run_trial_s']:.2f}s inside run_trial "
              f"(overhead {s['mean_tune_trial_s'] - s['mean_run_trial_s']:.2f}s)")
    return _report_summary(s)


def cmd_resume(a) -> int:
    from .runner import run_sweep
    from .store import RunDir

    m = RunDir(a.dir).read_manifest()
    if m is None:
        raise SpecError(f"{a.dir}: no manifest.json — not an ncsweep run directory (start one with `ncsweep run SPEC --out DIR`)")
    spec = parse_spec(m["spec"], default_name=m["name"])
    s = run_sweep(spec, a.dir, a.address, m.get("resources"))
    print(f"sweep {spec.name!r} resumed and finished in {s['wall_s']:.1f}s")
    return _report_summary(s)


def cmd_status(a) -> int:
    from .runner import sweep_summary
    from .store import RunDir

    store = RunDir(a.dir)
    if store.read_manifest() is None:
        raise SpecError(f"{a.dir}: no manifest.json — not an ncsweep run directory")
    s = sweep_summary(store)
    recs = store.records().values()
    walls = [r["wall_s"] for r in recs if "wall_s" in r]
    rows = len(store.row_files())
    if a.json:
        print(json.dumps(s, indent=1, default=str))
        return 0
    _report_summary(s)
    if walls:
        print(f"  mean trial wall {sum(walls) / len(walls):.1f}s, mean overhead "
              f"{(s['mean_trial_overhead_s'] or 0):.2f}s, {rows} epoch files")
    return 0


def cmd_analyze(a) -> int:
    from analysis.cli import analyze

    return analyze(a.dir, a.select, a.metrics)


def cmd_report(a) -> int:
    from analysis.cli import report

    return report(a.dir, a.select, a.metrics)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="ncsweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="check a spec without starting Ray")
    v.add_argument("spec")
    v.set_defaults(fn=cmd_validate)
    r = sub.add_parser("run", help="run a spec")
    r.add_argument("spec")
    r.add_argument("--out", help="run directory (default runs/<spec name>)")
    r.add_argument("--address", help="an existing Ray cluster: auto, or ray://HOST:10001")
    r.add_argument("--resources", help="per-trial resources, e.g. cpu=1,gpu=0.25")
    r.set_defaults(fn=cmd_run)
    rs = sub.add_parser("resume", help="finish an interrupted run directory")
    rs.add_argument("dir")
    rs.add_argument("--address")
    rs.set_defaults(fn=cmd_resume)
    st = sub.add_parser("status", help="counts, failures and throughput of a run directory")
    st.add_argument("dir")
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=cmd_status)
    for name, fn in (("analyze", cmd_analyze), ("report", cmd_report)):
        an = sub.add_parser(name)
        an.add_argument("dir", nargs="+")
        an.add_argument("--select", default="final", help="final, or best:<val metric>, e.g. best:worst_group_acc")
        an.add_argument("--metrics", default=None, help="comma-separated metric columns")
        an.set_defaults(fn=fn)
    a = p.parse_args(argv)
    try:
        return a.fn(a)
    except (SpecError, ValueError, FileNotFoundError) as e:
        print(f"ncsweep: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
