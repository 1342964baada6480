"""sweeps.fuse: how a plan is grouped under `fuse: k`, the spec checks, and (slow) a fused sweep
whose run directory holds per configuration what separate trials write."""
import json

import pandas as pd
import pytest

from sweeps import fuse
from sweeps.plan import planned_configs
from sweeps.spec import SpecError, parse_spec

DATA = {"n_train": 64, "n_val": 32, "n_test": 32, "image_size": 8}
BASE = {"epochs": 2, "width": 0.125, "batch_size": 32, "arch": "vgg11", "metrics": ["fairness"]}


def _spec(**kw):
    raw = {"name": "fz", "dataset": {"name": "biased_shapes", "options": DATA}, "base": BASE,
           "space": {"lr": {"grid": [0.01, 0.02, 0.05]}, "weight_decay": {"grid": [0.0, 5e-4]}}, **kw}
    return parse_spec(raw)


def test_compatible_configs_are_cut_into_groups_of_k_in_plan_order():
    configs = planned_configs(_spec(fuse=4))
    groups, singles = fuse.group(configs, 4)
    assert [len(g) for g in groups] == [4, 2]
    assert [c["trial_id"] for g in groups for c in g] == [c["trial_id"] for c in configs]
    assert singles == []


def test_configs_that_differ_outside_the_fuse_axes_or_cannot_fuse_run_apart():
    spec = _spec(fuse=3, variants=[{"arch": {"grid": ["vgg11"]}}, {"arch": {"grid": ["resnet18"]}},
                                   {"method": {"grid": ["dfr"]}, "lr": {"grid": [0.05]}},
                                   {"optimizer": {"grid": ["adam"]}, "lr": {"grid": [0.01]}}])
    configs = planned_configs(spec)
    groups, singles = fuse.group(configs, 3)
    assert [len(g) for g in groups] == [3, 3, 3, 3]            # 6 vgg + 6 resnet, never mixed
    assert all(len({c["arch"] for c in g}) == 1 for g in groups)
    why = {c.get("method", "erm") + "/" + c.get("optimizer", "sgd"): w for c, w in singles}
    assert "own loop" in why["dfr/sgd"] and "SGD only" in why["erm/adam"]
    text = fuse.describe(configs, 3)
    assert "→ 4 fused trials" in text and "4 unfused" in text and "dfr" in text


def test_a_lone_compatible_config_runs_unfused_and_the_plan_is_written(tmp_path):
    from sweeps.store import RunDir

    configs = planned_configs(_spec(fuse=5))
    store = RunDir(tmp_path)
    units = fuse.units(configs, 5, store)
    assert [fuse.is_unit(u) for u in units] == [True, False]
    assert len(units[0]["fused"]) == 5 and units[0]["trial_id"].startswith("fused-")
    plan = json.loads((tmp_path / "fuse_plan.json").read_text())
    assert plan["fused_configs"] == 5 and plan["unfused_configs"] == 1
    assert fuse.units(configs, 0) == configs                  # off: the plan unchanged


@pytest.mark.parametrize("extra, msg", [
    ({"fuse": "two"}, "integer"), ({"fuse": -1}, "integer"),
    ({"fuse": 2, "scheduler": {"type": "asha", "metric": "val_acc", "mode": "max"}}, "scheduler"),
])
def test_spec_refuses_fuse_it_cannot_honour(extra, msg):
    with pytest.raises(SpecError, match=msg):
        _spec(**extra)


@pytest.mark.slow
def test_a_fused_sweep_writes_what_separate_trials_write(tmp_path):
    import pyarrow.parquet as pq

    from sweeps.driver import run_sweep
    from sweeps.store import RunDir

    spec = parse_spec({"name": "fz", "dataset": {"name": "biased_shapes", "options": DATA}, "base": BASE,
                       "space": {"lr": {"grid": [0.02, 0.05, 0.03]}}, "fuse": 2, "max_concurrent": 2})
    out = tmp_path / "run"
    summary = run_sweep(spec, out, quiet=True)
    recs = RunDir(out).records()
    assert summary["finished"] == summary["planned"] == 3
    by_lr = {r["config"]["lr"]: r for r in recs.values()}
    fused_ids = json.loads((out / "fuse_plan.json").read_text())["groups"][0]
    assert {by_lr[0.02]["trial_id"], by_lr[0.05]["trial_id"]} == set(fused_ids)
    assert by_lr[0.02]["fused_with"] == fused_ids and "fused_with" not in by_lr[0.03]   # 0.03 ran alone
    assert {r["status"] for r in recs.values()} == {"completed"}
    schema = {lr: pq.read_schema(out / "rows" / by_lr[lr]["trial_id"] / "trial.parquet").names for lr in by_lr}
    assert schema[0.02] == schema[0.05] == schema[0.03]   # a fused trial's rows look like a separate trial's
    rows = pd.read_parquet(out / "rows")
    assert not rows.duplicated(["trial_id", "epoch", "split", "group"]).any()
    assert (rows.trial_id == by_lr[0.05]["trial_id"]).sum() == 2 * 9   # 2 epochs × 3 splits × (all + 2 subgroups)
    before = {t: r["attempts"] for t, r in recs.items()}
    run_sweep(spec, out, quiet=True)   # resume: nothing left to do
    assert {t: r["attempts"] for t, r in RunDir(out).records().items()} == before

def test_the_fused_trial_writes_each_configuration_as_a_separate_trial(tmp_path, monkeypatch):
    """The fused Ray trial body without a Ray cluster: per configuration a record, rows and a
    checkpoint; the driver-side finish settles each one; a diverged member does not stop the other."""
    import ray.tune

    from sweeps import worker
    from sweeps.finish import finish_fused
    from sweeps.store import RunDir

    reports = []
    monkeypatch.setattr(ray.tune, "report", lambda metrics, **kw: reports.append(metrics))
    monkeypatch.setattr(worker, "start_attempt", lambda store, cfg, **fields: (
        store.update_record(cfg["trial_id"], status="running", attempts=1, config=cfg, **fields),
        {"attempt": 1, "hostname": "h", "node_id": "n"})[1])
    spec = parse_spec({"name": "fz", "dataset": {"name": "biased_shapes", "options": DATA},
                       "base": {**BASE, "epochs": 2}, "space": {"lr": {"grid": [0.05, 1e12]}}, "fuse": 2})
    (unit,) = fuse.units(planned_configs(spec), 2)
    worker.trainable({"trial": unit}, str(tmp_path), spec.base_config(), {}, gpu=0, cpu=1)
    store = RunDir(tmp_path)
    finish_fused(store, unit, None)
    good, bad = (store.read_record(c["trial_id"]) for c in unit["fused"])
    assert good["status"] == "completed" and bad["status"] == "diverged"
    assert good["fused_with"] == [c["trial_id"] for c in unit["fused"]]
    rows = pd.read_parquet(tmp_path / "rows")
    assert set(rows[rows.trial_id == good["trial_id"]].epoch) == {0, 1}
    assert (store.checkpoint_dir(good["trial_id"]) / "state.pt").exists()
    assert {r["member"] for r in reports} == {good["trial_id"], bad["trial_id"]}
