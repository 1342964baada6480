"""sweeps.pack: how a plan is cut into sequential units under `pack: k`, the spec checks, a unit's
body (per configuration a record, rows, checkpoint and failure cause; one configuration raising
does not stop the others), the driver's settling after a worker died, and (slow) a packed sweep
through Ray Tune that a resume re-packs."""
import json

import pandas as pd
import pytest

from sweeps import pack
from sweeps.finish import finish_packed
from sweeps.worker import Reporter
from sweeps.plan import planned_configs
from sweeps.spec import SpecError, parse_spec
from sweeps.store import RunDir

DATA = {"n_train": 32, "n_val": 16, "n_test": 16, "image_size": 8}
BASE = {"epochs": 1, "width": 0.0625, "batch_size": 16, "arch": "vgg11", "metrics": ["fairness"]}


def _spec(n=5, **kw):
    raw = {"name": "pk", "dataset": {"name": "biased_shapes", "options": DATA}, "base": BASE,
           "space": {"seed": {"grid": list(range(n))}}, **kw}
    return parse_spec(raw)


def test_configs_are_cut_in_plan_order_into_units_of_k_and_a_lone_one_runs_plain(tmp_path):
    configs = planned_configs(_spec(5, pack=2))
    units = pack.units(configs, 2, retries=1, store=RunDir(tmp_path))
    assert [pack.is_unit(u) for u in units] == [True, True, False]   # 2 + 2 + 1
    assert [m["trial_id"] for u in units[:2] for m in pack.members(u)] + [units[2]["trial_id"]] == \
        [c["trial_id"] for c in configs]
    assert units[0]["trial_id"].startswith("packed-") and units[0]["retries"] == 1
    plan = json.loads((tmp_path / "pack_plan.json").read_text())
    assert plan["units"] == 2 and plan["packed_configs"] == 4
    assert pack.units(configs, 0, retries=1) == configs   # off: the plan unchanged


@pytest.mark.parametrize("extra, msg", [
    ({"pack": "two"}, "integer"), ({"pack": -1}, "integer"),
    ({"pack": 2, "scheduler": {"type": "asha", "metric": "val_acc", "mode": "max"}}, "scheduler"),
    ({"pack": 2, "fuse": 2}, "do not combine"),
    ({"pack": 2, "search": {"algorithm": "optuna", "num_samples": 2, "metric": "val_acc", "mode": "max"},
      "space": {"lr": {"loguniform": [0.01, 0.1]}}}, "Optuna"),
])
def test_spec_refuses_pack_it_cannot_honour(extra, msg):
    with pytest.raises(SpecError, match=f"`pack`.*{msg}"):
        _spec(**extra)


def _fake_worker(monkeypatch):
    """ray.tune.report and the Ray-only part of start_attempt replaced: the unit runs in this process."""
    import ray.tune

    from sweeps import worker

    reports = []
    monkeypatch.setattr(ray.tune, "report", lambda metrics, **kw: reports.append(metrics))
    monkeypatch.setattr(worker, "start_attempt", lambda store, cfg, **f: (store.update_record(
        cfg["trial_id"], status="running", error=None, ran_to_end=False, config=cfg, hostname="h", node_id="n",
        attempts=(store.read_record(cfg["trial_id"]) or {}).get("attempts", 0) + 1, **f),
        {"attempt": 1, "hostname": "h", "node_id": "n"})[1])
    return reports


