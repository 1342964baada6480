"""BatchNorm for fused (vmapped) models, computed by the kernel a separate model uses.

Under `torch.func.vmap`, PyTorch's batching rule for `batch_norm` with stacked weight and bias
normalises without the affine part and then applies `x̂·w + b` itself, so in float32 the output
and the weight/bias/input gradients are rounded differently from the native kernel an unfused
model runs (measured on one layer: 5e-7 on the output, 8e-6 on the weight gradient; two epochs
of training grew it to 2e-4 in ResNet-18's and 5e-2 in DenseNet-121's losses).

`StackedBatchNorm`'s batching rule instead folds the member dimension into the channels, as HFTA
(Wang et al., MLSys 2021) fuses BatchNorm by hand: k members' input (N, C, H, W) each, held as
(k, N, C, H, W), is read as (N, k·C, H, W), and one native `F.batch_norm` call normalises it with
weight, bias and running statistics (k, C) flattened to k·C. The native CPU kernel computes each
channel on its own, so member i's channels get the numbers its own model would get — output,
gradients (by the native backward, under ordinary autograd) and the in-place running-statistics
update, which lands in member i's slice of the stacked buffers (tests/nccore/test_fused.py checks
all of them bitwise). One exception: on a 1×1 map the CPU kernel vectorises across channels, so there
each member gets its own native call (measured: with ATen capped at AVX2, DenseNet-121 on 8×8 images,
whose last block runs at 1×1, fused NC1 differed from separate by up to 7 after two epochs with one
call over k·C channels; 0 with one call per member). CUDA kernels may block a channel's sums by the
channel count: not verified.

`use_stacked_batch_norm(model)` makes a model's BatchNorm layers call it; outside vmap they
compute exactly as `nn.BatchNorm2d` does.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _flat(t: torch.Tensor | None, dim: int | None, k: int) -> torch.Tensor | None:
    """A per-channel tensor of the k members, (k, C) along `dim` (or shared: None), as (k·C,)."""
    if t is None:
        return None
    t = t.unsqueeze(0).expand(k, *t.shape) if dim is None else t.movedim(dim, 0)
    return t.reshape(-1)


def _member(t: torch.Tensor | None, dim: int | None, i: int) -> torch.Tensor | None:
    """Member i's per-channel tensor (C,): a view, so an in-place running-statistics update lands in the stack."""
    return t if t is None or dim is None else t.select(dim, i)


def _contiguous_grad(y: torch.Tensor) -> torch.Tensor:
    """y, whose gradient reaches its backward contiguous, as a separate model's does (a member's slice of
    the stacked gradient is strided, and the native backward rounds a strided gradient differently)."""
    if y.requires_grad:
        y.register_hook(lambda g: g.contiguous())
    return y


class StackedBatchNorm(torch.autograd.Function):
    """`F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)` whose
    vmap rule runs the k members as one native call over k·C channels (module docstring). Only
    the vmap rule is used: the autograd of the native call it makes records the backward."""

    @staticmethod
    def forward(x, running_mean, running_var, weight, bias, training: bool, momentum: float, eps: float):
        return F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        raise RuntimeError("StackedBatchNorm runs under torch.func.vmap only (use nn.BatchNorm2d elsewhere)")

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("StackedBatchNorm runs under torch.func.vmap only")

    @staticmethod
    def vmap(info, in_dims, x, running_mean, running_var, weight, bias, training, momentum, eps):
        """x: (…, N, C, *spatial) with the member dim at in_dims[0] → (N, k·C, *spatial) → back."""
        k, dims = info.batch_size, in_dims
        for t, d in ((running_mean, dims[1]), (running_var, dims[2])):
            if training and t is not None and (d != 0 or not t.is_contiguous()):
                # only a contiguous (k, C) stack flattens to a view that the in-place update reaches
                raise ValueError(f"running statistics must be stacked along dim 0 and contiguous "
                                 f"(got member dim {d}, shape {tuple(t.shape)}, strides {t.stride()})")
        x = x.unsqueeze(0).expand(k, *x.shape) if dims[0] is None else x
        xs = x.movedim(dims[0] or 0, 1)                    # (N, k, C, *spatial): a view after a conv
        n, _, c, *spatial = xs.shape
        if math.prod(spatial) == 1:
            # (N, C, 1, 1) is also channels-last contiguous, and there the CPU kernel vectorises across
            # channels: which channels fall in the vector tail depends on the channel count (C or k·C,
            # and the ISA's vector width), and the tail rounds differently. So one native call per member.
            ys = [_contiguous_grad(F.batch_norm(xs[:, i].contiguous(), _member(running_mean, dims[1], i),
                                                _member(running_var, dims[2], i), _member(weight, dims[3], i),
                                                _member(bias, dims[4], i), training, momentum, eps))
                  for i in range(k)]
            return torch.stack(ys, 1), 1
        y = F.batch_norm(xs.reshape(n, k * c, *spatial), _flat(running_mean, dims[1], k),
                         _flat(running_var, dims[2], k), _flat(weight, dims[3], k), _flat(bias, dims[4], k),
                         training, momentum, eps)
        return y.view(xs.shape), 1


class StackedBatchNorm2d(nn.BatchNorm2d):
    """`nn.BatchNorm2d` whose forward under vmap is `StackedBatchNorm`, called with the arguments
    `nn.BatchNorm2d.forward` passes to `F.batch_norm` (exponential running average)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.momentum is None or not torch._C._functorch.is_batchedtensor(x):
            return super().forward(x)   # (momentum None, a cumulative average, is not needed here)
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        return StackedBatchNorm.apply(x, self.running_mean if track else None, self.running_var if track else None,
                                      self.weight, self.bias, bn_training, self.momentum, self.eps)


def use_stacked_batch_norm(model: nn.Module) -> nn.Module:
    """Make every `nn.BatchNorm2d` of `model` a `StackedBatchNorm2d` (in place; same parameters,
    buffers and state_dict keys). Returns the model."""
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = StackedBatchNorm2d   # only forward differs, so the instance is reused as is
    return model


__all__ = ["StackedBatchNorm", "StackedBatchNorm2d", "use_stacked_batch_norm"]
