"""The two-pass scan: columns needed only at the chosen epoch are read from the files holding it,
and give the same trial table as reading every column of every file."""
import importlib
import shutil
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import synthetic, vocab
from analysis.load import Source, chosen_files, trial_records
from analysis.select import trial_table_from

METRICS = ["test_worst_group_acc", "test_gap", "test_loss", "val_acc", "train_nc1_g1", "test_n"]
CONFIG = ["arch", "lr", "bias_level", "seed"]


def _trials():
    trials = synthetic.grid(arch=["resnet18", "vgg11"], lr=[1e-3, 1e-1], bias_level=[0.0, 0.5], seeds=2)
    trials[0]["stop_at"], trials[0]["status"] = 1, "stopped"
    trials[1]["diverge_at"], trials[1]["status"] = 2, "diverged"
    trials[2]["status"], trials[2]["stop_at"] = "failed", 0
    return trials


def _table(run, select, two_pass: bool) -> pd.DataFrame:
    src = Source(run, lazy=True)
    try:
        every = sorted(set(vocab.curve_metrics()) | {"worst_group_acc"}) if two_pass else None
        src.materialise(CONFIG + ["acc", "gap", "loss", "n", "nc1", "worst_group_acc", vocab.MAJORITY], every_epoch=every)
        if two_pass:
            assert set(src.late) == {"gap", "loss", "n", vocab.MAJORITY}
        out = trial_table_from(src, trial_records(run), select, METRICS, CONFIG, vocab.MAJORITY)
    finally:
        src.close()
    return out.drop(columns="run_dir").sort_values("trial_id").reset_index(drop=True)   # the runs compared differ there


def _run(tmp_path, per_epoch=True):
    return synthetic.write_run(tmp_path / "run", _trials(), epochs=4, per_epoch=per_epoch, noise_sd=0.05)


@pytest.mark.parametrize("select", ["final", "best:worst_group_acc"])
def test_two_pass_equals_one_pass_per_epoch_files(tmp_path, select):
    run = _run(tmp_path)
    one, two = _table(run, select, False), _table(run, select, True)
    pd.testing.assert_frame_equal(one, two)
    assert one["test_gap"].notna().sum() > 10 and one.loc[one.epoch.notna(), "val_majority_acc"].notna().all()


def _add_merged_trial(tmp_path, runs) -> None:
    """Copy a finished (merged-file) densenet121 trial, rows and record, into each run directory."""
    merged = synthetic.write_run(tmp_path / "merged", synthetic.grid(arch=["densenet121"], lr=[1e-2], bias_level=[0.9]),
                                 epochs=4)
    for run in runs:
        for d in (merged / "rows").iterdir():
            shutil.copytree(d, run / "rows" / d.name)
            shutil.copy(merged / "trials" / f"{d.name}.json", run / "trials")


def test_two_pass_with_merged_files_and_a_directory_not_named_after_its_trial(tmp_path):
    run = _run(tmp_path)
    _add_merged_trial(tmp_path, [run])
    first = sorted((run / "rows").iterdir())[3]
    first.rename(first.with_name("renamed-by-hand"))          # read whole: no trial is called that
    for select in ("final", "best:worst_group_acc"):
        one, two = _table(run, select, False), _table(run, select, True)
        pd.testing.assert_frame_equal(one, two)
        assert one[one.arch == "densenet121"]["test_gap"].notna().all()


def test_merged_files_are_read_in_one_pass(tmp_path):
    run = _run(tmp_path, per_epoch=False)
    src = Source(run, lazy=True)
    src.materialise(CONFIG + ["gap", "worst_group_acc"], every_epoch=["worst_group_acc"])
    assert src.late == [] and "gap" in src.scanned
    src.close()


