"""The shortcuts taken for speed give what the plain computation gives."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.filters import config_ids
from analysis.load import Source
from analysis.sensitivity import _mean_predictions, design, fit_table


def frame():
    rng = np.random.default_rng(3)
    n = 60
    df = pd.DataFrame({"arch": rng.choice(["resnet18", "vgg11", "densenet121"], n), "lr": 10 ** rng.uniform(-3, -1, n),
                       "bias_level": rng.choice([0.0, 0.5, 0.9], n), "seed": np.arange(n) % 3})
    df["m"] = 0.3 * np.log10(df.lr) - 0.4 * df.bias_level + 0.1 * (df.arch == "vgg11") + rng.normal(0, 0.05, n)
    return df


def test_mean_predictions_from_the_design_matrix_equal_patsy_predictions():
    import statsmodels.formula.api as smf

    trials = frame()
    f, varying, _ = design(trials, "m", ["arch", "lr", "bias_level"])
    ols = smf.ols("y ~ C(arch) + lr + bias_level", data=f).fit()
    for axis, points in (("arch", ("densenet121", "vgg11")), ("lr", (f.lr.min(), f.lr.max())),
                         ("bias_level", (f.bias_level.min(), f.bias_level.max()))):
        fast = _mean_predictions(ols, f, axis, points, interacts=False)
        slow = _mean_predictions(ols, f, axis, points, interacts=True)
        assert fast == pytest.approx(slow, abs=1e-10), axis


def test_contrast_in_units_of_a_planted_effect():
    t = fit_table(frame(), "m", axes=["arch", "lr", "bias_level"], fanova=False).effects.set_index("axis")
    assert t.loc["bias_level", "diff"] == pytest.approx(-0.4 * 0.9, abs=0.05)          # bias 0 → 0.9
    assert t.loc["bias_level", "diff_ci_low"] < t.loc["bias_level", "diff"] < t.loc["bias_level", "diff_ci_high"]


def test_config_ids_partition_like_a_groupby():
    df = pd.DataFrame({"a": ["x", "y", "x", "y", None, "x"], "b": [1.0, 2.0, 1.0, np.nan, 1.0, 2.0], "seed": range(6)})
    ids = config_ids(df, ["a", "b", "seed"])
    ref = df[["a", "b"]].astype(str).groupby(["a", "b"], dropna=False).ngroup().to_numpy()
    assert len(set(zip(ids, ref))) == len(set(ids)) == len(set(ref)) == 5           # the same 5 groups


def test_a_merged_file_gives_each_trial_the_host_of_its_latest_epoch(tmp_path):
    d = tmp_path / "run" / "rows" / "t1"
    d.mkdir(parents=True)
    rows = [{"trial_id": "t1", "epoch": e, "split": "val", "group": "all", "status": "ok", "acc": 0.5 + e / 10,
             "arch": "vgg11", "hostname": "first" if e < 2 else "second"} for e in range(3)]
    pq.write_table(pa.Table.from_pylist(rows), d / "trial.parquet")
    src = Source(tmp_path / "run", ["acc", "arch", "hostname"])
    try:
        assert src.query("select distinct hostname from rows")["hostname"].tolist() == ["second"]
        assert src.query("select acc from rows order by epoch")["acc"].tolist() == [0.5, 0.6, 0.7]
    finally:
        src.close()


def test_main_effects_fit_equals_the_formula_fit_and_anova_lm():
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    from analysis.sensitivity import fit_main_effects

    f, varying, _ = design(frame(), "m", ["arch", "lr", "bias_level"])
    ols, aov = fit_main_effects(f, varying)
    ref = smf.ols("y ~ C(arch) + lr + bias_level", data=f).fit()
    assert list(ols.model.exog_names) == list(ref.model.exog_names)
    assert np.asarray(ols.params) == pytest.approx(np.asarray(ref.params), abs=1e-12)
    hc3, ref_hc3 = ols.get_robustcov_results("HC3"), ref.get_robustcov_results("HC3")
    assert np.asarray(hc3.pvalues) == pytest.approx(np.asarray(ref_hc3.pvalues), rel=1e-9)
    ref_aov = anova_lm(ref, typ=2)
    for col in ("sum_sq", "df", "F", "PR(>F)"):
        assert aov[col].to_numpy() == pytest.approx(ref_aov.loc[aov.index, col].to_numpy(), rel=1e-9, nan_ok=True)