def test_a_unit_keeps_each_configuration_apart_and_goes_on_after_one_raises(tmp_path, monkeypatch):
    """Three configurations in one unit: the second raises on every attempt, the third on its first
    only. Each ends with its own record, rows, checkpoint and cause."""
    from sweeps import worker

    reports = _fake_worker(monkeypatch)
    configs = planned_configs(_spec(3, pack=3, retries=1))
    (unit,) = pack.units(configs, 3, retries=1)
    first, bad, flaky = (c["trial_id"] for c in configs)
    tries = {bad: 0, flaky: 0}

    def epochs(cfg, sink):
        if cfg["trial_id"] in tries:
            tries[cfg["trial_id"]] += 1
            if cfg["trial_id"] == bad or tries[flaky] == 1:
                raise ValueError(f"boom in {cfg['trial_id']}")
        return worker.trial_epochs(cfg, sink)

    worker.trainable({"trial": unit}, str(tmp_path), {}, {}, gpu=0, cpu=1, epochs_fn=epochs)
    store = RunDir(tmp_path)
    assert finish_packed(store, unit, None) == []
    recs = {t: store.read_record(t) for t in (first, bad, flaky)}
    assert {t: r["status"] for t, r in recs.items()} == {first: "completed", bad: "failed", flaky: "completed"}
    assert tries == {bad: 2, flaky: 2}                                   # 1 + retries attempts each
    assert recs[bad]["error"].startswith(f"ValueError: boom in {bad}") and recs[bad]["attempts"] == 2
    assert recs[flaky]["attempts"] == 2 and recs[first]["attempts"] == 1
    assert all(r["packed_in"] == unit["trial_id"] for r in recs.values())
    rows = pd.read_parquet(tmp_path / "rows")
    assert set(rows.trial_id) == {first, flaky}                          # 1 epoch × 3 splits × (all + 2 groups)
    assert (rows.trial_id == first).sum() == (rows.trial_id == flaky).sum() == 9
    assert not rows.duplicated(["trial_id", "epoch", "split", "group"]).any()
    assert (store.checkpoint_dir(first) / "state.pt").exists() and not store.checkpoint_dir(bad).exists()
    assert [r["member"] for r in reports] == [first, flaky]               # one Tune result per epoch run
    assert not list((tmp_path / "crash").glob("*.stderr"))               # ended in Python: captures removed


def test_a_unit_sends_tune_at_most_one_result_per_period_standing_for_the_epochs_since_the_last():
    sent = []
    report = Reporter(sent.append, every_s=3600)
    for i in range(4):
        report({"member": f"t{i}", "epoch": 0})
    report.flush()
    assert [(r["member"], r["epochs_reported"]) for r in sent] == [("t0", 1), ("t3", 3)]   # 4 epochs in 2 results


def test_a_retried_unit_skips_configurations_an_earlier_attempt_settled(tmp_path, monkeypatch):
    from sweeps import worker

    _fake_worker(monkeypatch)
    configs = planned_configs(_spec(2, pack=2))
    (unit,) = pack.units(configs, 2, retries=0)
    store = RunDir(tmp_path)
    store.update_record(configs[0]["trial_id"], status="running", ran_to_end=True, attempts=1)
    ran = []
    worker.trainable({"trial": unit}, str(tmp_path), {}, {}, gpu=0, cpu=1,
                     epochs_fn=lambda cfg, sink: (ran.append(cfg["trial_id"]), worker.trial_epochs(cfg, sink))[1])
    assert ran == [configs[1]["trial_id"]]


def test_after_the_worker_died_only_the_running_configuration_gets_the_cause(tmp_path):
    """The unit's worker died during its second configuration: the first (ran to the end) is
    finished, the second is failed with the death's cause, the third (never reached) stays for the
    driver's next pass."""
    configs = planned_configs(_spec(3, pack=3))
    (unit,) = pack.units(configs, 3, retries=0)
    done, running, unreached = (c["trial_id"] for c in configs)
    store = RunDir(tmp_path)
    store.update_record(done, status="running", ran_to_end=True, attempts=1, config=configs[0])
    rel = "crash/" + running + ".stderr"
    (tmp_path / "crash").mkdir()
    (tmp_path / rel).write_text("Fatal Python error: Segmentation fault\n\nCurrent thread 0x1 (most recent call first):\n"
                                "  File \"conv.py\", line 3 in forward\n")
    store.update_record(running, status="running", attempts=1, config=configs[1], stderr_log=rel, pid=4242,
                        hostname="node-a")
    left = finish_packed(store, unit, RuntimeError("The actor died unexpectedly before finishing this task."))
    assert left == [unreached]
    assert store.read_record(done)["status"] == "completed"   # no rows to merge: a 0-row trial is still its own
    dead = store.read_record(running)
    assert dead["status"] == "failed" and "worker pid 4242 on node-a died by SIGSEGV" in dead["error"]
    assert store.read_record(unreached) is None


