"""The leaderboard selects on validation and reports test (DomainBed): ranks within each data
condition, the test metric's t-interval over seeds, the trial ids; the CSV keeps every row."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.compare import leaderboard
from analysis.pipeline import analyse, rank_metric
from analysis.reportdata import _leaderboard, mean_ci_text
from analysis.synthetic import grid, write_run


def trials():
    """lr=0.1 is better on validation, lr=0.01 on test, at both bias levels; 2 seeds each."""
    rows = []
    for bias in (0.0, 0.9):
        for lr, val, test in ((0.1, 0.80, 0.60), (0.01, 0.70, 0.70)):
            for s, noise in ((0, -0.02), (1, 0.02)):
                rows.append({"trial_id": f"b{bias}-lr{lr}-s{s}", "lr": lr, "bias_level": bias, "seed": s,
                             "val_worst_group_acc": val - bias / 10, "test_worst_group_acc": test - bias / 10 + noise})
    return pd.DataFrame(rows)


def test_ranks_on_validation_within_each_data_condition_and_reports_test():
    lb = leaderboard(trials(), "test_worst_group_acc", axes=["lr", "bias_level"], rank_by="val_worst_group_acc")
    assert list(lb.condition) == ["bias_level=0.0"] * 2 + ["bias_level=0.9"] * 2      # bias_level: a condition
    assert list(lb["rank"]) == [1, 2, 1, 2] and list(lb.lr) == [0.1, 0.01, 0.1, 0.01]   # ranked on val, not test
    first = lb.iloc[0]
    h = stats.t.ppf(0.975, 1) * np.std([0.58, 0.62], ddof=1) / np.sqrt(2)             # 2 seeds: t with 1 df
    assert first["mean"] == pytest.approx(0.60) and first.ci_low == pytest.approx(0.60 - h)
    assert first.ci_high == pytest.approx(0.60 + h) and first.seeds == 2
    assert first.rank_mean == pytest.approx(0.80) and first.trial_ids == "b0.0-lr0.1-s0 b0.0-lr0.1-s1"
    assert (first.metric, first.rank_by) == ("test_worst_group_acc", "val_worst_group_acc")
    top1 = leaderboard(trials(), "test_worst_group_acc", ["lr", "bias_level"], "val_worst_group_acc", top=1)
    assert list(top1.lr) == [0.1, 0.1]                                                # the best of each condition


def test_a_lower_is_better_rank_metric_ranks_ascending():
    t = trials().assign(val_gap=lambda d: d.val_worst_group_acc)                     # gap: lower is better
    lb = leaderboard(t, "test_worst_group_acc", ["lr", "bias_level"], rank_by="val_gap")
    assert list(lb.lr) == [0.01, 0.1, 0.01, 0.1]


def test_one_seed_says_so_instead_of_an_empty_interval():
    assert mean_ci_text(0.84, np.nan, np.nan, 1) == "0.840 (1 seed: no CI)"
    assert mean_ci_text(0.84, 0.8, 0.88, 3) == "0.840 (0.800 to 0.880)"


def test_rank_by_defaults_to_the_validation_twin_and_checks_names():
    cols = ["worst_group_acc", "acc", "nc1"]
    assert rank_metric(None, "test_worst_group_acc", cols) == "val_worst_group_acc"
    assert rank_metric("acc", "test_worst_group_acc", cols) == "val_acc"
    with pytest.raises(ValueError, match="--rank-by: unknown metric 'val_accc'"):
        rank_metric("val_accc", "test_acc", cols)


def test_the_csv_keeps_every_row_and_the_report_shows_the_top(tmp_path):
    trials_ = grid(seeds=1, arch=["resnet18", "vgg11"], lr=[1e-4, 1e-3, 1e-2, 1e-1, 0.3, 1.0], bias_level=[0.0, 0.9])
    res = analyse(write_run(tmp_path / "run", trials_), metrics=["test_worst_group_acc"], fanova=False)
    lb = res["leaderboard"]
    assert len(lb) == 24 and res["rank_by"] == "val_worst_group_acc"                 # 12 configurations × 2 conditions
    assert "val_worst_group_acc" in res["trials"]                                     # read for the ranking
    doc = _leaderboard({**res, "leaderboard_top": 3})
    assert (doc["shown"], doc["total"]) == (6, 24)
    assert [r[:2] for r in doc["rows"]] == [[f"bias_level={b}", str(k)] for b in ("0.0", "0.9") for k in (1, 2, 3)]
    test_col = doc["columns"].index("test worst_group_acc ↑ ± 95% CI")
    assert all(r[test_col].endswith("(1 seed: no CI)") for r in doc["rows"])
    assert "val worst_group_acc ↑ (ranked on)" in doc["columns"] and "bias_level" not in doc["columns"]
