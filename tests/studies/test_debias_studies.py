"""Slow: the debiasing studies' CPU-scale specs (sweeps/specs/), run as shipped through the real
runner; the test computes every verdict and fails if one cannot be computed (no CI). Directions
asserted only where the CPU-scale run was clear (numbers in docs/studies-debias.md); the others
are printed, since "not supported" is a legitimate finding.
Run with `make test-slow`."""
import math
from pathlib import Path

import pytest
import yaml

from analysis.load import load
from analysis.studies import STUDIES
from analysis.studies.common import VERDICTS
from sweeps.runner import run_sweep
from sweeps.spec import parse_spec

pytestmark = pytest.mark.slow


def run_study(name: str, tmp_path) -> dict[str, dict]:
    raw = yaml.safe_load(Path(f"sweeps/specs/{name}.yaml").read_text())
    out = tmp_path / name
    run_sweep(parse_spec(raw), out, quiet=True)
    fs = STUDIES[name]({"rows": load(out), "select": "final"})
    for f in fs:
        print(f.get("note") or f.get("caption") or
              f"{f['expected']}: {f['estimate']:+.3f} [{f['ci_low']:+.3f}, {f['ci_high']:+.3f}] n={f['n']} -> "
              f"{f['verdict']}")
    return {f["expected"]: f for f in fs if "expected" in f}, [f for f in fs if "figure" in f]


def _computed(fs: dict[str, dict]) -> None:
    for claim, f in fs.items():
        assert f["verdict"] in VERDICTS and math.isfinite(f["ci_low"]) and math.isfinite(f["ci_high"]), claim
        assert f["n"] >= 5, claim


def test_dfr_last_layer_on_biased_shapes(tmp_path):
    fs, figs = run_study("dfr_last_layer", tmp_path)
    _computed(fs)
    assert fs["DFR raises worst-group accuracy over ERM (Kirichenko et al.)"]["verdict"] == "supported"
    assert fs["the sparsity of DFR's last layer comes from its L1 penalty"]["verdict"] == "supported"
    assert figs and figs[0]["figure"][:4] == b"\x89PNG"


def test_dfr_last_layer_on_coloured_digits(tmp_path):
    fs, _ = run_study("dfr_last_layer_digits", tmp_path)
    _computed(fs)
    assert fs["DFR raises worst-group accuracy over ERM (Kirichenko et al.)"]["verdict"] == "supported"


def test_change_penalty(tmp_path):
    fs, figs = run_study("change_penalty", tmp_path)
    _computed(fs)
    assert fs["a larger λ keeps the change smaller"]["verdict"] == "supported"
    assert figs and figs[0]["figure"][:4] == b"\x89PNG"