@pytest.mark.slow
def test_a_packed_sweep_through_ray_tune_keeps_each_configuration_and_resumes_per_configuration(tmp_path):
    from sweeps.driver import run_sweep

    spec = _spec(5, pack=2, max_concurrent=2, space={"seed": {"grid": [0, 1, 2, 3]}, "lr": {"grid": [0.05]}},
                 variants=[{"lr": {"grid": [0.05]}}, {"lr": {"grid": [1e12]}, "seed": {"grid": [7]}}])   # 4 + a diverging one
    out = tmp_path / "run"
    summary = run_sweep(spec, out, quiet=True)
    store = RunDir(out)
    recs = store.records()
    assert summary["finished"] == summary["planned"] == 5
    assert sorted(r["status"] for r in recs.values()) == ["completed"] * 4 + ["diverged"]
    assert json.loads((out / "pack_plan.json").read_text())["units"] == 2
    rows = pd.read_parquet(out / "rows")
    assert not rows.duplicated(["trial_id", "epoch", "split", "group"]).any() and rows.trial_id.nunique() == 5
    lost = sorted(recs)[0]   # a configuration whose record and rows are gone is re-run, alone
    store.record_path(lost).unlink()
    run_sweep(spec, out, quiet=True)
    after = RunDir(out).records()
    assert after[lost]["status"] in ("completed", "diverged") and after[lost]["attempts"] == 1
    assert {t: r["attempts"] for t, r in after.items() if t != lost} == {t: r["attempts"] for t, r in recs.items()
                                                                         if t != lost}


def test_the_progress_bar_counts_a_units_configurations_and_the_epochs_each_result_stands_for(monkeypatch):
    import io
    from types import SimpleNamespace

    from sweeps.progress import SweepProgress

    now = [100.0]
    monkeypatch.setattr("sweeps.progress.time.perf_counter", lambda: now[0])
    configs = planned_configs(_spec(4, pack=4))
    (unit,) = pack.units(configs, 4, retries=0)
    t = SimpleNamespace(trial_id="u0", config={"trial": unit})
    p = SweepProgress(planned=4, total_epochs=4, base={}, file=io.StringIO())
    p.on_trial_start(0, [], t)
    assert (p.n_running, p.pending) == (4, 0)
    p.on_trial_result(0, [], t, {"epoch": 0, "epochs_reported": 1})
    p.on_trial_result(0, [], t, {"epoch": 0, "epochs_reported": 3})
    now[0] += 8.0
    p.on_trial_complete(0, [], t)
    assert (p.done, p.epochs, p.n_running) == (4, 4, 0)
    assert p.mean_trial_s == 2.0   # 8 s of Tune time shared by 4 configurations run one after another


@pytest.mark.slow
def test_a_worker_that_aborts_mid_unit_fails_only_its_configuration(tmp_path):
    """A real Ray unit of 3 whose worker aborts after the first configuration's rows
    (NCSWEEP_FAULT=epoch.renamed:abort, once): that one is failed with SIGABRT, the other two finish
    (in the driver's next pass), each with its own record."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from sweeps import faults

    raw = {"name": "pk", "dataset": {"name": "biased_shapes", "options": DATA}, "base": BASE,
           "space": {"seed": {"grid": [0, 1, 2]}}, "pack": 3, "retries": 0}
    (tmp_path / "pk.yaml").write_text(json.dumps(raw))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", faults.ENV: "epoch.renamed:abort",
           faults.ONCE_ENV: str(tmp_path / "fired")}
    p = subprocess.run([sys.executable, "-m", "sweeps.cli", "run", str(tmp_path / "pk.yaml"), "--out",
                        str(tmp_path / "run")], cwd=Path(__file__).resolve().parents[2], env=env,
                       capture_output=True, text=True, timeout=400)
    assert p.returncode == 1, p.stderr[-2000:]
    recs = RunDir(tmp_path / "run").records()
    dead = [r for r in recs.values() if r["status"] == "failed"]
    assert len(dead) == 1 and "died by SIGABRT" in dead[0]["error"]
    assert sorted(r["status"] for r in recs.values()) == ["completed", "completed", "failed"]
    rows = pd.read_parquet(tmp_path / "run" / "rows")
    assert set(rows.trial_id) >= {t for t, r in recs.items() if r["status"] == "completed"}


def test_the_driver_settles_a_running_units_configurations_as_its_results_arrive(tmp_path, monkeypatch):
    """The finisher settles the configurations before the one a result names (they have ended),
    each once; the unit's end settles the rest. A unit retried after that skips what is settled."""
    from types import SimpleNamespace

    from sweeps import driver, worker

    _fake_worker(monkeypatch)
    configs = planned_configs(_spec(3, pack=3))
    (unit,) = pack.units(configs, 3, retries=0)
    ids = [c["trial_id"] for c in configs]
    worker.trainable({"trial": unit}, str(tmp_path), {}, {}, gpu=0, cpu=1)   # all three ran to the end
    store = RunDir(tmp_path)
    fin = driver.finisher(store, {})
    t = SimpleNamespace(trial_id="u0", config={"trial": unit}, last_result={})
    fin.on_trial_result(0, [], t, {"member": ids[2]})
    fin.on_trial_result(0, [], t, {"member": ids[2]})   # the same member again: nothing more to settle
    fin.settler.drain()
    assert [store.read_record(i)["status"] for i in ids] == ["completed", "completed", "running"]
    assert fin.settled == {"u0": 2}
    ran = []
    worker.trainable({"trial": unit}, str(tmp_path), {}, {}, gpu=0, cpu=1,   # a retry: nothing left to run
                     epochs_fn=lambda cfg, sink: (ran.append(cfg["trial_id"]), worker.trial_epochs(cfg, sink))[1])
    assert ran == []
    fin.on_trial_complete(0, [], t)
    fin.settler.drain()
    assert [store.read_record(i)["status"] for i in ids] == ["completed"] * 3 and fin.settled == {}


