"""Planted effects are recovered; tables equal direct statsmodels calls; loading and selection."""
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from analysis.compare import arch_summary, paired_differences, spearman_ci
from analysis.load import ResultsError, load
from analysis.select import parse_metric, select_epochs, trial_table
from analysis.sensitivity import design, fit_table


def planted(seed=0, seeds=6):
    """metric = 2·log10(lr) − 1·bias_level + arch offset + noise; weight_decay has no effect."""
    rng = np.random.default_rng(seed)
    rows = []
    for arch, off in (("resnet18", 0.0), ("vgg11", -0.5), ("densenet121", 0.3)):
        for lr in (1e-3, 1e-2, 1e-1):
            for bias in (0.0, 0.5, 1.0):
                for s in range(seeds):
                    wd = float(10 ** rng.uniform(-5, -3))
                    y = 2 * np.log10(lr) - bias + off + rng.normal(0, 0.3)
                    rows.append({"trial_id": f"{arch}-{lr}-{bias}-{s}", "arch": arch, "lr": lr, "weight_decay": wd,
                                 "bias_level": bias, "seed": s, "method": "erm", "m": y})
    return pd.DataFrame(rows)


def test_planted_effects_recovered_inside_their_cis():
    """Over 20 independent synthetic sweeps each 95% CI covers its planted standardized effect
    (and 0 for weight decay) at least 16 times (expected 19; P(<16) < 2% per term)."""
    hits = {}
    for seed in range(20):
        trials = planted(seed)
        t = fit_table(trials, "m", fanova=False)
        eff = t.effects.set_index("term")
        sd_y = trials.m.std(ddof=0)
        truth = {"lr": 2 * np.log10(trials.lr).std(ddof=0) / sd_y, "bias_level": -trials.bias_level.std(ddof=0) / sd_y,
                 "C(arch)[T.vgg11]": (-0.5 - 0.3) / sd_y, "C(arch)[T.resnet18]": (0.0 - 0.3) / sd_y, "weight_decay": 0.0}
        for term, v in truth.items():
            hits[term] = hits.get(term, 0) + int(eff.loc[term, "ci_low"] <= v <= eff.loc[term, "ci_high"])
        assert t.r2 > 0.9 and t.n == len(trials)
    assert all(h >= 16 for h in hits.values()), hits


def test_anova_ranks_axes_by_planted_size():
    t = fit_table(planted(), "m", fanova=False)
    eta = t.anova.set_index("axis")["partial_eta2"]
    assert eta["lr"] > eta["bias_level"] > eta["weight_decay"]


def test_fanova_puts_lr_first():
    imp = fit_table(planted(seeds=2), "m").importance.set_index("axis")["fanova"]
    assert imp.idxmax() == "lr"


def test_table_equals_a_direct_statsmodels_call():
    trials = planted()
    frame, varying, _ = design(trials, "m")
    direct = smf.ols("y ~ C(arch) + lr + weight_decay + bias_level", data=frame).fit(cov_type="HC3", use_t=True)
    t = fit_table(trials, "m", fanova=False).effects.set_index("term")
    for term in ("lr", "bias_level", "weight_decay", "C(arch)[T.vgg11]"):
        assert t.loc[term, "effect"] == pytest.approx(direct.params[term], rel=1e-10)
        assert t.loc[term, "ci_low"] == pytest.approx(direct.conf_int().loc[term, 0], rel=1e-8)
        assert t.loc[term, "p"] == pytest.approx(direct.pvalues[term], rel=1e-8)


def test_unvaried_axes_reported_and_too_few_trials_explained():
    trials = planted().groupby("arch").head(1)   # 3 trials; arch (2 dummies) and wd vary: 4 parameters
    t = fit_table(trials, "m")
    assert "too few to fit" in t.message and "method" in t.not_varied


def test_stopped_trials_left_out_by_default():
    trials = planted()
    trials["trial_status"] = np.where(np.arange(len(trials)) % 5 == 0, "stopped", "done")
    t = fit_table(trials, "m", fanova=False)
    assert t.n == (trials.trial_status == "done").sum() and t.excluded_stopped == (trials.trial_status == "stopped").sum()


def test_paired_differences_and_arch_summary():
    trials = planted()
    trials = trials.assign(weight_decay=1e-4)   # make configs match across archs
    p = paired_differences(trials, ["m"]).set_index(["arch_a", "arch_b"])
    assert p.loc[("densenet121", "vgg11"), "ci_low"] <= 0.8 <= p.loc[("densenet121", "vgg11"), "ci_high"]
    s = arch_summary(trials, ["m"]).set_index("arch")
    assert s.loc["vgg11", "mean"] < s.loc["densenet121", "mean"]


