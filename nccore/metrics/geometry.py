"""Geometric complexity (Dherin et al., NeurIPS 2022; used by Munn et al., NeurIPS 2024).

GC(g, X) = (1/|X|) Σ_x ||∇_x g(x)||_F², the mean squared Frobenius norm of the input Jacobian.
`fn` maps a batch (B, *input) to (B, k) and must treat samples independently (a model in eval
mode: BatchNorm in training mode couples samples and makes the batched Jacobian wrong).
Inputs are taken in the space the network sees (after normalisation).
"""
from __future__ import annotations

import torch
from torch.func import jacrev, vjp, vmap

from ._util import to_float, undefined


def geometric_complexity(fn, x: torch.Tensor, num_probes: int | None = None, seed: int = 0,
                         chunk: int = 256) -> float:
    """Exact GC when `num_probes` is None (vmap(jacrev): k VJPs per input), else the unbiased
    Hutchinson estimate with `num_probes` Rademacher probes v ∈ R^k per input:
    ||J||_F² = E_v ||Jᵀ v||², one VJP for the batch and vmap over the probes."""
    if len(x) == 0:
        return undefined("GC of an empty input set")
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for xb in x.split(chunk):
        total += _exact(fn, xb) if num_probes is None else _hutchinson(fn, xb, num_probes, gen)
    return to_float(total / len(x))


def _exact(fn, xb: torch.Tensor) -> torch.Tensor:
    jac = vmap(jacrev(lambda xi: fn(xi.unsqueeze(0)).squeeze(0)))(xb)   # (B, k, *input)
    return jac.to(torch.float64).pow(2).sum()


def _hutchinson(fn, xb: torch.Tensor, m: int, gen: torch.Generator) -> torch.Tensor:
    out, pull = vjp(fn, xb)
    v = torch.randint(0, 2, (m, *out.shape), generator=gen).to(out.device, out.dtype) * 2 - 1
    (jtv,) = vmap(pull)(v)                                                 # (m, B, *input)
    return jtv.to(torch.float64).pow(2).sum() / m