def test_settling_runs_off_tunes_loop_in_order_and_fit_waits_for_it_even_when_tune_fails(tmp_path, monkeypatch, caplog):
    """The finisher's callbacks return at once; the settling thread runs jobs first in, first out,
    a failing one is logged and the next still runs; `_fit` returns (or raises) only once it is done."""
    import threading
    from types import SimpleNamespace

    from sweeps import driver

    gate, done = threading.Event(), []
    settler = driver.Settler()
    settler.submit("a", lambda: (gate.wait(5), done.append("a")))
    settler.submit("b", lambda: 1 / 0)
    settler.submit("c", lambda: done.append("c"))
    assert done == []                       # handed over: nothing ran on the caller's thread
    gate.set()
    settler.drain()
    assert done == ["a", "c"] and "finishing b failed" in caplog.text

    slow = driver.Settler()
    slow.submit("slow", lambda: (__import__("time").sleep(0.3), done.append("slow")))
    tuner = SimpleNamespace(fit=lambda: (_ for _ in ()).throw(RuntimeError("Tune's loop died")))
    monkeypatch.setattr(driver, "make_tuner", lambda *a, **k: tuner)
    with pytest.raises(RuntimeError, match="loop died"):
        driver._fit(SimpleNamespace(), RunDir(tmp_path), {}, {}, 1, None, [SimpleNamespace(settler=slow)], None)
    assert done[-1] == "slow"


@pytest.mark.parametrize("epochs, writes", [(1, 2), (2, 3)])
def test_a_configuration_ends_in_its_last_epochs_record_write_before_tune_hears_of_that_epoch(
        tmp_path, monkeypatch, epochs, writes):
    """One record write per configuration less: the last epoch's write carries `ran_to_end` and the
    timings (start + one per epoch in all), and the record says so before that epoch's result is sent."""
    from sweeps import worker

    _fake_worker(monkeypatch)
    store = RunDir(tmp_path)
    count = []
    update = RunDir.update_record
    monkeypatch.setattr(RunDir, "update_record", lambda self, tid, **f: (count.append(tid), update(self, tid, **f))[1])
    (cfg,) = planned_configs(_spec(1, base={**BASE, "epochs": epochs}))
    seen = []
    worker.run_one(store, cfg, {}, report=lambda r: seen.append(dict(store.read_record(cfg["trial_id"]))))
    assert len(count) == writes
    assert [(s["epochs_done"], s["ran_to_end"]) for s in seen] == [(e + 1, e + 1 == epochs) for e in range(epochs)]
    rec = store.read_record(cfg["trial_id"])
    assert rec["ran_to_end"] and rec["wall_s"] >= rec["run_trial_s"] > 0 and rec["final"]["epoch"] == epochs - 1
    assert rec["rows_by_epoch"] == {str(e): 9 for e in range(epochs)}
