"""CPU seconds per stage of one analysis, or of one `ncsweep analyze`, in this process.

    PYTHONPATH=. python bench/analysis_stages.py DIR [--out X]          # per stage, one table worker
    PYTHONPATH=. python bench/analysis_stages.py --cli DIR [--out X]    # `ncsweep analyze DIR` as a whole

Stages (the first mode): `import` (the analysis packages), the scan (`trial_records`,
`schema_names`, `materialise`; the scan's figure includes the threads beside it: checksums and
the table libraries' import), `trial_table_from`, `trial_curves`, each kind of table job
(`tables:all` and `tables:arch`: the sensitivity tables over all trials and per architecture;
`arch_summary`, `paired_differences`, `nc_vs_fairness`, `leaderboard`; run here, one after the
other, under one BLAS thread as in a table worker), `split_curves`, then writing the tables:
`write:csv`, `write:parquet`, `write:tex` and `write:other` (building the frames). A stage
missing from the code being measured (an older commit) is left out. Both modes print one JSON
line last: {cpu_s, in_process_wall_s, peak_rss_mb, stages?} — cpu_s: user + system of this
process from its start (interpreter included) and of every process it waited for; peak_rss_mb:
this process' peak plus its largest child's. Used by `bench/analysis_ab.py`.
"""
from __future__ import annotations

import argparse
import functools
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

SELECT = "best:worst_group_acc"


def cpu_s() -> float:
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (own + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


class Stages:
    """CPU seconds added up per stage name; nested stages are not subtracted from their parent."""

    def __init__(self):
        self.cpu: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.cpu[name] = self.cpu.get(name, 0.0) + seconds

    def wrap(self, owner, attr: str, name=None) -> None:
        fn = getattr(owner, attr, None)
        if fn is None:
            return

        @functools.wraps(fn)
        def timed(*a, **k):
            c = cpu_s()
            try:
                return fn(*a, **k)
            finally:
                self.add(name(a) if callable(name) else name or attr, cpu_s() - c)
        setattr(owner, attr, timed)


def job_name(fn, args) -> str:
    name = getattr(fn, "__name__", str(fn))
    return f"tables:{str(args[2]).split('=')[0]}" if name in ("run_job", "fit_tables") else name


def per_stage(run: Path, out: Path) -> dict:
    st = Stages()
    c = cpu_s()
    import pandas as pd

    import analysis.pipeline as pipeline
    import analysis.report as report
    st.add("import", cpu_s() - c)
    load = sys.modules["analysis.load"]
    for owner, attr in ((pipeline, "trial_records"), (pipeline, "trial_table_from"), (pipeline, "trial_curves"),
                        (pipeline, "split_curves"), (load, "schema_names"), (load.Source, "materialise")):
        st.wrap(owner, attr)

    def run_all(jobs, workers, **kw):          # one worker: each job's CPU is counted in this process
        from threadpoolctl import threadpool_limits

        out_ = []
        with threadpool_limits(1):             # as in a table worker (`analysis.parallel`): idle BLAS threads spin
            for fn, a, k in jobs:
                c0 = cpu_s()
                out_.append(fn(*a, **k))
                st.add(job_name(fn, a), cpu_s() - c0)
        return out_
    pipeline.run_all = run_all
    res = pipeline.analyse(run, select=SELECT)
    st.wrap(pd.DataFrame, "to_csv", "write:csv")
    st.wrap(pd.DataFrame, "to_parquet", "write:parquet")
    st.wrap(report, "booktabs", "write:tex")
    c = cpu_s()
    report.write_tables(res, out)
    st.add("write:other", cpu_s() - c - sum(v for k, v in st.cpu.items() if k.startswith("write:")))
    return st.cpu


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--cli", action="store_true", help="time `ncsweep analyze DIR` as a whole")
    p.add_argument("--out", help="where the tables go (default: a temporary folder)")
    args = p.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="ncsweep-stages-"))
    t = time.perf_counter()
    if args.cli:
        from sweeps.cli import main as ncsweep

        ncsweep(["analyze", args.dir, "--select", SELECT, "--out", str(out)])
        stages = None
    else:
        stages = per_stage(Path(args.dir), out)
    res = {"cpu_s": round(cpu_s(), 3), "in_process_wall_s": round(time.perf_counter() - t, 3),
           "peak_rss_mb": round(peak_rss_mb(), 1)}
    if stages is not None:
        res["stages"] = {k: round(v, 3) for k, v in stages.items()}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
