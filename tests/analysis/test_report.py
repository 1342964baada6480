"""The report is produced from a real small sweep's directory and holds every section."""
import subprocess
import sys

import pytest

from sweeps.driver import run_sweep
from sweeps.spec import parse_spec


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "run"
    spec = parse_spec({
        "name": "reporttest", "dataset": {"name": "biased_shapes",
                                          "options": {"n_train": 512, "n_val": 128, "n_test": 256, "image_size": 16}},
        # large enough that every trial learns (a trial at the majority rate is left out of the fits)
        "base": {"epochs": 4, "width": 0.125, "batch_size": 64, "lr": 0.05},
        "space": {"arch": {"grid": ["vgg11", "resnet18"]}, "seed": {"grid": [0, 1]},
                  "bias_level": {"grid": [0.0, 0.9]}},
        "search": {"algorithm": "grid"}, "max_concurrent": 2})
    run_sweep(spec, out, quiet=True)
    return out


@pytest.mark.slow   # a real Ray sweep first (~1 min on 2 cores); synthetic-run report tests are in the default suite
def test_report_has_every_section(sweep_dir):
    res = subprocess.run([sys.executable, "-m", "sweeps.cli", "report", str(sweep_dir), "--select", "best:worst_group_acc"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    page = (sweep_dir / "report" / "report.html").read_text()
    for section in ('id="summary"', "Leaderboard", "Architecture comparison", "Paired differences",
                    "Neural collapse vs fairness", 'id="contents"', "HC3", "Holm", "Reference levels", "Run metadata",
                    "data:image/png;base64", "best:worst_group_acc"):
        assert section in page, section
    assert page.index('id="summary"') < page.index('id="contents"') < page.index('id="statistics"')
    md = (sweep_dir / "report" / "summary.md").read_text()
    assert "## Summary" in md and "Leaderboard" in md and "(all, n=" in md
    for name in ("trials", "sensitivity", "arch_summary", "arch_paired", "nc_vs_fairness", "leaderboard"):
        assert (sweep_dir / "analysis" / f"{name}.csv").exists() and (sweep_dir / "analysis" / f"{name}.parquet").exists()


def test_analyze_on_an_empty_dir_is_a_clear_error(tmp_path):
    res = subprocess.run([sys.executable, "-m", "sweeps.cli", "analyze", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 2 and "no result files" in res.stderr
