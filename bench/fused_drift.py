"""How far fused rows drift from separate trials under default kernels, next to how far a run
drifts from itself when one weight moves by one float32 ulp, and how far two seeds are apart.

With `deterministic: true` fused and separate rows are equal (tests/sweeps/test_deterministic.py).
Without it oneDNN picks its convolution algorithm by problem shape, so a fused (grouped) and a
plain convolution round differently, and training amplifies any rounding difference. Whether fused
mode "changes the science" is then a matter of scale: is the fused-vs-separate gap larger than the
gap a one-ulp nudge of a single weight causes (chaos of SGD itself), and than seed-to-seed spread?

Run:  python bench/fused_drift.py [--arch resnet18] [--epochs 4] [--configs 4] [--json out.json]
Prints, per metric, the largest absolute difference over every epoch and split (overall rows, then
subgroup rows), for:
  fused_vs_separate   config 0 fused (with k-1 others) vs config 0 alone (default kernels)
  one_ulp             config 0 alone vs config 0 alone with one weight moved by one ulp
  seeds               config 0 alone with seed 0 vs seed 1
  fused_vs_separate_max_of_k   the largest fused-vs-alone gap over all k configs
"""
from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import pandas as pd
import torch

import nccore.trial as trial
from nccore import run_trial
from nccore.fused import run_fused

METRICS = ["train_loss", "loss", "acc", "worst_group_acc", "f1", "nc1", "nc3", "nc4_mismatch"]


def configs(args) -> list[dict]:
    data = {"n_train": args.n_train, "n_val": 200, "n_test": 500, "image_size": args.image_size}
    lrs = [0.05, 0.03, 0.02, 0.01, 0.08, 0.04, 0.06, 0.07][:args.configs]
    return [{"arch": args.arch, "width": args.width, "epochs": args.epochs, "batch_size": 64, "lr": lr,
             "bias_level": 0.8, "data": data} for lr in lrs]


def one_ulp_run(cfg: dict) -> list[dict]:
    """run_trial with the first conv weight's first entry moved to the next float32 up."""
    build = trial.build_model

    def nudged(*a, **kw):
        model = build(*a, **kw)
        w = next(p for p in model.parameters() if p.dim() == 4)
        with torch.no_grad():
            w.view(-1)[0] = torch.nextafter(w.view(-1)[0], torch.tensor(float("inf")))
        return model

    trial.build_model = nudged
    try:
        return list(run_trial(cfg))
    finally:
        trial.build_model = build


def gaps(a: list[dict], b: list[dict], overall: bool) -> dict:
    """Largest |a − b| per metric over every epoch and split; overall: the "all" rows only, else the
    subgroup rows only (small groups: larger, noisier differences)."""
    key = ["epoch", "split", "group"]
    x = pd.DataFrame(a).set_index(key).sort_index()
    y = pd.DataFrame(b).set_index(key).sort_index()
    keep = (x.index.get_level_values("group") == "all") == overall
    x, y = x[keep], y[keep]
    out = {}
    for m in METRICS:
        if m in x and m in y:
            d = np.abs(x[m].astype(float).to_numpy() - y[m].astype(float).to_numpy())
            out[m] = float(np.nanmax(d)) if np.isfinite(d).any() else float("nan")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--image-size", type=int, default=16)
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--configs", type=int, default=4)
    ap.add_argument("--json")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    cfgs = configs(args)
    t = time.perf_counter()
    fused = run_fused(cfgs)
    alone = [list(run_trial(c)) for c in cfgs]
    nudged, seed1 = one_ulp_run(cfgs[0]), list(run_trial({**cfgs[0], "seed": 1}))
    out = {}
    print(f"{args.arch} width {args.width}, {args.image_size}x{args.image_size}, n_train {args.n_train}, "
          f"{args.epochs} epochs, {args.configs} configs, torch {torch.__version__}, "
          f"{torch.backends.cpu.get_cpu_capability()} ({time.perf_counter() - t:.0f} s)")
    for overall, what in ((True, "overall rows (group all)"), (False, "subgroup rows")):
        fused_gap = {}
        for f, s in zip(fused, alone):
            for m, v in gaps(f, s, overall).items():
                fused_gap[m] = max(fused_gap.get(m, 0.0), v)
        # like for like on config 0; then the largest over all k configs for the fused gap
        rows = {"fused_vs_separate": gaps(fused[0], alone[0], overall), "one_ulp": gaps(alone[0], nudged, overall),
                "seeds": gaps(alone[0], seed1, overall), f"fused_vs_separate_max_of_{len(cfgs)}": fused_gap}
        out[what] = rows
        print(f"largest |difference| over every epoch and split, {what}:")
        print(pd.DataFrame(rows).T[[m for m in METRICS if m in fused_gap]].to_string(float_format=lambda v: f"{v:.4g}"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "gaps": out}, f, indent=1)


if __name__ == "__main__":
    main()
