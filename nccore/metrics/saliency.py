"""Saliency maps and how much of them falls on a known spurious region.

CAM (Zhou et al., CVPR 2016): for a network features → global average pool → linear classifier W,
    CAM_c(i, j) = Σ_k W[c, k] · A_k(i, j)
over the last feature maps A (K, h, w) (`model.body(x)` for every ncsweep architecture).
Grad-CAM (Selvaraju et al., ICCV 2017), for any network and any layer with output A:
    α_k = mean_{i,j} ∂y_c/∂A_k(i, j),   map = ReLU(Σ_k α_k A_k);
for a GAP-linear head it equals ReLU(CAM_c)/(h·w) exactly. `saliency` uses CAM where the model
has that structure and a final map of at least 4×4, and Grad-CAM otherwise (at the deepest layer
whose map is that large — e.g. VGG on 16 px images pools the last map to 1×1).

Spurious share of one image: Σ of the non-negative part of the raw map (upsampled bilinearly to
the image size) inside the spurious-region mask ÷ Σ over the whole image (NaN for an all-zero
map). BiasedShapes knows the region exactly: the background, whose colour is the spurious
attribute. Maps are for the class the model predicts (what its decision rests on).

Pointing game (Zhang et al., "Top-down neural attention by excitation backprop", ECCV 2016): a
hit when the map's maximum (upsampled to the image size) lies on the object, a miss otherwise;
ties go to the first pixel in row-major order; a map with no positive value points nowhere (NaN).
BiasedShapes' object mask is exact: the shape, the complement of the spurious background
(about 20% of a 16 px image, the hit rate of a map that points at random).
"""
from __future__ import annotations

import base64
import io
import warnings

import numpy as np
import torch
from torch import nn

from ..models.base import GlobalAvgPool, model_input


def has_cam_head(model: nn.Module) -> bool:
    """Whether model is body → global average pool → linear classifier (CAM applies)."""
    return (isinstance(getattr(model, "body", None), nn.Module) and isinstance(getattr(model, "classifier", None),
            nn.Linear) and isinstance(getattr(model, "pool", None), (nn.AdaptiveAvgPool2d, GlobalAvgPool)))


@torch.no_grad()
def cam(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CAM of class target[i] for each image: (N, h, w) at the feature-map resolution (raw, signed).
    x: (N, C, H, W); target: (N,) int."""
    A = model.body(model_input(model, x)).float()               # (N, K, h, w)
    w = model.classifier.weight.float()[target]                # (N, K)
    return torch.einsum("nk,nkhw->nhw", w, A)


def grad_cam(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: nn.Module | None = None) -> torch.Tensor:
    """Grad-CAM of class target[i] at `layer`'s output (default model.body): (N, h, w), ≥ 0."""
    layer = layer if layer is not None else getattr(model, "body", None)
    if layer is None:
        raise ValueError("grad_cam: the model has no `body`; pass the layer whose output to explain")
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("A", o))
    try:
        with torch.enable_grad():
            logits = model(x.detach().requires_grad_(True))   # a graph even when the weights are frozen
            A = store["A"]
            score = logits.gather(1, target[:, None]).sum()     # images do not interact (eval mode)
            (grad,) = torch.autograd.grad(score, A)
    finally:
        handle.remove()
    alpha = grad.float().mean(dim=(2, 3), keepdim=True)
    return torch.relu((alpha * A.detach().float()).sum(1))


@torch.no_grad()
def deepest_layer(body: nn.Module, x: torch.Tensor, min_size: int) -> nn.Module | None:
    """The last module of a Sequential body (searched one level into its children) whose output
    map is at least min_size × min_size; None if there is none."""
    if not isinstance(body, nn.Sequential):
        return None
    mods = [m for child in body for m in (child if isinstance(child, nn.Sequential) else [child])]
    sizes = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, k=k: sizes.__setitem__(k, min(o.shape[-2:])))
             for k, m in enumerate(mods)]
    try:
        body(x[:1])
    finally:
        for h in hooks:
            h.remove()
    ok = [k for k in sizes if sizes[k] >= min_size]
    return mods[max(ok)] if ok else None


