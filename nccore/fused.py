"""Fused training: k configurations of one architecture trained as one model.

Horizontally fused training (HFTA; Wang et al., MLSys 2021) trains many same-shape models at
once so a small model fills a large accelerator. Here the k members' parameters and BatchNorm
buffers are stacked along a new leading dimension (`torch.stack`, as
`torch.func.stack_module_state` does) and one forward runs all of them:

    logits[i] = functional_call(model, (params[i], buffers[i]), x[i])    for i < k, under `vmap`

`vmap` lowers a convolution over stacked weights to one grouped convolution (PyTorch's batching
rule) and BatchNorm to one native call over k·C channels (`nccore.fused_bn`: PyTorch's own rule
would apply the affine part outside the kernel and round differently) — HFTA's rewrite. BatchNorm's
in-place running-statistics update writes each member's own slice of the stacked buffers. The
summed loss Σ_i loss_i gives every member exactly its own gradient (∂Σ/∂θ_i = ∂loss_i/∂θ_i).

Equivalence (tests/nccore/test_fused.py, CPU, native kernels, deterministic algorithms): fused
members' rows equal separate trials' rows for VGG-11, ResNet-18 and DenseNet-121 in float32 —
every number bitwise, `train_loss` included (each member's batch loss is its own `cross_entropy`
mean, reduced as its separate trial reduces it).

What stays per member (`Member`): its validated config, dataset (members with the same data
options, seed and bias share one copy), data order and augmentation (its own generator, drawn as
`TensorLoader` draws), SGD momentum, learning-rate schedule position, evaluation rows,
checkpoint and divergence. The update is `torch.optim.SGD` (momentum, no dampening, no Nesterov)
written on the stacked tensors with per-member lr / weight-decay / momentum vectors:

    d = g + wd·θ;   buf = μ·buf + d;   θ = θ − lr·buf

A member whose training loss is not finite after an epoch gets its diverged row and leaves the
stack; its siblings continue. Each member's module keeps views of its slice of the stack, so
its evaluation (`nccore.evaluate.evaluate`) and checkpoint (the same file a separate trial
writes, so either mode resumes the other's checkpoints) need no copy of the training state.

Only ERM with SGD fuses (`why_not_fusable`); members must agree on every key except
the catalogue's fuse axes (`Key.fuse_axis`). Training-mode channels_last is not used for the 5-D
stacked batch.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch.func import functional_call, vmap

from . import checkpoint
from .config import trial_id
from .catalogue import fuse_axes, keys_determining
from .data.loader import augment_draws, crop_flip
from .evaluate import stratified_sample
from .fused_bn import use_stacked_batch_norm
from .models import build_model
from .fusable import fuse_key, why_not_fusable   # plain config checks, torch-free (nccore/fusable.py)
from .trial import epoch_rows, fixed_columns, kernels, prepare


@dataclass(eq=False)   # compared by identity (the fused stack checks who is in it)
class Member:
    """One configuration of a fused group and everything it owns."""
    config: dict
    cfg: dict
    data: object
    model: torch.nn.Module
    method: object
    loader: object
    gen: torch.Generator
    tid: str
    train_idx: torch.Tensor
    start: int = 0
    status: str = "active"          # active | diverged | done
    momentum: dict = field(default_factory=dict)


def prepare_member(config: dict, shared: dict) -> Member:
    """`nccore.trial.prepare` for one member, its checkpoint loaded; identical datasets shared."""
    cfg, data, model, method, loader, gen = prepare(config)
    key = repr([cfg[k] for k in keys_determining("data")])
    if key in shared:   # same data: keep one copy on the device
        data = method.data = shared[key]
        loader.split = method.train_split()
    shared.setdefault(key, data)
    tr = data.splits["train"]
    m = Member(config, cfg, data, model, method, loader, gen, cfg["trial_id"] or trial_id(config),
               stratified_sample(tr, data.subgroup(tr), cfg["metrics_train_samples"], cfg["seed"]))
    state = checkpoint.load(cfg["checkpoint_dir"])
    if state is not None:
        method.load_state_dict(state["method"])
        checkpoint.set_rng_state(state["rng"], gen)
        m.start = state["epoch"] + 1
        if method.finished:
            m.status = "done"
    names = dict(model.named_parameters())
    for n, p in names.items():
        buf = method.optimizer.state.get(p, {}).get("momentum_buffer")
        m.momentum[n] = buf.detach().clone() if buf is not None else torch.zeros_like(p)
    return m


class FusedStack:
    """The stacked parameters, buffers and momenta of the active members, and the fused step."""

    def __init__(self, members: list[Member], base: torch.nn.Module, compile: bool = False):
        self.members, self.base = members, base
        dev = members[0].momentum[next(iter(members[0].momentum))].device
        pnames = [n for n, _ in members[0].model.named_parameters()]
        bnames = [n for n, _ in members[0].model.named_buffers()]
        with torch.no_grad():
            self.params = {n: torch.stack([dict(m.model.named_parameters())[n].detach() for m in members])
                           for n in pnames}
            self.buffers = {n: torch.stack([dict(m.model.named_buffers())[n] for m in members]) for n in bnames}
            self.moms = {n: torch.stack([m.momentum[n] for m in members]) for n in pnames}
        for p in self.params.values():
            p.requires_grad_(True)
        for i, m in enumerate(members):   # each member's module now reads its slice of the stack
            _point(m, i, self.params, self.buffers, self.moms)
        vec = lambda key, dt: torch.tensor([m.cfg[key] for m in members], dtype=dt, device=dev)  # noqa: E731
        self.lr64 = vec("lr", torch.float64)
        self.wd, self.mu = vec("weight_decay", torch.float32), vec("momentum", torch.float32)
        self.autocast = members[0].method.autocast
        fwd = vmap(lambda p, b, x: functional_call(self.base, (p, b), (x,)))
        self.forward = torch.compile(fwd) if compile else fwd

    def step(self, x: torch.Tensor, y: torch.Tensor, lr_factor: float) -> torch.Tensor:
        """One SGD step of every member on its batch: x (k, B, C, H, W), y (k, B) → losses (k,)."""
        with self.autocast():
            logits = self.forward(self.params, self.buffers, x)
        logits = logits.float()
        # one mean cross-entropy per member, so each loss is reduced as its separate trial reduces it
        losses = torch.stack([torch.nn.functional.cross_entropy(logits[i], y[i]) for i in range(len(y))])
        losses.sum().backward()
        self._sgd(lr_factor)
        return losses.detach()

    def _sgd(self, lr_factor: float) -> None:
        sgd_step(self.params, self.moms, (self.lr64 * lr_factor).to(torch.float32), self.wd, self.mu)


@torch.no_grad()
def sgd_step(params: dict, moms: dict, lr: torch.Tensor, wd: torch.Tensor, mu: torch.Tensor) -> None:
    """`torch.optim.SGD`'s update (dampening 0, no Nesterov) on stacked tensors θ (k, ...) with
    per-member vectors lr, wd, μ (k,):  d = g + wd·θ;  buf = μ·buf + d;  θ = θ − lr·buf.
    A zero-initialised buf gives SGD's first step (buf = d). Clears the gradients."""
    for n, p in params.items():
        shape = (-1,) + (1,) * (p.dim() - 1)
        d = p.grad.addcmul(p, wd.view(shape))
        buf = moms[n]
        buf.mul_(mu.view(shape)).add_(d)
        p.addcmul_(buf, lr.view(shape), value=-1)
        p.grad = None


