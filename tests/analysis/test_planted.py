"""Each analysis defect of issue 15, checked on a synthetic run directory with planted effects
(analysis.synthetic: final test worst-group accuracy = 0.85 − 0.4·bias + 0.05·log10(lr) + arch offset)."""
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pyarrow.parquet as pq
import pandas as pd
import pytest

from analysis.compare import spearman_ci
from analysis.load import load
from analysis.pipeline import analyse
from analysis.sensitivity import axis_of, fit_table
from analysis.synthetic import grid, write_run

ARCHS = ["resnet18", "vgg11"]


def _trials(seeds=3, **kw):
    return grid(seeds=seeds, arch=ARCHS, lr=[1e-3, 1e-2, 1e-1], bias_level=[0.0, 0.5, 0.9], **kw)


def _analyse(run, **kw):
    return analyse(run, **{"metrics": ["test_worst_group_acc"], "fanova": False, **kw})


def _table(res, metric="test_worst_group_acc", subset="all"):
    return next(t for t in res["tables"] if t.metric == metric and t.subset == subset)


def _effect(table, term):
    return table.effects.set_index("term").loc[term]


def test_stopped_diverged_failed_trials_stay_out_of_effects_and_are_counted(tmp_path):
    """15 bad trials at bias 0 with worst-group accuracy ≈ 0 would flip the bias effect if used."""
    trials = _trials()
    rng = np.random.default_rng(1)
    for i in range(15):
        status = ("stopped", "diverged", "failed")[i % 3]
        extra = {"stop_at": 0, "wga": float(rng.uniform(0, 0.02))} if status == "stopped" else \
            {"diverge_at": i % 2} if status == "diverged" else {"stop_at": 1, "wga": 0.0, "error": "ValueError: boom"}
        trials.append({"arch": ARCHS[i % 2], "lr": 0.1, "bias_level": 0.0, "seed": 10 + i, "trial_id": f"bad{i}",
                       "status": status, **extra})
    run = write_run(tmp_path / "run", trials)
    res = _analyse(run)
    t = _table(res)
    eff = _effect(t, "bias_level")
    assert eff.ci_high < -0.5, eff            # the planted effect is strongly negative
    assert t.n == 54 and t.excluded == {"status stopped": 5, "status diverged": 5, "status failed": 5}
    assert set(res["trials"].query("trial_id.str.startswith('bad')").status) == {"stopped", "diverged", "failed"}
    # a trial that diverged at epoch 0 is still a row of the trial table, not lost
    assert "bad0" in set(res["trials"].trial_id) or "bad3" in set(res["trials"].trial_id)
    assert (res["trials"].trial_id == "bad1").sum() == 1    # diverged at epoch 1 (i=1: diverge_at 1)
    wide = _analyse(run, include_status=("completed", "stopped"))
    tw = _table(wide)
    assert tw.n == 59 and _effect(tw, "bias_level").effect > eff.effect    # the stopped trials pull it toward 0


def test_diverged_at_epoch_zero_is_counted(tmp_path):
    trials = _trials(seeds=2) + [{"arch": "vgg11", "lr": 0.1, "bias_level": 0.5, "seed": 9, "trial_id": "d0",
                                  "status": "diverged", "diverge_at": 0}]
    res = _analyse(write_run(tmp_path / "run", trials))
    row = res["trials"].set_index("trial_id").loc["d0"]
    assert row.status == "diverged" and pd.isna(row.epoch)
    assert _table(res).excluded == {"status diverged": 1}


def test_old_done_status_counts_as_completed(tmp_path):
    trials = [{**t, "status": "done"} for t in _trials(seeds=2)]
    res = _analyse(write_run(tmp_path / "run", trials))
    assert _table(res).n == len(trials) and set(res["trials"].status) == {"completed"}


def test_learned_nothing_is_flagged_excluded_and_counted(tmp_path):
    trials = _trials(seeds=2)
    for t in trials[:4]:
        t["learned_nothing"] = True
    res = _analyse(write_run(tmp_path / "run", trials))
    flagged = res["trials"].set_index("trial_id").learned_nothing
    assert flagged[[t["trial_id"] for t in trials[:4]]].all() and flagged.sum() == 4
    t = _table(res)
    assert t.n == len(trials) - 4 and list(t.excluded.values()) == [4]
    kept = _analyse(tmp_path / "run", keep_learned_nothing=True)
    assert _table(kept).n == len(trials)


