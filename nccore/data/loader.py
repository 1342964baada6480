"""Device-resident batching: the whole split lives on the training device as one tensor and
augmentation (random crop with zero padding + horizontal flip) runs there, batched, so small
images never wait on a CPU DataLoader (the airbench approach). Randomness comes from a CPU
torch.Generator whose state the trial checkpoints, so a resumed trial sees the same batches.
"""
from __future__ import annotations

import torch

from .base import Split


def augment_batch(x: torch.Tensor, gen: torch.Generator, pad: int) -> torch.Tensor:
    """Random crop of x (B, C, H, W) from its zero-padded copy, then random horizontal flip."""
    off, flip = augment_draws(x.shape[0], gen, pad)
    return crop_flip(x, off.to(x.device, non_blocking=True), flip.to(x.device, non_blocking=True), pad)


def augment_draws(B: int, gen: torch.Generator, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The random numbers of one augmented batch, on the CPU: crop offsets (2, B), flips (B,)."""
    off = torch.randint(0, 2 * pad + 1, (2, B), generator=gen)
    return off, torch.rand(B, generator=gen) < 0.5


def crop_flip(x: torch.Tensor, off: torch.Tensor, flip: torch.Tensor, pad: int) -> torch.Tensor:
    """Crop x (B, C, H, W) at offsets off (2, B) of its zero-padded copy; flip where flip (B,).
    Returns a contiguous (B, C, H, W) tensor."""
    B, _, H, W = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = off[0][:, None] + torch.arange(H, device=x.device)            # (B, H)
    cols = off[1][:, None] + torch.arange(W, device=x.device)            # (B, W)
    b = torch.arange(B, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    # contiguous: the indexing leaves channels-last strides, which oneDNN's AVX2 convolution
    # backward mishandles (see nccore.models.base); models also make their input contiguous
    return torch.where(flip[:, None, None, None], out.flip(3), out).contiguous()


class TensorLoader:
    """Iterate (x, y) mini-batches of `split` (already on its device).

    shuffle: a fresh permutation from `gen` each epoch; augment: crop + flip with padding
    image_size // 8; drop_last drops a final short batch (keeps BatchNorm away from size-1 batches);
    groups: also yield the batch's group ids, (x, y, g) (GroupDRO needs them; ERM's batches stay (x, y)).
    """

    def __init__(self, split: Split, batch_size: int, *, shuffle: bool = False, augment: bool = False,
                 gen: torch.Generator | None = None, drop_last: bool = False, target: str = "y",
                 groups: bool = False):
        self.split, self.bs, self.shuffle, self.augment = split, int(batch_size), shuffle, augment
        self.gen = gen if gen is not None else torch.Generator().manual_seed(0)
        self.drop_last, self.target, self.groups = drop_last, target, groups
        self.pad = max(1, split.x.shape[-1] // 8)

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.bs if self.drop_last and n >= self.bs else -(-n // self.bs)

    def __iter__(self):
        n = len(self.split)
        dev = self.split.y.device
        order = torch.randperm(n, generator=self.gen).to(dev) if self.shuffle else torch.arange(n, device=dev)
        for i in range(len(self)):
            idx = order[i * self.bs:(i + 1) * self.bs]
            x = self.split.x[idx]
            if self.augment:
                x = augment_batch(x, self.gen, self.pad)
            if self.groups:
                yield x, getattr(self.split, self.target)[idx], self.split.g[idx]
            else:
                yield x, getattr(self.split, self.target)[idx]
