"""Standalone reproduction, in plain PyTorch, of the heap corruption that killed AVX2 CPU trials.

What happens: a 1×1 convolution with stride 2 whose input has channels-last (NHWC) strides and
fewer input channels than oneDNN's AVX2 block (8) — our ResNet's first downsampling shortcut at
width 1/16 has 4 — runs its weight-gradient through oneDNN's `jit_1x1:avx2` kernel, which copies
the strided source into a "reduce-to-unit-stride" workspace sized for a full channel block and
writes past it. glibc then aborts at the next free() ("corrupted size vs. prev_size", "corrupted
double-linked list", "free(): invalid pointer") or the process segfaults; sometimes the damage
surfaces elsewhere (a TypeError inside torch's SGD). This is oneDNN's bug, reported upstream as
uxlfoundation/oneDNN#6035 ("1x1 convolution backward_weights writes past the rtus workspace
(nhwc, IC < ic_block)"), not ours; machines with AVX-512 run another kernel and do not crash, so
cap the ISA (`ONEDNN_MAX_CPU_ISA=AVX2`) to see it on them.

The input gets channels-last strides without anyone asking: advanced indexing of a permuted
tensor (the batched random crop in `nccore.data.loader.crop_flip`, permuted back) returns them.
ncsweep's fix: `crop_flip` returns a contiguous batch and every model makes its input
contiguous in `features` (`nccore.models.base`), and `channels_last: true` is refused on the CPU.

Run:  python bench/onednn_avx2_crash.py [--runs 6]
Each case runs in fresh subprocesses with ONEDNN_MAX_CPU_ISA=AVX2 and one thread; prints the exit
codes per case (0 = ran to the end; -6 = SIGABRT; -11 = SIGSEGV). Measured on a 2-core Xeon
(AVX-512 capped to AVX2), torch 2.14.1, 4 runs each: channels-last strides crashed 4 of 4 (exit
codes -6, -11, -6, -6); contiguous input 0 of 4; channels-last strides into a stride-1 1×1 conv
0 of 4. Our ResNet-18 at width 1/16 on 8×8 images with the crop's strides: 4 of 4 crashed; with
a channels-last model (weights and input): 4 of 4.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

CHILD = r"""
import sys, torch
from torch import nn
torch.set_num_threads(1)
torch.manual_seed(int(sys.argv[2]))
case = sys.argv[1]
stride = 1 if case == "stride1" else 2
m = nn.Sequential(nn.Conv2d(3, 8, 1, stride, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
X, Y = torch.randn(256, 3, 8, 8), torch.randint(0, 4, (256,))
for epoch in range(8):
    for i in range(0, 256, 64):
        x = X[i:i + 64]
        if case != "contiguous":
            x = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)   # NCHW shape, NHWC strides
        loss = nn.functional.cross_entropy(m(x), Y[i:i + 64])
        opt.zero_grad(); loss.backward(); opt.step()
"""
CASES = {"channels_last_strides": "1x1 stride-2 conv, input with channels-last strides (crashes)",
         "contiguous": "the same with a contiguous input (the fix)",
         "stride1": "channels-last strides, 1x1 stride-1 conv (no workspace: no crash)"}


def run(case: str, seed: int) -> int:
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", CHILD, case, str(seed)], env=env, capture_output=True,
                          timeout=300).returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=4)
    args = ap.parse_args()
    for case, what in CASES.items():
        codes = [run(case, s) for s in range(args.runs)]
        print(f"{case:24s} crashed {sum(c != 0 for c in codes)} of {len(codes)}  exit codes {codes}  ({what})")


if __name__ == "__main__":
    main()