def _point(m: Member, i: int, params: dict, buffers: dict, moms: dict) -> None:
    for n, p in m.model.named_parameters():
        p.data = params[n].detach()[i]
    for n in buffers:
        mod, _, leaf = n.rpartition(".")
        m.model.get_submodule(mod)._buffers[leaf] = buffers[n][i]
    for n in moms:
        m.momentum[n] = moms[n][i]


class FusedLoader:
    """The members' mini-batches stacked: (k, B, C, H, W) images, (k, B) targets. Each member's
    generator is drawn exactly as its own `TensorLoader` would draw it (permutation per epoch,
    then crop offsets and flips per batch), so its batches are the ones it sees unfused."""

    def __init__(self, members: list[Member]):
        self.loaders = [m.loader for m in members]
        ref = self.loaders[0]
        same = all(ld.split is ref.split for ld in self.loaders)
        self.shared = ref.split if same else None
        self.bs, self.augment, self.pad, self.target = ref.bs, ref.augment, ref.pad, ref.target

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self):
        dev = self.loaders[0].split.y.device
        orders = torch.stack([torch.randperm(len(ld.split), generator=ld.gen) for ld in self.loaders]).to(dev)
        for i in range(len(self)):
            idx = orders[:, i * self.bs:(i + 1) * self.bs]                     # (k, B)
            if self.shared is not None:
                x, y = self.shared.x[idx], getattr(self.shared, self.target)[idx]
            else:
                x = torch.stack([ld.split.x[j] for ld, j in zip(self.loaders, idx)])
                y = torch.stack([getattr(ld.split, self.target)[j] for ld, j in zip(self.loaders, idx)])
            if self.augment:   # each member's draws from its own generator; one crop + flip for all
                k, B = idx.shape
                draws = [augment_draws(B, ld.gen, self.pad) for ld in self.loaders]
                off = torch.cat([o for o, _ in draws], 1).to(dev, non_blocking=True)
                flip = torch.cat([f for _, f in draws]).to(dev, non_blocking=True)
                x = crop_flip(x.flatten(0, 1), off, flip, self.pad).view(k, B, *x.shape[2:])
            yield x, y


def _check_group(members: list[Member]) -> None:
    for m in members:
        why = why_not_fusable(m.config)
        if why:
            raise ValueError(f"trial {m.tid} cannot be fused: {why}")
    keys = {fuse_key(m.config) for m in members}
    if len(keys) > 1:
        raise ValueError(f"fused configs must agree on every key except {list(fuse_axes())}; "
                         f"trials {[m.tid for m in members]} differ elsewhere")
    if len({m.tid for m in members}) < len(members):
        raise ValueError("fused configs must be distinct trials (two have the same trial_id)")


