"""The progress callback: counts from Tune's events alone, a right ETA after a resume, silence off a terminal."""
import io
import logging
import pickle
from types import SimpleNamespace

import pytest

from sweeps.progress import SweepProgress, TrialName, format_eta

BASE = {"epochs": 4}


def trial(i):
    return SimpleNamespace(trial_id=f"t{i}", config={"trial": {"trial_id": f"abc{i}", "epochs": 4}})


def run_epochs(p, t, first, last, clock):
    for e in range(first, last):
        p.on_trial_result(0, [], t, {"epoch": e, "val_acc": 0.5 + e / 10})
        clock[0] += 1.0


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("sweeps.progress.time.perf_counter", lambda: now[0])
    return now


def test_counts_follow_start_result_complete_error(clock):
    p = SweepProgress(planned=5, total_epochs=20, base=BASE, metric="val_acc", mode="max", file=io.StringIO())
    a, b, c = trial(0), trial(1), trial(2)
    for t in (a, b, c):
        p.on_trial_start(0, [], t)
    assert (p.done, p.n_running, p.failed, p.pending) == (0, 3, 0, 2)
    run_epochs(p, a, 0, 4, clock)
    p.on_trial_complete(0, [], a)
    run_epochs(p, b, 0, 1, clock)
    p.on_trial_error(0, [], b)            # failed after 1 of its 4 epochs: 3 epochs will never run
    assert (p.done, p.n_running, p.failed, p.pending) == (1, 1, 1, 2)
    assert p.epochs == 5 and p.epochs_skipped == 3 and p.best == pytest.approx(0.8)
    assert p.describe().startswith("1/5 trials · 1 running · 1 failed · 2 pending · epochs 5/20 · ETA ")
    assert p.describe().endswith("best val_acc 0.8000")


def test_eta_after_resume_uses_this_sessions_pace_only(clock):
    # An earlier session finished 2 trials (8 epochs) and left one at epoch 2 of 4; 4 trials planned.
    p = SweepProgress(planned=4, total_epochs=16, base=BASE, done_before=2, epochs_before=10, file=io.StringIO())
    resumed, fresh = trial(2), trial(3)
    p.on_trial_start(0, [], resumed)
    run_epochs(p, resumed, 2, 4, clock)   # reports epochs 2 and 3, one second each
    p.on_trial_complete(0, [], resumed)
    assert p.epochs_skipped == 0          # it reached epoch 4 of 4
    # 12 of 16 epochs done, this session ran 2 epochs in 2 s: 4 epochs left take 4 s
    assert p.eta_s() == pytest.approx(4.0)
    p.on_trial_start(0, [], fresh)
    assert p.pending == 0 and p.done == 3


def test_eta_is_unknown_before_the_first_epoch_and_formats_as_h_mm_ss():
    p = SweepProgress(planned=2, total_epochs=8, base=BASE, file=io.StringIO())
    assert p.eta_s() is None and "ETA ?" in p.describe()
    assert format_eta(3725) == "1:02:05" and format_eta(None) == "?"


def test_silent_when_not_a_terminal(clock):
    out = io.StringIO()
    p = SweepProgress(planned=1, total_epochs=4, base=BASE, file=out)
    t = trial(0)
    p.on_trial_start(0, [], t)
    run_epochs(p, t, 0, 4, clock)
    p.on_trial_complete(0, [], t)
    p.close()
    assert out.getvalue() == "" and p.bar is None


def test_a_failed_trial_logs_its_recorded_error(caplog):
    records = {"abc0": {"error": "ValueError: lr=-1", "attempts": 2, "traceback": "Traceback ...\nValueError"}}
    p = SweepProgress(planned=1, total_epochs=4, base=BASE, records=records.get, file=io.StringIO())
    with caplog.at_level(logging.ERROR, logger="ncsweep"):
        p.on_trial_error(0, [], trial(0))
    assert "trial abc0 failed (attempt 2): ValueError: lr=-1" in caplog.text and "Traceback" in caplog.text


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_the_bar_shows_the_counts(clock):
    out = FakeTerminal()
    p = SweepProgress(planned=2, total_epochs=8, base=BASE, file=out)
    t = trial(0)
    p.on_trial_start(0, [], t)
    run_epochs(p, t, 0, 4, clock)
    p.on_trial_complete(0, [], t)
    p.close()
    assert "1/2 trials · 0 running · 0 failed · 1 pending · epochs 4/8" in out.getvalue()


def test_a_live_bar_pickles_as_ray_tune_saves_its_callbacks():
    p = SweepProgress(planned=2, total_epochs=8, base=BASE, file=FakeTerminal())
    p.on_trial_start(0, [], trial(0))
    copy = pickle.loads(pickle.dumps(p))
    p.close()
    assert copy.bar is None and copy.running == {"t0": 1} and copy.describe() == p.describe()


def test_a_fused_unit_counts_as_its_k_trials(clock):
    unit = SimpleNamespace(trial_id="u", config={"trial": {"trial_id": "fused-1", "epochs": 4,
                                                           "fused": [{"trial_id": f"m{i}"} for i in range(3)]}})
    p = SweepProgress(planned=4, total_epochs=16, base=BASE, file=io.StringIO())
    p.on_trial_start(0, [], unit)
    assert (p.n_running, p.pending) == (3, 1)
    for e in range(2):                   # one result per member and epoch; then stopped after epoch 2
        for _ in range(3):
            p.on_trial_result(0, [], unit, {"epoch": e})
    p.on_trial_complete(0, [], unit)
    assert (p.done, p.n_running, p.epochs, p.epochs_skipped) == (3, 0, 6, 6)


def test_tune_trial_directories_are_named_by_sweep_trial_id():
    assert TrialName(BASE)(trial(7)) == "abc7_t7"
    searched = SimpleNamespace(trial_id="x1", config={"lr": 0.1})     # a searcher's trial: id from base + point
    assert TrialName(BASE)(searched).endswith("_x1") and len(TrialName(BASE)(searched)) > 4
