"""The slow study tests' common run: a shipped CPU-scale spec reduced to a few cells, run through
the runner, its verdicts computed, and what `ncsweep study RUN_DIR` prints checked and shown (the
numbers in docs/studies-*.md)."""
from pathlib import Path

import numpy as np
import yaml

from analysis.studies import run_study, study_command, text_table
from analysis.studies.common import VERDICTS


def run_reduced(name: str, tmp_path, capsys, space=None, variants=None):
    """(spec, rows, findings by id) of the spec sweeps/specs/<name>.yaml with `space` / `variants`
    replaced; fails when a verdict is unknown or a primary outcome or manipulation check has no CI."""
    from analysis.load import load
    from sweeps.driver import run_sweep
    from sweeps.spec import parse_spec

    raw = yaml.safe_load(Path(f"sweeps/specs/{name}.yaml").read_text())
    raw.update({k: v for k, v in (("space", space), ("variants", variants)) if v is not None})
    out = tmp_path / name
    run_sweep(parse_spec(raw), out, quiet=True)
    rows = load(out)
    _, fs = run_study(name, rows, raw["study"])
    assert study_command(str(out)) == 0
    printed = capsys.readouterr().out
    assert text_table(fs) in printed
    with capsys.disabled():
        print(printed)
    v = {f["id"]: f for f in fs if "id" in f}
    assert all(f["verdict"] in VERDICTS for f in v.values() if f["role"] != "descriptive")
    for f in v.values():
        if f["role"] in ("primary", "manipulation"):
            assert np.isfinite(f["ci_low"]), f"{f['id']}: no CI"
    return raw, rows, v
