"""The `ncsweep` command line: help and examples everywhere, --version, did-you-mean, --dry-run, status, logs.
None of these start Ray (a run directory is written by hand with the store's own functions)."""
import argparse
import json

import pytest

from sweeps.cli import EXAMPLES, build_parser, main
from sweeps.logs import LOG_NAME
from sweeps.plan import planned_configs
from sweeps.spec import load_spec
from sweeps.store import RunDir


def subparsers():
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_command_has_help_an_example_and_help_for_every_argument():
    for name, parser in subparsers().items():
        text = parser.format_help()
        assert "example:\n  ncsweep " + name in text, name
        for action in parser._actions:
            assert action.help, f"ncsweep {name}: argument {action.dest} has no help text"


def test_every_example_parses(capsys):
    for name, example in EXAMPLES.items():
        for line in example.split("\n"):
            argv = line.split("#")[0].split("|")[0].split()[1:]
            assert argv[0] == name, line
            build_parser().parse_args(argv)


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("ncsweep 0.")


def test_unknown_command_suggests_the_closest(capsys):
    assert main(["stauts", "runs/x"]) == 2
    assert "unknown command 'stauts'; did you mean `status`?" in capsys.readouterr().err


def test_dry_run_prints_the_plan_and_starts_nothing(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["run", "sweeps/specs/demo.yaml", "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    spec = load_spec("sweeps/specs/demo.yaml")
    n, epochs = len(planned_configs(spec)), spec.base["epochs"]
    assert (f"{n} planned ({spec.search['algorithm']}), 0 already finished in this directory, {n} to run; "
            f"{n * epochs} epochs in all") in text
    assert f"swept keys: {', '.join(sorted(spec.space))}" in text and not out.exists()


def test_an_invalid_spec_is_an_error_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nloggers: [tensorbord]\n")
    assert main(["run", str(bad), "--dry-run"]) == 2
    assert "unknown logger 'tensorbord'; choose from ['mlflow', 'tensorboard', 'wandb']; did you mean `tensorboard`?" \
        in capsys.readouterr().err


@pytest.fixture
def run_dir(tmp_path):
    """A run directory as a 3-trial sweep leaves it: one done (2 epochs × 3 rows), one failed, one running
    (its record only)."""
    store = RunDir(tmp_path / "run")
    spec = load_spec("sweeps/specs/demo.yaml")
    store.write_manifest({"name": "demo", "digest": spec.digest, "spec": spec.raw, "planned_count": 2})
    rows = [{"trial_id": "aaa111", "epoch": 0, "split": s, "group": "all", "acc": 0.5} for s in ("train", "val", "test")]
    for epoch in range(2):
        store.write_epoch("aaa111", epoch, [{**r, "epoch": epoch} for r in rows], {})
        store.record_epoch("aaa111", epoch, len(rows))
    store.update_record("aaa111", status="done", wall_s=3.0, config={"trial_id": "aaa111", "arch": "vgg11", "lr": 0.05,
                                                                      "bias_level": 0.9, "epochs": 2},
                        final={"epoch": 1, "val_worst_group_acc": 0.625, "val_acc": 0.75})
    store.update_record("aab333", status="running", epochs_done=1, config={"arch": "resnet18", "lr": 0.03,
                                                                          "bias_level": 0.0})
    store.update_record("bbb222", status="failed", epochs_done=0, attempts=2, error="ValueError: lr=-1",
                        traceback="Traceback (most recent call last):\nValueError: lr=-1")
    (store.path / LOG_NAME).write_text("2026-01-01 ncsweep ERROR trial bbb222 failed (attempt 2): ValueError: lr=-1\n")
    return store.path


def test_status_counts_trials_epochs_and_rows(run_dir, capsys):
    main(["status", str(run_dir)])
    text = capsys.readouterr().out
    assert "2/2 trials finished" in text and "3 epochs run, 6 rows written" in text
    assert "epoch files" not in text
    main(["status", str(run_dir), "--json"])
    s = json.loads(capsys.readouterr().out)
    assert (s["planned"], s["finished"], s["epochs"], s["rows"]) == (2, 2, 3, 6)
    assert s["failures"] == {"bbb222": "ValueError: lr=-1"}


def test_logs_shows_the_driver_log_and_one_trials_error(run_dir, capsys):
    assert main(["logs", str(run_dir)]) == 0
    assert "trial bbb222 failed" in capsys.readouterr().out
    assert main(["logs", str(run_dir), "bbb"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("trial bbb222: failed, 2 attempts, 0 epochs\nerror: ValueError: lr=-1\nTraceback")
    assert "ncsweep.log lines naming bbb222:" in text


def test_logs_of_an_unknown_trial_or_directory_is_an_error(run_dir, tmp_path, capsys):
    assert main(["logs", str(run_dir), "zzz"]) == 2
    assert "trial 'zzz': no trial of" in capsys.readouterr().err
    assert main(["status", str(tmp_path / "nowhere")]) == 2
    assert "not an ncsweep run directory" in capsys.readouterr().err


def test_status_trials_lists_swept_values_and_the_latest_search_metric(run_dir, capsys):
    assert main(["status", str(run_dir), "--trials"]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.split()[:1] == ["trial_id"])
    # demo.yaml sweeps arch, lr, bias_level and searches on val_worst_group_acc
    # (in the order of the stored spec's space: keys sorted)
    assert lines[head].split() == ["trial_id", "status", "epochs", "arch", "bias_level", "lr",
                                   "val_worst_group_acc", "(latest)"]
    assert [ln.split() for ln in lines[head + 1:]] == [["aaa111", "done", "2", "vgg11", "0.9", "0.05", "0.625"],
                                                       ["aab333", "running", "1", "resnet18", "0", "0.03", "-"],
                                                       ["bbb222", "failed", "0", "-", "-", "-", "-"]]


def test_logs_of_one_trial_shows_its_config_and_latest_metrics(run_dir, capsys):
    assert main(["logs", str(run_dir), "aaa"]) == 0
    text = capsys.readouterr().out
    assert "config:\n  arch       = vgg11\n  bias_level = 0.9\n  epochs     = 2\n  lr         = 0.05\n" in text
    assert "metrics at its latest epoch (1):\n  val_acc             = 0.75\n  val_worst_group_acc = 0.625" in text


def test_logs_with_a_prefix_of_several_trials_lists_only_those(run_dir, capsys):
    assert main(["logs", str(run_dir), "aa"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"2 trials of {run_dir} start with 'aa'")
    ids = [ln.split()[0] for ln in text.splitlines()[2:]]
    assert ids == ["aaa111", "aab333"]


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`ncsweep keys --metrics | head -0`: no BrokenPipeError traceback, exit status as after SIGPIPE.
    The reader leaves before the first line is written (imports take ~1 s), so the write must fail."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "sweeps.cli", "keys", "--metrics"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and "Traceback" not in err and "BrokenPipe" not in err, err
