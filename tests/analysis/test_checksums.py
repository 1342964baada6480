"""`analyze` compares each finished trial's result file with the checksum in its record: a
mismatch is a warning on stderr naming the file, and with --strict an error (exit 2)."""
import json
import subprocess
import sys

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from analysis.load import checksum_mismatches, trial_records
from analysis.synthetic import grid, write_run
from sweeps.store import file_sha256


@pytest.fixture
def run(tmp_path):
    run = write_run(tmp_path / "run", grid(seeds=2, arch=["resnet18", "vgg11"], lr=[1e-3, 1e-1]))
    for rec_path in (run / "trials").glob("*.json"):          # as the runner records a finished trial
        rec = json.loads(rec_path.read_text())
        rec["rows_sha256"] = file_sha256(run / "rows" / rec_path.stem / "trial.parquet")
        rec_path.write_text(json.dumps(rec))
    return run


def tamper(path):
    """Rewrite the file with one value changed: it still reads, but its bytes differ."""
    t = pq.read_table(path)
    i = t.schema.get_field_index("worst_group_acc")
    pq.write_table(t.set_column(i, "worst_group_acc", pc.add(t.column(i), 0.5)), path)


def ncsweep(*args):
    return subprocess.run([sys.executable, "-m", "sweeps.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_matching_files_pass_and_a_changed_one_is_named(run):
    assert checksum_mismatches(trial_records(run)) == []
    changed = sorted((run / "rows").iterdir())[2] / "trial.parquet"
    tamper(changed)
    assert checksum_mismatches(trial_records(run)) == [str(changed)]


def test_analyze_warns_on_stderr_and_strict_refuses(run):
    changed = sorted((run / "rows").iterdir())[0] / "trial.parquet"
    tamper(changed)
    res = ncsweep("analyze", run, "--metrics", "test_worst_group_acc")
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"ncsweep: warning: 1 result file(s) differ from the checksum in their trial record" in res.stderr
    assert str(changed) in res.stderr and str(changed) not in res.stdout
    res = ncsweep("analyze", run, "--metrics", "test_worst_group_acc", "--strict")
    assert res.returncode == 2 and "ncsweep: error: 1 result file(s) differ" in res.stderr
