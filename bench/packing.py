"""Aggregate training throughput of k concurrent trials on one device (process packing), k = 1,
2, 4, 8: each process runs one nccore trial; images/s summed over the window where all run.

    PYTHONPATH=. python bench/packing.py [--ks 1,2,4,8 --n 20000 --bs 128]

Records section "packing" ({k: aggregate ÷ one trial}) in bench/gpu_results.json (CUDA) or
bench/cpu_results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from bench.common import device, header, record

CHILD = r"""
import json, sys, time, warnings, torch
warnings.simplefilter("ignore")
torch.set_num_threads(int(sys.argv[5]))
from nccore.trial import iter_epochs
cfg = {"arch": sys.argv[1], "width": float(sys.argv[2]), "batch_size": int(sys.argv[3]), "epochs": 2,
       "augment": True, "metrics": ["fairness"], "metrics_train_samples": 256,
       "data": {"n_train": int(sys.argv[4]), "n_val": 64, "n_test": 64, "image_size": 32}}
for epoch, rows in iter_epochs(cfg):
    if epoch == 1:
        print(json.dumps({"images_per_s": rows[0]["images_per_s"], "end": time.time(),
                          "train_time": rows[0]["train_time"]}))
"""


def run(k, args) -> float:
    threads = max(1, (os.cpu_count() or 1) // k) if device() == "cpu" else 2
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, args.arch, str(args.width), str(args.bs), str(args.n),
                               str(threads)], stdout=subprocess.PIPE, text=True, env=env) for _ in range(k)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return sum(o["images_per_s"] for o in outs)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ks", default="1,2,4,8" if device() == "cuda" else "1,2")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--width", type=float, default=1.0 if device() == "cuda" else 0.25)
    p.add_argument("--bs", type=int, default=128)
    p.add_argument("--n", type=int, default=20000 if device() == "cuda" else 1024)
    p.add_argument("--no-record", action="store_true", help="print only; leave the results file alone")
    args = p.parse_args()
    header("process packing: aggregate images/s of k concurrent trials", vars(args))
    base, out = None, {}
    for k in map(int, args.ks.split(",")):
        t = time.perf_counter()
        agg = run(k, args)
        base = base or agg
        out[str(k)] = round(agg / base, 3)
        print(f"k={k}: aggregate {agg:.0f} img/s, {agg / base:.2f}x one trial ({time.perf_counter() - t:.0f}s)", flush=True)
    if not args.no_record:
        print(f"recorded packing in {record('packing', out, vars(args))}")


if __name__ == "__main__":
    main()
