"""nccore's trial vs a minimal plain-PyTorch loop, same model, data, batch size and precision, in
one run; and the cost of the per-epoch NC + fairness metrics.

    PYTHONPATH=. python bench/trial_speed.py [--n 50000 --size 32 --width 1.0 --bs 512 --epochs 3] [--compile]

Ratios printed: nccore images/s ÷ plain images/s (target ≥ 0.95 on a GPU), and metrics time ÷
epoch time for the default stratified train subsample and for the full training set. Recorded
(bench/gpu_results.json on CUDA, bench/cpu_results.json on the CPU): "trial_vs_plain" and
"metrics_overhead" (train subsample) per architecture; with --compile also "compile_speedup"
(nccore images/s with `compile: true` ÷ without).
"""
from __future__ import annotations

import argparse
import contextlib
import time
import warnings

import torch

from bench.common import device, header, record, sync
from nccore.data import build_dataset
from nccore.models import build_model
from nccore.trial import iter_epochs


def plain_loop(arch, data, args, dev) -> float:
    """images/s of the textbook loop over GPU-resident tensors (last of `epochs` epochs)."""
    tr = data.splits["train"].to(dev)
    torch.manual_seed(0)
    model = build_model(arch, data.num_classes, args.width, args.size).to(dev)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev == "cuda" else contextlib.nullcontext()
    if dev == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()
    n = len(tr) // args.bs * args.bs
    for _ in range(args.epochs):
        sync()
        t = time.perf_counter()
        perm = torch.randperm(len(tr), device=dev)
        for i in range(0, n, args.bs):
            idx = perm[i:i + args.bs]
            x = tr.x[idx]
            if dev == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with amp:
                loss = torch.nn.functional.cross_entropy(model(x).float(), tr.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync()
        dt = time.perf_counter() - t
    return n / dt


KEYS = {"resnet18": "resnet18", "vgg11": "vgg11_bn", "densenet121": "densenet121"}   # our vgg11 has BatchNorm


def nccore_epochs(arch, args, metrics_samples: int | None, compile: bool = False):
    cfg = {"arch": arch, "width": args.width, "epochs": args.epochs, "batch_size": args.bs, "augment": False,
           "schedule": "constant", "lr": 0.05, "metrics": ["nc", "fairness"], "data": _data_opts(args),
           "metrics_train_samples": metrics_samples or args.n, "compile": compile}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        last = None
        for _, rows in iter_epochs(cfg):
            last = rows[0]
    return last


def _data_opts(args):
    return {"n_train": args.n, "n_val": args.n // 10, "n_test": args.n // 5, "image_size": args.size}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=50000 if device() == "cuda" else 2048)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--width", type=float, default=1.0 if device() == "cuda" else 0.25)
    p.add_argument("--bs", type=int, default=512 if device() == "cuda" else 128)
    p.add_argument("--epochs", type=int, default=3 if device() == "cuda" else 2)
    p.add_argument("--archs", default="resnet18,vgg11,densenet121")
    p.add_argument("--compile", action="store_true", help="also time nccore with compile: true")
    p.add_argument("--no-record", action="store_true", help="print only; leave the results file alone")
    args = p.parse_args()
    header("trial speed: nccore vs plain PyTorch", vars(args))
    data = build_dataset("biased_shapes", _data_opts(args))
    print(f"{'arch':12s} {'plain img/s':>12s} {'nccore img/s':>13s} {'ratio':>6s} {'metrics/epoch (sub)':>20s} "
          f"{'metrics/epoch (full)':>21s}")
    ratio, overhead, speedup = {}, {}, {}
    for arch in args.archs.split(","):
        plain = plain_loop(arch, data, args, device())
        sub = nccore_epochs(arch, args, 5000)
        full = nccore_epochs(arch, args, None)
        ovh_sub = sub["eval_time"] / sub["train_time"]
        ovh_full = full["eval_time"] / full["train_time"]
        key = KEYS.get(arch, arch)
        ratio[key], overhead[key] = round(sub["images_per_s"] / plain, 3), round(ovh_sub, 3)
        print(f"{arch:12s} {plain:12.0f} {sub['images_per_s']:13.0f} {sub['images_per_s'] / plain:6.3f} "
              f"{ovh_sub:20.3f} {ovh_full:21.3f}   (train subsample {sub['metrics_train_samples']})", flush=True)
        if args.compile:
            comp = nccore_epochs(arch, args, 5000, compile=True)
            speedup[key] = round(comp["images_per_s"] / sub["images_per_s"], 3)
            print(f"{arch:12s} compile: true {comp['images_per_s']:.0f} img/s, {speedup[key]:.2f}x", flush=True)
    if not args.no_record:
        settings = vars(args)
        record("trial_vs_plain", ratio, settings)
        record("metrics_overhead", overhead, settings)
        if args.compile:
            record("compile_speedup", speedup, settings)

if __name__ == "__main__":
    main()