def test_chosen_files_picks_the_epoch_file_and_merged_files():
    files = ["r/rows/a/epoch-0000.parquet", "r/rows/a/epoch-0001.parquet", "r/rows/a/trial.parquet",
             "r/rows/b/epoch-0000.parquet", "r/rows/c/epoch-0002.parquet", "r/rows/odd/epoch-0000.parquet"]
    got = chosen_files(files, {"a": 1, "c": 0}, {"a", "b", "c"})
    assert got == ["r/rows/a/epoch-0001.parquet", "r/rows/a/trial.parquet", "r/rows/odd/epoch-0000.parquet"]


def _damage_column(path, column: str) -> None:
    """Overwrite the pages of one column with garbage; the footer and the other columns stay intact."""
    meta = pq.read_metadata(path)
    rg = meta.row_group(0)
    col = next(rg.column(i) for i in range(rg.num_columns) if rg.column(i).path_in_schema == column)
    data = bytearray(path.read_bytes())
    start = col.data_page_offset
    data[start:start + col.total_compressed_size] = b"\xff" * col.total_compressed_size
    path.write_bytes(bytes(data))


def test_damaged_pages_of_a_late_column_skip_that_file_with_its_name(tmp_path):
    run = _run(tmp_path)
    tid = "t" + "vgg11-0.1-0.5-s1"
    bad = run / "rows" / tid / "epoch-0003.parquet"
    _damage_column(bad, "gap")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        two = _table(run, "final", True)
    assert any(str(bad) in str(w.message) for w in caught)
    row = two.set_index("trial_id").loc[tid]
    assert np.isnan(row["test_gap"]) and row["epoch"] == 3 and np.isfinite(row["test_worst_group_acc"])
    assert two.set_index("trial_id").drop(index=tid)["test_gap"].notna().sum() > 5


@pytest.fixture
def keyed_by_path(monkeypatch):
    monkeypatch.setattr(importlib.import_module("analysis.load"), "PATH_KEYED_FROM", 1)


@pytest.mark.parametrize("select", ["final", "best:worst_group_acc"])
def test_keys_from_epoch_file_paths_give_the_same_table(tmp_path, select, keyed_by_path):
    run = _run(tmp_path)
    plain = synthetic.write_run(tmp_path / "plain", _trials(), epochs=4, per_epoch=False, noise_sd=0.05)
    _add_merged_trial(tmp_path, [run, plain])
    pd.testing.assert_frame_equal(_table(plain, select, False), _table(run, select, True))


def _rows(run) -> pd.DataFrame:
    src = Source(run, lazy=True)
    try:
        src.materialise(CONFIG + ["worst_group_acc", "acc"])
        return src.query('select * from rows order by trial_id, epoch, split, "group"')
    finally:
        src.close()


def test_a_layout_whose_paths_do_not_name_the_rows_is_read_from_the_columns(tmp_path, monkeypatch):
    run = _run(tmp_path)
    a, b = sorted((run / "rows").iterdir())[4:6]
    fa, fb = a / "epoch-0003.parquet", b / "epoch-0003.parquet"      # swap two trials' last epochs
    tmp = fa.read_bytes()
    fa.write_bytes(fb.read_bytes())
    fb.write_bytes(tmp)
    load = importlib.import_module("analysis.load")
    assert not load.paths_name_their_rows(load.duckdb.connect(), load.row_files(run))
    monkeypatch.setattr(load, "PATH_KEYED_FROM", 10**9)
    expected = _rows(run)
    monkeypatch.setattr(load, "PATH_KEYED_FROM", 1)
    pd.testing.assert_frame_equal(_rows(run), expected)
    assert (expected.trial_id == a.name).sum() == (expected.trial_id == b.name).sum()


def test_a_last_epoch_only_metric_at_an_earlier_chosen_epoch_is_missing_not_an_error(tmp_path):
    run = _run(tmp_path)
    for d in (run / "rows").iterdir():           # `probe` only in each trial's last epoch file
        last = sorted(d.glob("epoch-*.parquet"))[-1]
        t = pq.read_table(last)
        pq.write_table(t.append_column("probe", pa.array(np.linspace(0, 1, t.num_rows))), last)
    for select, expect_values in (("final", True), ("best:worst_group_acc", None)):
        src = Source(run, lazy=True)
        src.materialise(CONFIG + ["worst_group_acc", "acc", "nc1", "probe"], every_epoch=["worst_group_acc"])
        assert "probe" in src.late
        tt = trial_table_from(src, trial_records(run), select, ["test_probe", "test_worst_group_acc"], CONFIG)
        src.close()
        one = _one_pass(run, select)
        pd.testing.assert_series_equal(tt.set_index("trial_id")["test_probe"].sort_index(),
                                       one.set_index("trial_id")["test_probe"].sort_index())
        if expect_values:
            assert tt["test_probe"].notna().sum() >= 10


