"""The analysis A/B benchmark runs end to end on a tiny run directory: per-stage CPU seconds, and
A (a commit) against B (the working tree) with ratios in its last JSON line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}


def bench(*args, timeout=600):
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout, json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench") / "run"
    subprocess.run([sys.executable, "-c", "from pathlib import Path; import bench.analysis_speed as b; "
                    f"b.write_run(Path({str(d)!r}), 30, 4, False); b.write_records(Path({str(d)!r}), 4, False)"],
                   cwd=ROOT, env=ENV, check=True, timeout=300)
    return d


@pytest.mark.slow
def test_stages_counts_each_stage_and_writes_the_tables(run_dir, tmp_path):
    _, res = bench("bench/analysis_stages.py", str(run_dir), "--out", str(tmp_path / "t"))
    assert {"import", "materialise", "tables:all", "leaderboard", "write:csv", "write:tex"} <= set(res["stages"])
    assert all(v >= 0 for v in res["stages"].values()) and res["cpu_s"] >= sum(res["stages"].values()) * 0.9
    assert (tmp_path / "t" / "sensitivity.csv").exists() and res["peak_rss_mb"] > 0


@pytest.mark.slow
def test_ab_prints_both_sides_and_their_ratios(run_dir):
    text, res = bench("bench/analysis_ab.py", str(run_dir), "--before", "HEAD", "--rounds", "1")
    assert text.count("cli:") == 2 and res["rounds"] == 1
    for side in ("A", "B"):
        assert res[side]["cpu_s"] > 0 and res[side]["peak_rss_mb"] > 0
    assert res["B/A"]["cpu_s"] == pytest.approx(res["B"]["cpu_s"] / res["A"]["cpu_s"], rel=1e-2)


def test_the_bench_writes_seeds_of_one_configuration(tmp_path):
    import pyarrow.parquet as pq

    from bench.analysis_speed import write_run

    assert write_run(tmp_path / "run", 6, 2, False, seeds=3) == 6 * 2 * 10
    rows = [pq.read_table(tmp_path / "run" / "rows" / f"t{t:05d}" / "trial.parquet").to_pandas().iloc[0] for t in range(6)]
    assert [r.seed for r in rows] == [0, 1, 2, 0, 1, 2]
    assert len({(r.arch, r.lr, r.weight_decay, r.bias_level) for r in rows}) == 2     # configurations 0 and 1
    assert rows[0].arch != rows[3].arch
