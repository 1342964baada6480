"""Every shell command in README.md and docs/*.md (```sh blocks) runs here, so the docs cannot drift.

Cheap commands run in full: `ncsweep --help`, `validate`, `python -c ...` (in this process). Expensive ones run as
what they would do without doing it: `ncsweep run|resume` get `--dry-run`, `ncsweep submit` becomes
`ncsweep validate` of its spec, `make TARGET` becomes `make -n TARGET`. Commands on `runs/demo`
run against a real two-trial sweep (one completed, one failed), made once with TensorBoard and
MLflow loggers — which this file also checks for real (slow: it starts Ray).
A command whose program has no rule here fails the test: add a rule rather than an exception.
"""
import glob
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sweeps.cli import main
from sweeps.driver import run_sweep
from sweeps.spec import parse_spec

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent


def sh_commands(path: Path) -> list[str]:
    """The commands of the ```sh blocks of a Markdown file (comments dropped, `\\` lines joined)."""
    out, block = [], None
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            block = [] if line.strip() == "```sh" and block is None else None
            continue
        if block is not None:
            if out and out[-1].endswith("\\"):
                out[-1] = out[-1][:-1] + line.strip()
            elif line.strip() and not line.lstrip().startswith("#"):
                out.append(line.strip())
    return out


COMMANDS = [(p.relative_to(ROOT).as_posix(), c) for p in DOCS for c in sh_commands(p)]


def plan(command: str) -> tuple[str, list[str]]:
    """(how, argv): how the test runs a documented command."""
    argv = shlex.split(command, comments=True)
    prog = argv[0]
    if "|" in argv:
        return "shell", argv
    if prog == "python" and argv[1:2] == ["-c"] and len(argv) == 3:
        return "python", argv[2:]          # run in this process: the imports are already loaded
    if prog == "make":
        return "make", ["make", "-n", *argv[1:]]
    if prog == "ncsweep":
        if argv[1:2] == ["submit"]:
            return "ncsweep", ["validate", argv[2]]
        if argv[1] in ("run", "resume") and "--dry-run" not in argv:
            argv = [*argv, "--dry-run"]
        return "ncsweep", argv[1:]   # globs are expanded where the command runs
    raise AssertionError(f"no rule in tests/test_docs.py for the program of {command!r}")


def needs_run(command: str) -> bool:
    return "runs/demo" in command


def run_command(command: str, cwd: Path, capsys) -> str:
    how, argv = plan(command)
    if how == "ncsweep":
        old = Path.cwd()
        os.chdir(cwd)
        try:
            argv = [x for a in argv for x in (sorted(glob.glob(a)) or [a] if "*" in a else [a])]   # as a shell would
            try:
                rc = main(argv)
            except SystemExit as e:     # --help, --version
                rc = e.code
        finally:
            os.chdir(old)
        out = capsys.readouterr()
        assert rc == 0, f"{command}: exit {rc}\n{out.err}"
        return out.out
    if how == "python":
        old = Path.cwd()
        os.chdir(cwd)
        try:
            exec(compile(argv[0], "<docs>", "exec"), {"__name__": "__docs__"})
        finally:
            os.chdir(old)
        return capsys.readouterr().out
    cmd = shlex.split(command, comments=True)
    if how == "make":
        res = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    else:
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
        line = " ".join(shlex.quote(a) if a != "|" else a for a in cmd)
        if cmd[0] == "python":
            line = shlex.quote(sys.executable) + line[len("python"):]
        res = subprocess.run(["bash", "-o", "pipefail", "-c", line], cwd=cwd, env=env, capture_output=True,
                             text=True, timeout=120)
    assert res.returncode == 0, f"{command}: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout


def test_the_docs_have_commands_and_every_program_has_a_rule():
    assert len(COMMANDS) >= 15
    for _, command in COMMANDS:
        plan(command)


@pytest.mark.parametrize("doc, command", [c for c in COMMANDS if not needs_run(c[1])])
def test_command_runs(doc, command, capsys):
    run_command(command, ROOT, capsys)


# ---------------------------------------------------------------------- on a real run directory
@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    """tmp/runs/demo: one completed and one failed trial, logged to TensorBoard and MLflow."""
    root = tmp_path_factory.mktemp("docs")
    (root / "sweeps").symlink_to(ROOT / "sweeps")
    corrupt = root / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    spec = parse_spec({
        "name": "docs_demo", "loggers": ["tensorboard", "mlflow"],
        "dataset": {"name": "biased_shapes", "options": {"n_train": 128, "n_val": 64, "n_test": 64, "image_size": 8}},
        "base": {"epochs": 2, "width": 0.125, "batch_size": 32, "arch": "vgg11", "metrics": ["nc", "fairness"]},
        "space": {"weights": {"grid": [None, str(corrupt)]}},
        "search": {"algorithm": "grid", "metric": "val_worst_group_acc", "mode": "max"},
        "max_concurrent": 2, "retries": 0,
    })
    run_sweep(spec, root / "runs" / "demo", quiet=True)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("doc, command", [c for c in COMMANDS if needs_run(c[1])])