def test_spearman_bootstrap_ci_covers_rho():
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    r = spearman_ci(x, x + rng.normal(size=60))
    assert r["ci_low"] < r["rho"] < r["ci_high"] and r["rho"] > 0.4


def test_parse_metric_names():
    assert parse_metric("test_worst_group_acc") == ("test", "worst_group_acc", "all")
    assert parse_metric("train_nc1_g1") == ("train", "nc1", "1")
    with pytest.raises(ValueError, match="<split>_<metric>"):
        parse_metric("worst_group_acc")


def test_one_metric_parser_where_the_two_once_disagreed():
    from nccore import catalogue

    # analysis tables and the catalogue read a subgroup suffix the same way: integer ids only
    assert parse_metric("test_acc_g12") == ("test", "acc", "12")
    assert catalogue.parse_metric("test_acc_g12") == ("test", "acc", "12")
    for bad in ("test_acc_ga", "test_nc1_g", "test_not_a_metric"):
        with pytest.raises(ValueError, match="unknown metric"):
            parse_metric(bad)
        with pytest.raises(KeyError):
            catalogue.parse_metric(bad)
    # a table column always names a split: train_loss is the loss on the train split there, while
    # for Ray Tune (split not required) it is the trial metric train_loss
    assert parse_metric("train_loss") == ("train", "loss", "all")
    assert catalogue.parse_metric("train_loss") == (None, "train_loss", None)
    assert parse_metric("train_loss_g1") == ("train", "loss", "1")


def _rows(tmp_path):
    from sweeps.store import RunDir

    store = RunDir(tmp_path)
    for tid, best in (("a", 1), ("b", 2)):
        for epoch in range(3):
            rows = [{"trial_id": tid, "epoch": epoch, "split": s, "group": g, "status": "ok", "arch": "vgg11",
                     "lr": 0.1, "worst_group_acc": 1.0 - abs(epoch - best) * 0.1, "nc1": float(epoch)}
                    for s in ("train", "val", "test") for g in ("all", "0")]
            store.write_epoch(tid, epoch, rows, {"attempt": 1})
    return store


def test_load_selects_final_or_best_epoch(tmp_path):
    _rows(tmp_path)
    df = load(tmp_path)
    assert len(df) == 2 * 3 * 6 and not df.duplicated(["trial_id", "epoch", "split", "group"]).any()
    final = trial_table(select_epochs(df, "final"), ["test_nc1"]).set_index("trial_id")
    assert final.loc["a", "epoch"] == 2
    best = trial_table(select_epochs(df, "best:worst_group_acc"), ["test_nc1"]).set_index("trial_id")
    assert best.loc["a", "epoch"] == 1 and best.loc["b", "epoch"] == 2 and best.loc["a", "selection"] == "best:worst_group_acc"
    with pytest.raises(ValueError, match="no validation column"):
        select_epochs(df, "best:nope")


def test_corrupt_file_is_skipped_with_its_name(tmp_path):
    _rows(tmp_path)
    bad = tmp_path / "rows" / "a" / "epoch-0001.parquet"
    bad.write_bytes(b"PAR1 truncated")
    with pytest.warns(RuntimeWarning, match="epoch-0001.parquet"):
        df = load(tmp_path)
    assert len(df) == 2 * 3 * 6 - 6


def test_empty_and_missing_run_dirs_are_clear_errors(tmp_path):
    with pytest.raises(ResultsError, match="no result files"):
        load(tmp_path)
    with pytest.raises(ResultsError, match="not a directory"):
        load(tmp_path / "nope")
    (tmp_path / "rows" / "x").mkdir(parents=True)
    (tmp_path / "rows" / "x" / "epoch-0000.parquet").write_bytes(b"garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ResultsError, match="could be read"):
            load(tmp_path)


def test_select_epochs_runs_the_one_sql_rule_on_a_frame():
    nan = float("nan")
    rows = [dict(trial_id="a", epoch=e, split="val", group="all", status=s, worst_group_acc=w)
            for e, s, w in ((0, "ok", 0.5), (1, None, 0.8), (2, "ok", 0.8), (3, "diverged", 0.9), (4, "ok", nan))]
    df = pd.DataFrame(rows, index=[10, 11, 12, 13, 14])
    best = select_epochs(df, "best:worst_group_acc")
    assert list(best.index) == [11] and best.selection.iloc[0] == "best:worst_group_acc"  # ties: earliest; None: ok
    assert list(select_epochs(df, "final").epoch) == [4]                                    # the diverged row never
    with pytest.raises(ValueError, match="expected 'final' or 'best:<metric>'"):
        select_epochs(df, "last")
