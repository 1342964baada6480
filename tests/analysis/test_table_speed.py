"""The fast paths of the analysis give the numbers of the plain ones: sensitivity tables fitted a
subset at a time with shared preparation, the Spearman bootstrap's weighted ranks, and the
LaTeX writer."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.compare import _weighted_ranks, paired_differences, weighted_spearman
from analysis.design import Prepared
from analysis.latex import booktabs, cell, escape
from analysis.sensitivity import fit_table, run_job, sensitivity_tables, table_jobs

AXES = ["arch", "lr", "bias_level"]


def trials(n=90, seed=0):
    rng = np.random.default_rng(seed)
    t = pd.DataFrame({"arch": np.array(["resnet18", "vgg11", "densenet121"])[np.arange(n) % 3],
                      "lr": np.repeat(10 ** rng.uniform(-3, -1, n // 3), 3),
                      "bias_level": rng.choice([0.0, 0.5, 0.9], n), "seed": np.arange(n) % 3, "status": "completed"})
    t["m"] = -0.5 * t.bias_level + 0.1 * np.log10(t.lr) + rng.normal(0, 0.1, n)
    t["m2"] = t["m"] + rng.normal(0, 0.3, n)
    t.loc[[4, 7, 11], "m2"] = np.nan                # another set of usable trials than m's
    return t


def same_tables(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x.metric, x.subset, x.message, x.n, x.not_varied) == (y.metric, y.subset, y.message, y.n, y.not_varied)
        pd.testing.assert_frame_equal(x.long(), y.long(), check_exact=True)


@pytest.mark.parametrize("case", ["plain", "interactions", "one architecture failed"])
def test_batched_tables_equal_one_fit_per_table(case):
    t, kw = trials(), {"axes": AXES, "fanova": True}
    if case == "interactions":
        kw["interactions"] = [("arch", "lr")]
    if case == "one architecture failed":       # a subset with no usable trial at all
        t.loc[t.arch == "vgg11", "status"] = "failed"
    one_by_one = [run_job(t, m, s, **kw) for m, s in table_jobs(t, ["m", "m2"])]
    same_tables(one_by_one, sensitivity_tables(t, ["m", "m2"], **kw))
    if case == "one architecture failed":
        assert [x.message.startswith("no usable trials") for x in one_by_one].count(True) == 2


def test_prepared_is_shared_only_between_the_same_trials():
    t, cache = trials(), []
    a = Prepared.shared(t, AXES, cache)
    assert Prepared.shared(t.copy(), AXES, cache) is a                 # same rows: reused
    assert Prepared.shared(t.iloc[1:], AXES, cache) is not a           # other rows: prepared anew
    assert Prepared.shared(t, ["arch", "lr"], cache) is not a          # other axes: prepared anew
    assert len(cache) == 3
    frame = a.frame(t["m"])
    assert list(frame.columns) == ["y", *AXES] and abs(frame.y.mean()) < 1e-12
    assert fit_table(t, "m", axes=AXES, shared=cache).n == len(t)


def test_weighted_ranks_are_the_expanded_samples_average_ranks():
    rng = np.random.default_rng(1)
    v = rng.integers(0, 6, 25).astype(float)        # ties
    w = rng.integers(0, 3, (4, 25))
    r = _weighted_ranks(v, w.astype(float))
    for b in range(4):
        expanded = np.repeat(v, w[b])
        ranks = stats.rankdata(expanded)            # average ranks of the sample with row i w[b, i] times
        first = np.concatenate(([0], np.cumsum(w[b])[:-1]))
        have = w[b] > 0
        assert np.allclose(r[b, have], ranks[first[have]])
    x, y = rng.normal(size=25), rng.normal(size=25)
    rho = weighted_spearman(x, y, np.ones((1, 25)))[0]
    assert rho == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)


def test_paired_differences_average_matching_configurations():
    t = pd.DataFrame({"arch": ["a", "b"] * 4, "lr": [1, 1, 1, 1, 2, 2, 2, 2], "seed": [0, 0, 1, 1] * 2,
                      "m": [3.0, 1.0, 5.0, 1.0, 2.0, 2.0, 4.0, np.nan]})
    row = paired_differences(t, ["m"], ["arch", "lr"]).iloc[0]
    # lr=1: a−b = 2 and 4 (mean 3); lr=2: 0 (seed 1 has no b value): mean over the 2 configurations 1.5
    assert (row.arch_a, row.arch_b, row["diff"], row.pairs, row.configs) == ("a", "b", 1.5, 3, 2)


def test_latex_cells_as_before():
    assert escape("a_b & 50% ~x^") == r"a\_b \& 50\% \textasciitilde{}x\textasciicircum{}"
    df = pd.DataFrame({"f": [0.123456, np.nan, -np.inf], "i": [1, 2, 3], "s": ["x_1", None, "y"],
                       "b": [True, False, True]})
    lines = booktabs(df).splitlines()
    assert lines[0] == r"\begin{tabular}{rrll}"
    assert lines[4:7] == [r"0.1235 & 1 & x\_1 & yes \\", r"-- & 2 & -- & no \\", r"-- & 3 & y & yes \\"]
    assert [cell(v) for v in (0.123456, float("nan"), 3, None, True)] == ["0.1235", "--", "3", "--", "yes"]


def test_the_trial_table_is_in_trial_id_order_so_two_runs_write_the_same_files(tmp_path):
    from analysis.pipeline import analyse
    from analysis.report import write_tables
    from analysis.synthetic import grid, write_run

    run = write_run(tmp_path / "run", grid(seeds=3, arch=["resnet18", "vgg11"], lr=[1e-3, 1e-2, 1e-1],
                                           bias_level=[0.0, 0.9]), epochs=2)
    res = analyse(run, metrics=["test_worst_group_acc"], workers=1)
    assert res["trials"]["trial_id"].is_monotonic_increasing and res["trials"].index.equals(pd.RangeIndex(36))
    a, b = write_tables(res, tmp_path / "a"), write_tables(analyse(run, metrics=["test_worst_group_acc"]), tmp_path / "b")
    for x, y in zip(a, b):
        if x.name.startswith(("trials", "sensitivity")) and x.suffix == ".csv":
            assert x.read_bytes() == y.read_bytes(), x.name