def iter_fused_epochs(configs: list[dict], sinks: list[Callable] | None = None
                      ) -> Iterator[tuple[int, int, list[dict]]]:
    """Train `configs` as one fused model; yield (member index, epoch, rows) as each member's
    epoch ends — the rows `nccore.trial.iter_epochs` yields for that config alone. Per member:
    `sinks[i](epoch, rows)` is called before its checkpoint is written (in its
    `checkpoint_dir`), and a member with a checkpoint continues from it; members at different
    epochs train apart until they line up. Members whose epochs have different step counts
    (e.g. train splits of different size) train as separate stacks, one after another."""
    with kernels(any(bool(c.get("deterministic")) for c in configs)):   # members agree on it (fuse_key)
        yield from _fused_epochs(configs, sinks)


def _fused_epochs(configs: list[dict], sinks) -> Iterator[tuple[int, int, list[dict]]]:
    shared: dict = {}
    members = [prepare_member(c, shared) for c in configs]
    _check_group(members)
    sinks = sinks or [None] * len(members)
    by_steps: dict[int, list[int]] = {}
    for i, m in enumerate(members):
        by_steps.setdefault(len(m.loader), []).append(i)
    for idx in by_steps.values():
        yield from _train(members, idx, sinks)


def _train(members: list[Member], idx: list[int], sinks) -> Iterator[tuple[int, int, list[dict]]]:
    cfg0 = members[idx[0]].cfg
    x0 = members[idx[0]].data.splits["train"].x
    base = build_model(cfg0["arch"], members[idx[0]].data.num_classes, cfg0["width"], x0.shape[-1], cfg0["stem"],
                       x0.shape[1]).to("meta").train()
    use_stacked_batch_norm(base)   # BatchNorm by the kernel a separate trial runs (nccore.fused_bn)
    stack, epochs = None, cfg0["epochs"]
    for epoch in range(min(members[i].start for i in idx), epochs):
        active = [i for i in idx if members[i].status == "active" and members[i].start <= epoch]
        if not active:
            continue
        group = [members[i] for i in active]
        if stack is None or stack.members != group:
            stack = FusedStack(group, base, cfg0["compile"])
        t0 = time.perf_counter()
        loss_sum = torch.zeros(len(group), device=x0.device)
        sched = group[0].method.scheduler
        fn, step = sched.lr_lambdas[0], sched.last_epoch
        loader = FusedLoader(group)
        for x, y in loader:
            loss_sum += stack.step(x, y, fn(step))
            step += 1
        losses = [v / max(len(loader), 1) for v in loss_sum.tolist()]   # the one host sync of the epoch
        train_time = time.perf_counter() - t0
        for m in group:
            _advance(m.method.scheduler, len(loader))
        for i, m, loss in zip(active, group, losses):
            rows = _epoch_rows(m, epoch, loss, train_time, len(loader))
            if sinks[i] is not None:
                sinks[i](epoch, rows)
            if m.status == "active" and m.cfg["checkpoint_dir"]:
                _save(m, epoch)
            if m.status == "active" and epoch + 1 == epochs:
                m.status = "done"
            yield i, epoch, rows


def _epoch_rows(m: Member, epoch: int, loss: float, train_time: float, steps: int) -> list[dict]:
    """The rows of one member's epoch: `nccore.trial.epoch_rows`, as a separate trial writes them."""
    rows = epoch_rows(m.cfg, fixed_columns(m.tid, m.cfg), m.method, m.data, m.train_idx, epoch, loss, train_time,
                      steps, m.method.end_of_epoch(epoch))
    if rows[0]["status"] == "diverged":
        m.status = "diverged"
    return rows


def _advance(sched, n: int) -> None:
    """Move a member's learning-rate schedule on by n steps (the fused step did the optimizer's
    work): n `sched.step()` calls, without the warning that no optimizer step came first."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.optim\.lr_scheduler")
        for _ in range(n):
            sched.step()


def _save(m: Member, epoch: int) -> None:
    """The checkpoint a separate trial writes: model, SGD state (momentum), scheduler, RNG."""
    opt = m.method.optimizer
    for n, p in m.model.named_parameters():
        opt.state[p] = {"momentum_buffer": m.momentum[n].detach().clone()}
    state = m.method.state_dict()
    state["model"] = {k: v.detach().clone() for k, v in state["model"].items()}   # not the whole stack
    checkpoint.save(m.cfg["checkpoint_dir"], {"epoch": epoch, "method": state,
                                              "rng": checkpoint.rng_state(m.gen), "config": m.config})


def run_fused(configs: list[dict]) -> list[list[dict]]:
    """All rows of each config, trained fused: out[i] = the rows of configs[i]."""
    out: list[list[dict]] = [[] for _ in configs]
    for i, _, rows in iter_fused_epochs(configs):
        out[i] += rows
    return out


__all__ = ["FusedLoader", "FusedStack", "Member", "fuse_key", "iter_fused_epochs", "run_fused",
           "why_not_fusable"]