def test_newest_attempt_by_recorded_time_not_path_order(tmp_path):
    """The same trial in two run directories: the one written later wins, whatever the paths sort as."""
    base = [t for t in _trials(seeds=1) if t["arch"] == "vgg11"][:1][0]
    old = write_run(tmp_path / "z_old", [{**base, "wga": 0.1, "written_at": 1.0e9, "attempt": 2}])
    new = write_run(tmp_path / "a_new", [{**base, "wga": 0.7, "written_at": 2.0e9, "attempt": 1}])
    for dirs in ([old, new], [new, old]):
        df = load(dirs)
        got = df[(df.split == "test") & (df.group == "all") & (df.epoch == 2)].worst_group_acc
        assert list(got) == [0.7]


def test_recorded_epoch_end_time_beats_file_time(tmp_path):
    base = [t for t in _trials(seeds=1) if t["arch"] == "vgg11"][:1][0]
    newer = write_run(tmp_path / "b", [{**base, "wga": 0.7, "epoch_ended_at": 2.0e9}])
    older = write_run(tmp_path / "a", [{**base, "wga": 0.1, "epoch_ended_at": 1.0e9}])   # written last on disk
    df = load([older, newer])
    got = df[(df.split == "test") & (df.group == "all") & (df.epoch == 2)].worst_group_acc
    assert list(got) == [0.7]


def test_interaction_terms_are_labelled_with_their_own_axes(tmp_path):
    trials = _trials(seeds=3)
    for t in trials:   # plant: vgg11 gains more from a larger lr than resnet18
        t["offset"] = 0.1 * np.log10(t["lr"]) if t["arch"] == "vgg11" else 0.0
    res = _analyse(write_run(tmp_path / "run", trials), interactions="arch:lr,lr:bias_level")
    eff = _table(res).effects.set_index("term")
    assert eff.loc["C(arch)[T.vgg11]:lr", "axis"] == "arch×lr"
    assert eff.loc["lr:bias_level", "axis"] == "lr×bias_level"
    assert eff.loc["C(arch)[T.vgg11]:lr", "ci_low"] > 0          # planted: positive
    assert axis_of("C(method)[T.dfr]:C(arch)[T.vgg11]") == "method×arch"


def test_unknown_metric_or_axis_is_an_error_listing_valid_names(tmp_path):
    run = write_run(tmp_path / "run", _trials(seeds=1))
    with pytest.raises(ValueError, match=r"test_worst_grp_acc.*did you mean 'test_worst_group_acc'.*valid"):
        analyse(run, metrics=["test_worst_grp_acc"])
    with pytest.raises(ValueError, match=r"arch:lrr.*swept axes \(arch, lr, bias_level\); unknown: lrr"):
        analyse(run, interactions="arch:lrr")
    with pytest.raises(ValueError, match=r"unknown status 'finished'.*completed, stopped"):
        from analysis.filters import parse_statuses
        parse_statuses("finished")


def _damage_pages(path):
    """Overwrite bytes in the middle of the column data, leaving the footer intact."""
    meta = pq.read_metadata(path)
    col = meta.row_group(0).column(meta.schema.names.index("worst_group_acc"))
    start = col.data_page_offset
    data = bytearray(path.read_bytes())
    data[start:start + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))


def test_damaged_pages_with_intact_footer_are_skipped_with_the_file_named(tmp_path):
    run = write_run(tmp_path / "run", _trials(seeds=1), per_epoch=True)
    bad = run / "rows" / "tvgg11-0.01-0.5-s0" / "epoch-0001.parquet"
    _damage_pages(bad)
    pq.read_metadata(bad)                                    # the footer still reads
    with pytest.raises(Exception):
        pq.read_table(bad)                                   # the pages do not
    with pytest.warns(RuntimeWarning, match="epoch-0001.parquet"):
        res = _analyse(run)
    assert res["n_rows"] == 18 * 3 * 9 - 9


