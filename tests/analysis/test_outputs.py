"""The files `analyze` writes: every registered table as CSV, Parquet and booktabs LaTeX; per-epoch
curves split by the axis with the largest effect, with t-intervals over seeds."""
import base64

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.latex import booktabs
from analysis.pipeline import analyse
from analysis.report import TABLES, write_tables
from analysis.synthetic import grid, write_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    trials = grid(seeds=2, arch=["resnet18", "vgg11"], lr=[1e-3, 1e-1], bias_level=[0.0, 0.9])
    return write_run(tmp_path_factory.mktemp("out") / "run", trials, epochs=3)


@pytest.fixture(scope="module")
def result(run):
    return analyse(run, metrics=["test_worst_group_acc", "train_nc1"], fanova=False)


def test_booktabs_escapes_and_rules():
    df = pd.DataFrame({"bias_level": [0.9, np.nan], "arch": ["vgg_11 & co", "resnet18"], "n": [3, 4]})
    assert booktabs(df) == (
        "\\begin{tabular}{rlr}\n\\toprule\nbias\\_level & arch & n \\\\\n\\midrule\n"
        "0.9 & vgg\\_11 \\& co & 3 \\\\\n-- & resnet18 & 4 \\\\\n\\bottomrule\n\\end{tabular}\n")


def test_every_registered_table_is_written_three_ways(result, tmp_path):
    write_tables(result, tmp_path)
    for name in TABLES:
        csv = pd.read_csv(tmp_path / f"{name}.csv")
        assert len(pd.read_parquet(tmp_path / f"{name}.parquet")) == len(csv), name
        tex = (tmp_path / f"{name}.tex").read_text()
        assert tex.count(" \\\\\n") == len(csv) + 1 and "\\toprule" in tex, name     # header + one line per row


def test_curves_split_by_the_largest_effect_with_a_t_interval_over_seeds(run, result):
    c = result["curves"]
    wga = c[(c.column == "worst_group_acc") & (c.split == "test")]
    assert set(wga.axis) == {"bias_level"}                     # planted: bias −0.36 ≫ lr +0.10 ≫ arch −0.08
    assert sorted(wga.epoch.unique()) == [0, 1, 2] and set(wga.seeds) == {2}
    # by hand: at bias 0.9, epoch 2, each seed's mean over its 4 configurations, then a t-interval over 2 seeds
    rows = []
    for d in (run / "rows").iterdir():
        r = pd.read_parquet(d / "trial.parquet")
        rows.append(r[(r.split == "test") & (r.group == "all") & (r.epoch == 2)])
    rows = pd.concat(rows)
    per_seed = rows[rows.bias_level == 0.9].groupby("seed").worst_group_acc.mean().to_numpy()
    h = stats.t.ppf(0.975, 1) * per_seed.std(ddof=1) / np.sqrt(2)
    got = wga[(wga.level == "0.9") & (wga.epoch == 2)].iloc[0]
    assert got["mean"] == pytest.approx(per_seed.mean()) and got.ci_high == pytest.approx(per_seed.mean() + h)


def test_the_summary_draws_parallel_coordinates_and_parameter_importance(result):
    from analysis.reportdata import _visuals

    figs = _visuals(result)
    assert [f["alt"] for f in figs] == ["parallel coordinates: every configuration, coloured by test worst_group_acc",
                                        "parameter importance for test worst_group_acc"]
    for f in figs:
        png = base64.b64decode(f["src"].split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
