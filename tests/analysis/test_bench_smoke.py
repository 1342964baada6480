"""The analysis benchmark runs end to end at a small size and prints its JSON line last."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"rows", "files", "load_s", "tables_s", "total_s", "peak_rss_mb", "cpu_s", "cli_analyze_s", "status_s"}


@pytest.mark.slow
@pytest.mark.parametrize("layout", [[], ["--per-epoch"]])
def test_analysis_speed_bench_prints_its_json_line(tmp_path, layout):
    out = subprocess.run([sys.executable, "bench/analysis_speed.py", "--trials", "30", "--epochs", "4",
                          "--dir", str(tmp_path / "run"), *layout], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert KEYS <= set(res)
    assert res["rows"] == 30 * 4 * 10 and res["files"] == (30 * 4 if layout else 30)
    assert (tmp_path / "run" / "analysis").is_dir()