def test_spearman_ci_resamples_configurations_not_trials():
    """Null: x and y independent between configurations, seeds nearly identical within one. A
    bootstrap over trials treats 10 seeds as 10 independent points and excludes 0 far too often."""
    rng = np.random.default_rng(0)
    miss_cluster = miss_trial = 0
    runs = 30
    for _ in range(runs):
        cfg = np.repeat(np.arange(10), 8)
        x = rng.normal(size=10)[cfg] + rng.normal(0, 0.05, len(cfg))
        y = rng.normal(size=10)[cfg] + rng.normal(0, 0.05, len(cfg))
        c = spearman_ci(x, y, cfg, n_boot=500)
        t = spearman_ci(x, y, None, n_boot=500)
        miss_cluster += int(c["ci_low"] > 0 or c["ci_high"] < 0)
        miss_trial += int(t["ci_low"] > 0 or t["ci_high"] < 0)
    assert miss_cluster <= 5 and miss_trial >= 10, (miss_cluster, miss_trial)


def test_correction_choices_change_adjusted_p(tmp_path):
    res = {c: _table(_analyse(write_run(tmp_path / c, _trials(seeds=2)), correction=c))
           for c in ("none", "holm", "bh")}
    p = {c: t.effects.set_index("term").p_adj for c, t in res.items()}
    assert (p["none"] == res["none"].effects.set_index("term").p).all()
    assert (p["holm"] >= p["bh"] - 1e-15).all() and (p["bh"] >= p["none"] - 1e-15).all()
    assert res["holm"].meta["correction"] == "holm" and "HC3" in res["holm"].meta["ci"]


def test_cli_on_a_directory_named_with_a_quote(tmp_path):
    run = write_run(tmp_path / "it's run", _trials(seeds=2))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    out = subprocess.run([sys.executable, "-m", "sweeps.cli", "analyze", str(run), "--correction", "bh",
                          "--metrics", "test_worst_group_acc,train_nc1",
                          "--include-status", "stopped", "--interactions", "arch:lr"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (run / "analysis" / "sensitivity.csv").exists()
    bad = subprocess.run([sys.executable, "-m", "sweeps.cli", "analyze", str(run), "--metrics", "test_nope"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 2 and "valid:" in bad.stderr


def test_planted_effects_recovered_from_a_run_directory(tmp_path):
    trials = _trials(seeds=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = _analyse(write_run(tmp_path / "run", trials, noise_sd=0.03))
    t = _table(res)
    tab = res["trials"]
    sd = tab.test_worst_group_acc.std(ddof=0)
    truth = {"bias_level": -0.4 * tab.bias_level.std(ddof=0) / sd,
             "lr": 0.05 * np.log10(tab.lr).std(ddof=0) / sd,
             "C(arch)[T.vgg11]": -0.08 / sd}
    for term, v in truth.items():
        e = _effect(t, term)
        assert e.ci_low <= v <= e.ci_high, (term, v, e)
    assert t.meta["reference"] == {"arch": "resnet18"}


def test_many_files_scan_in_processes_gives_the_same_rows(tmp_path, monkeypatch):
    load_mod = sys.modules["analysis.load"]
    run = write_run(tmp_path / "run", _trials(seeds=1), per_epoch=True)
    one = load(run)
    monkeypatch.setattr(load_mod, "PARALLEL_SCAN_FILES", 10)
    monkeypatch.setattr("analysis.parallel.default_workers", lambda: 2)
    many = load(run)
    parts = load_mod._scan_in_processes(load_mod.row_files(run), ["trial_id", "lr"], ["lr"])
    shutil.rmtree(os.path.dirname(parts[0]))
    assert len(parts) == 2                                                  # the pool path itself works
    key = ["trial_id", "epoch", "split", "group"]
    assert len(many) == len(one) == 18 * 3 * 9
    a, b = one.sort_values(key).reset_index(drop=True), many.sort_values(key).reset_index(drop=True)
    cols = key + ["worst_group_acc", "acc", "arch", "lr", "bias_level", "seed"]   # per-row and per-trial columns
    assert a[cols].equals(b[cols])
    _damage_pages(run / "rows" / "tvgg11-0.01-0.5-s0" / "epoch-0002.parquet")
    with pytest.warns(RuntimeWarning, match="epoch-0002.parquet"):
        assert len(load(run)) == 18 * 3 * 9 - 9
