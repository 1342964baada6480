"""`deterministic: true` through the CLI: k configurations run with `fuse: k` give the rows the
same k configurations give as separate trials (1e-6 absolute on every float column but timings,
every epoch, split and group), for each architecture family."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nccore.catalogue import CONFIG

ROOT = Path(__file__).resolve().parents[2]
DATA = {"n_train": 64, "n_val": 32, "n_test": 32, "image_size": 8}
TIMINGS = {"train_time", "eval_time", "images_per_s", "epoch_ended_at", "attempt_started_at"}
KEY = ["trial_id", "epoch", "split", "group"]


def _run(tmp_path, name, fuse):
    spec = {"name": name, "dataset": {"name": "biased_shapes", "options": DATA},
            "base": {"epochs": 2, "width": 0.125, "batch_size": 32, "deterministic": True, "augment": True},
            "space": {"arch": {"grid": ["resnet18", "densenet121", "vgg11"]}, "lr": {"grid": [0.05, 0.02]}},
            "search": {"algorithm": "grid"}, "max_concurrent": 2, **({"fuse": fuse} if fuse else {})}
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(spec))
    out = tmp_path / name
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    p = subprocess.run([sys.executable, "-m", "sweeps.cli", "run", str(path), "--out", str(out)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    return out, pd.read_parquet(out / "rows")


def test_the_key_is_in_the_id_only_when_set():
    from nccore.config import trial_id
    assert CONFIG["deterministic"].default is False
    assert trial_id({"lr": 0.1}) == trial_id({"lr": 0.1, "deterministic": False})
    assert trial_id({"lr": 0.1}) != trial_id({"lr": 0.1, "deterministic": True})


@pytest.mark.slow
def test_fused_and_separate_sweeps_give_equal_rows_with_deterministic_kernels(tmp_path):
    fused_dir, fused = _run(tmp_path, "fused", 2)
    _, alone = _run(tmp_path, "alone", 0)
    assert json.loads((fused_dir / "fuse_plan.json").read_text())["fused_configs"] == 6   # 3 archs x 2 lr, all fused
    assert len(fused) == len(alone) == 6 * 2 * 3 * 3                                  # trials x epochs x splits x groups
    assert fused["deterministic"].all() and alone["deterministic"].all()
    a = fused.set_index(KEY).sort_index()
    b = alone.set_index(KEY).sort_index()
    assert a.index.equals(b.index)
    cols = [c for c in a.columns if c in b.columns and c not in TIMINGS and pd.api.types.is_float_dtype(a[c])]
    assert len(cols) > 30
    worst = {c: float(np.nanmax(np.abs(a[c].to_numpy() - b[c].to_numpy()), initial=0.0)) for c in cols}
    assert max(worst.values()) <= 1e-6, sorted(worst.items(), key=lambda kv: -kv[1])[:5]
    for c in cols:   # NaN where and only where the other has NaN
        assert (a[c].isna() == b[c].isna()).all(), c
