"""Training on AVX2-only CPUs: no native crash (oneDNN#6035, see bench/onednn_avx2_crash.py).

The crash needs oneDNN's AVX2 kernels: these tests cap the ISA in their subprocesses, and `make test`
caps it for the whole suite, so a machine with AVX-512 runs what an AVX2 machine runs."""
import os
import subprocess
import sys

import pytest
import torch

from nccore.config import config_problems
from nccore.data.loader import augment_batch
from nccore.models import build_model
from nccore.trial import Runtime

AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "1"}
# The loop that crashed on AVX2 (ResNet-18 at width 1/16 has a 4-channel stem: fewer than oneDNN's
# AVX2 block of 8): 8x8 images, augmentation, one thread, 6 epochs.
LOOP = r"""
import torch, warnings
warnings.simplefilter("ignore")
torch.set_num_threads(1)
from nccore import run_trial
cfg = {"arch": "resnet18", "width": 0.0625, "epochs": 6, "batch_size": 64, "augment": True, "seed": %d,
       "data": {"n_train": 256, "n_val": 64, "n_test": 64, "image_size": 8}}
rows = list(run_trial(cfg))
print("epochs", max(r["epoch"] for r in rows) + 1)
"""


def test_the_augmented_batch_is_contiguous():
    x = torch.randn(16, 3, 8, 8)
    out = augment_batch(x, torch.Generator().manual_seed(0), pad=1)
    assert out.is_contiguous() and out.shape == x.shape


def test_features_hand_the_body_a_contiguous_input():
    model = build_model("resnet18", 4, 0.0625, 8)
    seen = []
    model.body.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous()))
    x = torch.randn(4, 3, 8, 8).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)   # NHWC strides
    assert not x.is_contiguous()
    model.features(x)
    assert seen == [True]


def test_channels_last_is_refused_on_the_cpu():
    problems = config_problems({"channels_last": True, "device": "cpu"})
    assert [p for p, _, _ in problems] == ["channels_last"] and "oneDNN" in problems[0][2]
    with pytest.raises(ValueError, match="channels_last"):
        Runtime.resolve({"device": "cpu", "precision": "auto", "channels_last": True})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_loop_that_crashed_on_avx2_runs_to_the_end(seed):
    env = {**os.environ, **AVX2}
    p = subprocess.run([sys.executable, "-c", LOOP % seed], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"exit {p.returncode}: {p.stderr[-2000:]}"
    assert "epochs 6" in p.stdout
