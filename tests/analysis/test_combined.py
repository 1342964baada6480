"""Several run directories analysed together: a trial present in more than one keeps its newest
attempt's rows, and the tables go to --out, or to a new folder named after the runs."""
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis.cli import results_root
from analysis.synthetic import grid, write_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A: 8 trials, attempt 1. B: a copy of A's first 3 trials re-run later (attempt 2, other noise)."""
    root = tmp_path_factory.mktemp("combined")
    trials = grid(seeds=2, arch=["resnet18", "vgg11"], lr=[1e-3, 1e-1], bias_level=[0.0])
    a = write_run(root / "A", trials)
    b = write_run(root / "B", [dict(t, attempt=2, written_at=2.0e9) for t in trials[:3]], seed=7)
    return a, b, [t["trial_id"] for t in trials]


def final_wga(run, tid) -> float:
    df = pq.read_table(run / "rows" / tid / "trial.parquet").to_pandas()
    row = df[(df.split == "test") & (df.group == "all")].sort_values("epoch").iloc[-1]
    return float(row.worst_group_acc)


def ncsweep(*args):
    return subprocess.run([sys.executable, "-m", "sweeps.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_shared_trials_keep_the_newest_attempt_and_tables_go_to_a_new_folder(runs):
    a, b, ids = runs
    res = ncsweep("analyze", a, b, "--metrics", "test_worst_group_acc")
    assert res.returncode == 0, res.stderr[-3000:]
    out = a.parent / "A+B" / "analysis"
    assert f"tables in {out}" in res.stdout and not (a / "analysis").exists()
    t = pd.read_csv(out / "trials.csv").set_index("trial_id")
    assert sorted(t.index) == sorted(ids)                               # 8 trials, each once
    for tid in ids:
        newest = b if tid in ids[:3] else a
        assert t.loc[tid, "test_worst_group_acc"] == pytest.approx(final_wga(newest, tid), abs=1e-12)
        assert t.loc[tid, "run_dir"] == str(newest)
    assert final_wga(a, ids[0]) != pytest.approx(final_wga(b, ids[0]), abs=1e-6)   # the test can tell them apart


def test_out_names_the_tables_folder_and_one_run_keeps_dir_analysis(runs, tmp_path):
    a, b, _ = runs
    res = ncsweep("analyze", b, a, "--metrics", "test_worst_group_acc", "--out", tmp_path / "both")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "both" / "trials.csv").exists() and (tmp_path / "both" / "sensitivity.parquet").exists()
    assert results_root([a]) == a.resolve() and results_root([a, a]) == a.resolve()
    assert results_root([b, a]) == a.parent.resolve() / "B+A"
    many = [a.parent / f"run-{i:02d}-with-a-long-name" for i in range(9)]
    name = results_root(many).name
    assert name.startswith("run-00-with-a-long-name+8-more-") and len(name) < 60


def test_report_of_two_runs_writes_everything_to_out(runs, tmp_path, capsys):
    from analysis.cli import report

    a, b, ids = runs
    assert report([a, b], metrics="test_worst_group_acc", out=tmp_path / "rep", top=1) == 0
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "ncsweep report — synthetic" in page and "Showing 1 of 4 rows" in page    # one condition (bias 0), 4 configurations
    assert len(pd.read_csv(tmp_path / "rep" / "trials.csv")) == len(ids)
    assert not (a / "report").exists() and not (b / "report").exists()
