"""Fused training: aggregate training images/s of k configurations trained as one model
(`nccore.fused`) ÷ images/s of one nccore trial, same architecture, data, batch size, precision.

    PYTHONPATH=. python bench/fused.py [--ks 2,4,8,16 --arch resnet18 --bs 128 --n 20000] [--compile]

The k members differ in learning rate and weight decay (one seed, so they share one copy of the
data on the device). Both sides train 2 epochs; the timed epoch is the last (the first pays for
cuDNN autotuning / compilation). Training time only: each member's evaluation runs after the
epoch's training and is not in `train_time`. Records section "fused" ({k: ratio}), and with
--compile "fused_compiled", in bench/gpu_results.json (CUDA) or bench/cpu_results.json.
A process packs nothing here: sequential trials reach 1.0× by definition, so a ratio ≥ 1 means
fused is not slower than running the k configurations one after another. On a shared CPU, wall
time depends on the neighbours' load; the process CPU time of each whole run (training, evaluation,
setup) is also printed and recorded (settings.fused.cpu_time_ratio: k × one trial's ÷ fused).
There, prefix the command with OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads otherwise spin, and
with neighbours on the cores their spinning counts as this process's CPU time (the same run's
CPU time was seen to vary tenfold). At the CPU default size (--n 256: 4 steps an epoch) setup
and evaluation dominate each run; --n 2048 weighs the training steps more.
"""
from __future__ import annotations

import argparse
import time
import warnings

import torch

from bench.common import device, header, record
from nccore.fused import iter_fused_epochs
from nccore.trial import iter_epochs


def config(args, i: int = 0) -> dict:
    return {"arch": args.arch, "width": args.width, "batch_size": args.bs, "epochs": 2, "augment": True,
            "schedule": "cosine", "lr": 0.05 * (1 + 0.25 * i), "weight_decay": 5e-4 * (1 + i % 3),
            "metrics": ["fairness"], "metrics_train_samples": 256, "compile": args.compile,
            "data": {"n_train": args.n, "n_val": 64, "n_test": 64, "image_size": args.size}}


def one_trial(args) -> tuple[float, float]:
    """(images/s of the last epoch, process CPU seconds of the whole run) of one nccore trial."""
    last, cpu = None, time.process_time()
    for _, rows in iter_epochs(config(args)):
        last = rows[0]
    return last["images_per_s"], time.process_time() - cpu


def fused(args, k: int) -> tuple[float, float, float]:
    """(aggregate images/s of the last epoch, process CPU seconds of the whole run, peak CUDA
    memory in GiB) of k fused configurations."""
    if device() == "cuda":
        torch.cuda.reset_peak_memory_stats()
    last, cpu = {}, time.process_time()
    for i, epoch, rows in iter_fused_epochs([config(args, i) for i in range(k)]):
        last[i] = rows[0]
    agg = sum(r["images_per_s"] for r in last.values())
    mem = torch.cuda.max_memory_allocated() / 2**30 if device() == "cuda" else float("nan")
    return agg, time.process_time() - cpu, mem


def main() -> None:
    cuda = device() == "cuda"
    p = argparse.ArgumentParser()
    p.add_argument("--ks", default="2,4,8,16" if cuda else "2,4")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--width", type=float, default=1.0 if cuda else 0.125)
    p.add_argument("--bs", type=int, default=128 if cuda else 64)
    p.add_argument("--n", type=int, default=20000 if cuda else 512)
    p.add_argument("--size", type=int, default=32 if cuda else 16)
    p.add_argument("--compile", action="store_true", help="torch.compile the trial's and the fused forward")
    p.add_argument("--no-record", action="store_true", help="print only; leave the results file alone")
    args = p.parse_args()
    header("fused training: k configurations as one model vs one trial", vars(args))
    warnings.simplefilter("ignore")
    t = time.perf_counter()
    base, base_cpu = one_trial(args)
    print(f"one trial: {base:.0f} img/s, {base_cpu:.1f} CPU s ({time.perf_counter() - t:.0f}s)", flush=True)
    out, cpu_ratio = {}, {}
    for k in map(int, args.ks.split(",")):
        t = time.perf_counter()
        try:
            agg, cpu, mem = fused(args, k)
        except torch.cuda.OutOfMemoryError:
            print(f"k={k}: out of memory", flush=True)
            out[str(k)] = None
            torch.cuda.empty_cache()
            continue
        except Exception as e:   # e.g. torch.compile of the vmapped forward on this torch version
            print(f"k={k}: failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
            out[str(k)] = None
            continue
        out[str(k)], cpu_ratio[str(k)] = round(agg / base, 3), round(k * base_cpu / cpu, 3)
        print(f"k={k}: aggregate {agg:.0f} img/s, {agg / base:.2f}x one trial; whole run {cpu:.1f} CPU s, "
              f"{k * base_cpu / cpu:.2f}x less than k trials; peak memory {mem:.1f} GiB "
              f"({time.perf_counter() - t:.0f}s)", flush=True)
    if not args.no_record:
        section = "fused_compiled" if args.compile else "fused"
        settings = {**vars(args), "one_trial_img_s": round(base, 1),
                    "cpu_time_ratio": cpu_ratio}   # k × one trial's process CPU s ÷ the fused run's
        path = record(section, out, settings)
        print(f"recorded {section} in {path}")


if __name__ == "__main__":
    main()