def _one_pass(run, select):
    src = Source(run, lazy=True)
    src.materialise(CONFIG + ["worst_group_acc", "acc", "nc1", "probe"])
    try:
        return trial_table_from(src, trial_records(run), select, ["test_probe", "test_worst_group_acc"], CONFIG)
    finally:
        src.close()


def test_a_late_column_no_chosen_file_holds_is_missing_not_an_error(tmp_path):
    run = _run(tmp_path)
    diverged = run / "rows" / _trials()[1]["trial_id"] / "epoch-0002.parquet"   # never chosen: not "ok"
    t = pq.read_table(diverged)
    pq.write_table(t.append_column("probe", pa.array(np.ones(t.num_rows))), diverged)
    src = Source(run, lazy=True)
    src.materialise(CONFIG + ["worst_group_acc", "probe"], every_epoch=["worst_group_acc"])
    assert src.late == ["probe"]
    tt = trial_table_from(src, trial_records(run), "final", ["test_probe", "test_worst_group_acc"], CONFIG)
    src.close()
    assert tt["test_probe"].isna().all() and tt["test_worst_group_acc"].notna().sum() >= 10


@pytest.mark.parametrize("select", ["final", "best:worst_group_acc"])
def test_a_sweep_in_progress_with_rolled_up_trials_gives_the_same_table(tmp_path, select, keyed_by_path):
    run = _run(tmp_path)
    for d in (run / "rows").iterdir():           # as a running trial leaves them: early epochs merged
        early = sorted(d.glob("epoch-*.parquet"))[:2]
        if len(early) == 2:
            pq.write_table(pa.concat_tables([pq.read_table(f) for f in early], promote_options="default"),
                           d / "trial.parquet")
            for f in early:
                f.unlink()
    one, two = _table(run, select, False), _table(run, select, True)
    pd.testing.assert_frame_equal(one, two)
    assert two["test_gap"].notna().sum() > 10


def test_a_running_trials_host_comes_from_its_latest_epoch_not_its_merged_file(tmp_path):
    run = _run(tmp_path)
    d = run / "rows" / _trials()[5]["trial_id"]
    files = sorted(d.glob("epoch-*.parquet"))
    merged = pa.concat_tables([pq.read_table(f) for f in files[:2]])
    pq.write_table(merged.set_column(merged.schema.get_field_index("hostname"), "hostname",
                                     pa.array(["old-host"] * merged.num_rows)), d / "trial.parquet")
    for f in files[:2]:
        f.unlink()
    src = Source(run, ["acc", "hostname"])
    hosts = src.query("select distinct hostname from rows where trial_id = ?", [d.name])
    src.close()
    assert list(hosts.hostname) == ["synthhost"]


def test_curves_and_group_tables_come_from_the_catalogue_flags():
    from nccore import catalogue
    from analysis.curves import curves
    from analysis.pipeline import default_metrics

    assert curves() == (("nc1", "train", True), ("worst_group_acc", "test", False), ("acc", "test", True))
    assert all(vocab.has_group_rows(n) for n, m in catalogue.METRICS.items() if m.by_group)
    cols = ["nc1", "acc", "worst_group_acc"]
    out = default_metrics(cols, ["0", "1"])
    assert [c for c in out if c[-3:-1] == "_g"] == ["train_nc1_g0", "train_nc1_g1"]    # nc1: Metric.by_group
    assert {"train_nc1", "test_acc", "test_worst_group_acc"} <= set(out)
