"""BiasedShapes: a procedurally generated biased image set, pure NumPy.

Fine label f = shape (disk, ring, square, hollow square, plus, X, triangle, diamond, horizontal bar,
vertical bar); coarse label f // 2; binary task label = coarse label of the first two coarse
classes (round vs square family). Background colour is the spurious attribute p with
P(p = y) = (1 + β)/2; foreground luminance carries the sensitive attribute a ~ Bernoulli(π).
Sample i is drawn from its own child of SeedSequence(seed), so it does not depend on n.
"""
from __future__ import annotations

import numpy as np

SHAPES = ("disk", "ring", "square", "hollow_square", "plus", "x_cross", "triangle", "diamond", "hbar", "vbar")
BACKGROUNDS = np.array([[0.2, 0.4, 0.9], [0.9, 0.6, 0.2]], dtype=np.float32)


def shape_mask(shape: str, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    """Boolean (size, size) mask of one shape centred at (cx, cy) with radius r (pixels)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dx, dy = xx - cx, yy - cy
    rho = np.hypot(dx, dy)
    ax, ay = np.abs(dx), np.abs(dy)
    arm = r / 3
    masks = {
        "disk": rho <= r,
        "ring": (rho <= r) & (rho >= r / 2),
        "square": (ax <= r) & (ay <= r),
        "hollow_square": (ax <= r) & (ay <= r) & ~((ax <= r / 2) & (ay <= r / 2)),
        "plus": ((ax <= arm / 2) & (ay <= r)) | ((ay <= arm / 2) & (ax <= r)),
        "x_cross": (np.abs(dx - dy) <= arm / 2 * np.sqrt(2)) & (ax <= r) & (ay <= r)
        | (np.abs(dx + dy) <= arm / 2 * np.sqrt(2)) & (ax <= r) & (ay <= r),
        "triangle": (dy <= r) & (dy >= -r) & (ax <= (dy + r) / 2),
        "diamond": ax + ay <= r,
        "hbar": (ax <= r) & (ay <= arm / 2),
        "vbar": (ay <= r) & (ax <= arm / 2),
    }
    return masks[shape]


def make_biased_shapes(n: int, image_size: int = 32, bias: float = 0.0, minority_rate: float = 0.5,
                       separability: float = 0.5, noise: float = 0.05, shapes=SHAPES, seed: int = 0,
                       force_a: int | None = None) -> dict[str, np.ndarray]:
    """Generate n images. Returns dict: x float32 (n, 3, H, W) in [0, 1]; fine, coarse, y, p, a,
    g = 2y + p as int64 (n,); spurious_mask bool (n, H, W), True on the background — the pixels
    whose colour is the spurious attribute (exact, from the shape masks). y is the coarse label
    (the binary task uses coarse ∈ {0, 1}).

    bias β ∈ [0, 1]: P(p = y mod 2) = (1 + β)/2. minority_rate π: P(a = 1). separability σ_s:
    foreground luminance 0.5 ± 0.4 σ_s by a. noise σ: Gaussian pixel noise. Sizes scale with
    image_size (radius 7-10 px and jitter ±3 px at 32 px). `force_a` renders every sample with
    that attribute (for the oracle that σ_s = 0 hides a).
    """
    if not 0.0 <= bias <= 1.0:
        raise ValueError(f"bias={bias}: must lie in [0, 1]")
    if not 0.0 <= minority_rate <= 1.0 or not 0.0 <= separability <= 1.0:
        raise ValueError("minority_rate and separability must lie in [0, 1]")
    scale = image_size / 32.0
    out = {k: np.zeros(n, dtype=np.int64) for k in ("fine", "coarse", "y", "p", "a", "g")}
    x = np.empty((n, 3, image_size, image_size), dtype=np.float32)
    background = np.empty((n, image_size, image_size), dtype=bool)
    for i, ss in enumerate(np.random.SeedSequence(seed).spawn(n)):  # seed: int or list of ints
        rng = np.random.default_rng(ss)
        f = int(rng.integers(len(shapes)))
        coarse = f // 2
        p = int(coarse % 2 if rng.random() < (1 + bias) / 2 else 1 - coarse % 2)
        a = int(rng.random() < minority_rate)
        cx, cy = (image_size - 1) / 2 + rng.uniform(-3, 3, size=2) * scale
        r = rng.uniform(7, 10) * scale
        eps = rng.standard_normal((3, image_size, image_size)) * noise
        a_render = a if force_a is None else force_a
        fg = 0.5 + separability * (0.4 if a_render == 1 else -0.4)
        img = np.broadcast_to(BACKGROUNDS[p][:, None, None], x.shape[1:]).copy()
        fg_mask = shape_mask(shapes[f], image_size, cx, cy, r)
        img[:, fg_mask] = fg
        background[i] = ~fg_mask
        x[i] = np.clip(img + eps, 0.0, 1.0)
        for k, v in (("fine", f), ("coarse", coarse), ("y", coarse), ("p", p), ("a", a), ("g", 2 * (coarse % 2) + p)):
            out[k][i] = v
    out["x"] = x
    out["spurious_mask"] = background
    return out