def saliency(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None, method: str = "auto",
             min_size: int = 4):
    """(maps (N, H, W) upsampled to the image size, target); target defaults to the predicted class.
    "auto": CAM where it applies and its map is at least min_size × min_size; otherwise Grad-CAM at
    the deepest layer of `model.body` whose map is that large (small images pooled to 1×1 by the
    last stage leave CAM nothing to localise)."""
    model.eval()
    x = model_input(model, x)
    if target is None:
        with torch.no_grad():
            target = model(x).argmax(1)
    if method not in ("auto", "cam", "grad_cam"):
        raise ValueError(f"saliency method={method!r}: choose 'auto', 'cam' or 'grad_cam'")
    layer = None
    if method == "auto" and has_cam_head(model):
        with torch.no_grad():
            small = min(model.body(x[:1]).shape[-2:]) < min_size
        layer = deepest_layer(model.body, x, min_size) if small else None
    if method == "cam" or (method == "auto" and has_cam_head(model) and layer is None):
        maps = cam(model, x, target)
    else:
        maps = grad_cam(model, x, target, layer)
    up = nn.functional.interpolate(maps[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)
    return up[:, 0], target


def spurious_share(maps: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Per image: Σ relu(map)·mask / Σ relu(map). maps (N, H, W); mask (N, H, W) bool. (N,) float64."""
    pos = torch.relu(maps.double())
    tot = pos.sum(dim=(1, 2))
    inside = (pos * mask.double()).sum(dim=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (inside / tot).cpu().numpy()
    out[tot.cpu().numpy() <= 0] = np.nan
    return out


def pointing_hits(maps: torch.Tensor, object_mask: torch.Tensor) -> np.ndarray:
    """Per image: 1.0 if argmax of the map (N, H, W) lies inside object_mask (N, H, W) bool, 0.0 if
    not, NaN when the map's maximum is ≤ 0. (N,) float64."""
    flat = maps.reshape(len(maps), -1)
    top = flat.argmax(dim=1)                     # first maximum in row-major order
    hit = object_mask.reshape(len(maps), -1).gather(1, top[:, None])[:, 0]
    out = hit.double().cpu().numpy()
    out[(flat.max(dim=1).values <= 0).cpu().numpy()] = np.nan
    return out


def _group_rates(values: np.ndarray, groups: np.ndarray) -> list[float]:
    """Mean of values (NaN ignored) in each group present; NaN for a group with no finite value."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return [float(np.nanmean(values[groups == k])) for k in np.unique(groups)]


def panel_indices(groups: np.ndarray, per_group: int, seed: int) -> np.ndarray:
    """`per_group` seeded indices of every group present (fewer where a group is smaller)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.permutation(np.flatnonzero(groups == g))[:per_group] for g in np.unique(groups)])


def encode_panel(images: np.ndarray, maps: np.ndarray, groups: np.ndarray, labels: np.ndarray,
                 preds: np.ndarray) -> str:
    """A small base64 string (compressed npz: images and maps as uint8) for a row column; maps are
    scaled per image to [0, 255] from their non-negative part."""
    pos = np.clip(maps, 0, None)
    top = pos.reshape(len(pos), -1).max(1).reshape(-1, 1, 1)
    m8 = np.round(255 * np.divide(pos, top, out=np.zeros_like(pos), where=top > 0)).astype(np.uint8)
    i8 = np.round(255 * np.clip(images, 0, 1)).astype(np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, images=i8, maps=m8, groups=groups.astype(np.int16), labels=labels.astype(np.int16),
                        preds=preds.astype(np.int16))
    return base64.b64encode(buf.getvalue()).decode()


def decode_panel(s: str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(base64.b64decode(s))) as z:
        return {k: z[k] for k in z.files}


def saliency_summary(model: nn.Module, split, max_per_group: int = 64, panel_per_group: int = 2,
                     seed: int = 0) -> dict:
    """Columns for a split that has a spurious mask, on up to max_per_group images per group:
    `spurious_share` (mean over groups of the per-group mean share), `pointing_acc` and
    `pointing_worst` (mean and lowest over groups of the per-group pointing-game hit rate against
    the object = the complement of the spurious mask) and `saliency_panel` (encoded images + maps,
    panel_per_group per group). {} when the split has no mask."""
    mask = getattr(split, "spurious_mask", None)
    if mask is None:
        return {}
    g = split.g.cpu().numpy()
    idx = panel_indices(g, max_per_group, seed)
    x = split.x[torch.as_tensor(idx, device=split.x.device)]
    maps, pred = saliency(model, x)
    m = mask[torch.as_tensor(idx, device=mask.device)].to(maps.device)
    by_group = _group_rates(spurious_share(maps, m), g[idx])
    pointing = np.array(_group_rates(pointing_hits(maps, ~m), g[idx]))
    first = np.concatenate([np.flatnonzero(g[idx] == k)[:panel_per_group] for k in np.unique(g[idx])])
    panel = encode_panel(x[first].cpu().numpy(), maps[first].cpu().numpy(), g[idx][first],
                         split.y_clean.cpu().numpy()[idx][first], pred[first].cpu().numpy())
    ok = np.isfinite(pointing)
    return {"spurious_share": float(np.nanmean(by_group)) if np.isfinite(by_group).any() else float("nan"),
            "pointing_acc": float(pointing[ok].mean()) if ok.any() else float("nan"),
            "pointing_worst": float(pointing[ok].min()) if ok.any() else float("nan"),
            "saliency_panel": panel}