def test_command_on_a_run_directory(doc, command, demo_root, capsys):
    run_command(command, demo_root, capsys)


@pytest.mark.slow
def test_the_driver_log_holds_the_failed_trials_error(demo_root, capsys):
    log = (demo_root / "runs/demo/ncsweep.log").read_text()
    assert "sweep started: 2 trials planned" in log and "sweep ended: 1/2 trials" in log
    assert re.search(r"trial \w+ failed .*(UnpicklingError|corrupt\.pt)", log), log
    failed = re.search(r"trial (\w+) failed", log).group(1)
    assert "error:" in run_command(f"ncsweep logs runs/demo {failed[:6]}", demo_root, capsys)


@pytest.mark.slow
def test_tensorboard_event_files_hold_each_trials_scalars(demo_root):
    from tensorboardX.proto.event_pb2 import Event

    files = sorted((demo_root / "runs/demo/_tune").rglob("events.out.tfevents.*"))
    assert len(files) == 2, files
    ids = {p.stem for p in (demo_root / "runs/demo/trials").glob("*.json")}
    assert {f.parent.name.split("_")[0] for f in files} == ids      # TensorBoard runs named by trial id
    tags = set()
    for f in files:
        for record in _tfrecords(f.read_bytes()):
            tags |= {v.tag for v in Event.FromString(record).summary.value}
    assert {"ray/tune/val_acc", "ray/tune/val_worst_group_acc", "ray/tune/train_loss"} <= tags, sorted(tags)[:20]


def _tfrecords(data: bytes):
    """Records of a TFRecord file: 8-byte length, 4-byte CRC, payload, 4-byte CRC."""
    i = 0
    while i < len(data):
        n = int.from_bytes(data[i:i + 8], "little")
        yield data[i + 12:i + 12 + n]
        i += 12 + n + 4


@pytest.mark.slow
def test_mlflow_file_store_holds_one_run_per_trial_with_metrics(demo_root, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")   # MLflow 3 reads its file store only when allowed
    client = MlflowClient(tracking_uri=(demo_root / "runs/demo/mlruns").as_uri())
    exp = client.get_experiment_by_name("docs_demo")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2
    done = [r for r in runs if "val_acc" in r.data.metrics]
    assert len(done) == 1 and 0.0 <= done[0].data.metrics["val_acc"] <= 1.0
    history = client.get_metric_history(done[0].info.run_id, "val_acc")
    assert len(history) == 2          # one value per epoch


# ---------------------------------------------------------------------- the reference pages stay complete
def test_every_metric_of_the_catalogue_is_documented():
    from nccore.catalogue import METRICS

    text = (ROOT / "docs/metrics.md").read_text()
    missing = [m for m in METRICS if f"`{m}`" not in text]
    assert not missing, f"docs/metrics.md lacks {missing}"


def test_every_registered_method_has_a_section():
    from nccore.methods import METHODS

    heads = set(re.findall(r"^## (\w+) — ", (ROOT / "docs/methods.md").read_text(), re.M))
    assert heads == set(METHODS), f"docs/methods.md sections {sorted(heads)} vs methods {sorted(METHODS)}"


def test_every_method_option_is_named_in_its_section():
    from nccore.catalogue import METHOD_OPTIONS

    text = (ROOT / "docs/methods.md").read_text()
    sections = dict(re.findall(r"^## (\w+) — .*?\n(.*?)(?=^## |\Z)", text, re.M | re.S))
    missing = {m: [o for o in opts if f"`{o}`" not in sections.get(m, "")] for m, opts in METHOD_OPTIONS.items()}
    assert not {m: o for m, o in missing.items() if o}, f"docs/methods.md sections lack options {missing}"


def test_every_test_the_docs_cite_exists():
    cited = set()
    for doc in DOCS:
        cited |= set(re.findall(r"`(test_\w+\.py)::(test_\w+)`", doc.read_text()))
    assert len(cited) >= 30
    for file, name in sorted(cited):
        paths = list((ROOT / "tests").rglob(file))
        assert paths, f"cited test file {file} not found"
        assert any(re.search(rf"^def {name}\(", p.read_text(), re.M) for p in paths), f"{file}::{name} not found"


def test_every_docs_page_is_in_the_index():
    index = (ROOT / "docs/index.md").read_text()
    missing = [p.name for p in (ROOT / "docs").glob("*.md") if p.name != "index.md" and f"({p.name})" not in index]
    assert not missing, f"docs/index.md does not link {missing}"
