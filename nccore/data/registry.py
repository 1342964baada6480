"""Dataset registry: one builder per dataset, common post-processing in `build_dataset`.

A builder takes (options, bias_level, seed) and returns {split: {x, y, [a, p, fine, coarse]}}
as NumPy arrays; splits it lacks (val) are carved from train. `build_dataset` then applies the
label bias (train and val only), sets the group ids and returns a `Dataset`.
Adding a dataset is adding one function decorated with `@DATASETS.register("name")`; its options,
their defaults and accepted values are declared in `nccore.catalogue.DATASET_OPTIONS`, and
`build_dataset` hands the builder every option with its default filled in.
"""
from __future__ import annotations

import numpy as np
import torch

from ..catalogue import COMMON_DATASET_OPTIONS, CONFIG, DATASET_OPTIONS, check_value, dataset_defaults
from ..registry import Registry
from . import files
from .ham10000 import load_ham10000
from .base import SPLITS, Dataset, make_split
from .bias import inject_label_bias
from .synthetic import SHAPES, make_biased_shapes

DATASETS = Registry("dataset", key="dataset")


@DATASETS.register("biased_shapes")
def biased_shapes(opts: dict, beta: float, seed: int) -> dict:
    """Options: target ("binary": disk/ring vs square/hollow square; "coarse": 5 classes; "fine":
    10 shapes), n_train, n_val, n_test, image_size, minority_rate, separability, noise,
    test_bias (β of the test split: 0 balances the groups)."""
    target = opts["target"]
    shapes = SHAPES[:4] if target == "binary" else SHAPES
    common = {k: opts[k] for k in ("image_size", "minority_rate", "separability", "noise")}
    sizes = {split: opts[f"n_{split}"] for split in SPLITS}
    betas = {"train": beta, "val": beta, "test": opts["test_bias"]}
    out = {}
    for k, split in enumerate(SPLITS):
        d = make_biased_shapes(sizes[split], bias=betas[split], seed=[seed, k], shapes=shapes, **common)
        y = {"fine": d["fine"], "coarse": d["coarse"], "binary": d["coarse"]}[target]
        out[split] = dict(x=d["x"], y=y, a=d["a"], p=d["p"], fine=d["fine"], coarse=d["coarse"],
                          spurious_mask=d["spurious_mask"])
    return out


@DATASETS.register("colored_digits")
def colored_digits(opts: dict, beta: float, seed: int) -> dict:
    """scikit-learn's bundled handwritten digits (1797 8×8 images), strokes coloured by the
    spurious attribute p (red / green) with P(p = y mod 2) = (1+β)/2. Options: target ("binary":
    digit ≥ 5, or "digit"), image_size (multiple of 8), test_bias. Split 60/20/20."""
    from sklearn.datasets import load_digits   # ~1 s to import: only for this dataset

    digits = load_digits()
    rng = np.random.default_rng(seed)
    scale = max(1, opts["image_size"] // 8)
    img = np.kron(digits.images / 16.0, np.ones((scale, scale)))          # (N, 8s, 8s)
    y = digits.target if opts["target"] == "digit" else (digits.target >= 5).astype(np.int64)
    order = rng.permutation(len(y))
    cuts = np.split(order, [int(0.6 * len(y)), int(0.8 * len(y))])
    palette = np.array([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1]], dtype=np.float32)
    out = {}
    for split, idx in zip(SPLITS, cuts):
        b = opts["test_bias"] if split == "test" else beta
        p = np.where(rng.random(len(idx)) < (1 + b) / 2, y[idx] % 2, 1 - y[idx] % 2)
        x = img[idx][:, None] * palette[p][:, :, None, None]
        out[split] = dict(x=x.astype(np.float32), y=y[idx], p=p, a=p, fine=digits.target[idx],
                          coarse=y[idx])
    return out


def _from_files(loader):
    def builder(opts: dict, beta: float, seed: int) -> dict:
        if "root" not in opts:
            raise ValueError(f"dataset option `root` is required: the local folder with the files "
                             f"({loader.__doc__.splitlines()[0]})")
        # options every dataset takes (nccore.catalogue) are applied by build_dataset, not the loader
        kwargs = {k: v for k, v in opts.items() if k not in ("root", "target", *COMMON_DATASET_OPTIONS)}
        return loader(opts["root"], **kwargs)
    builder.__doc__ = loader.__doc__
    return builder


DATASETS.add("cifar10", _from_files(files.load_cifar10))
DATASETS.add("cifar100", _from_files(files.load_cifar100))
DATASETS.add("waterbirds", _from_files(files.load_waterbirds))
DATASETS.add("celeba", _from_files(files.load_celeba))
DATASETS.add("image_csv", _from_files(files.load_image_csv))
DATASETS.add("ham10000", _from_files(load_ham10000))


def _carve_val(raw: dict, fraction: float, seed: int) -> dict:
    """A dataset without a val split gets a seeded `fraction` of train as val."""
    if "val" in raw:
        return raw
    train = raw["train"]
    n = len(train["y"])
    perm = np.random.default_rng(seed).permutation(n)
    cut = int(round(n * (1 - fraction)))
    raw = dict(raw)
    raw["train"] = {k: v[perm[:cut]] for k, v in train.items()}
    raw["val"] = {k: v[perm[cut:]] for k, v in train.items()}
    return raw


def _coarse_target(raw: dict, target: str) -> dict:
    if target not in ("coarse", "fine"):
        return raw
    for part in raw.values():
        if part.get(target) is None:
            raise ValueError(f"target={target!r}: this dataset has no {target} labels")
        part["y"] = part[target]
    return raw


def build_dataset(name: str, options: dict | None = None, bias_level: float = 0.0, bias_kind: str = "spurious",
                  group_by: str = "spurious", seed: int = 0) -> Dataset:
    """Build a dataset by registry name. bias_level ∈ [0, 1] means the spurious correlation
    strength β (bias_kind="spurious") or the label-flip rate for positives of subgroup a = 1
    (bias_kind="label", train and val only), or the rate at which those positives are removed
    (bias_kind="drop": the same samples the flip would pick, so imbalance without label noise).
    group_by picks the attribute of the
    per-subgroup rows: "spurious" (p; g = 2y + p for binary y) or "sensitive" (a; g = a)."""
    builder = DATASETS[name]
    for key, value in (("bias_level", bias_level), ("bias_kind", bias_kind), ("group_by", group_by)):
        err = check_value(CONFIG[key], value)     # the accepted values are the catalogue's
        if err:
            raise ValueError(f"{key}={value!r}: {err}")
    opts = {**dataset_defaults(name), **(options or {})}
    beta = bias_level if bias_kind == "spurious" else opts["spurious_bias"]
    raw = builder(opts, beta, seed)
    raw = _coarse_target(_carve_val(raw, opts["val_fraction"], seed), opts.get("target"))
    if opts.get("n_train") is not None and "n_train" not in DATASET_OPTIONS.get(name, {}):   # else it generates n_train
        raw["train"] = {k: v[: opts["n_train"]] for k, v in raw["train"].items()}
    num_classes = int(max(int(np.max(part["y"])) for part in raw.values())) + 1
    splits = {}
    for k, split in enumerate(SPLITS):
        part = raw[split]
        s = make_split(part["x"], part["y"], part.get("a"), part.get("p"), None, part.get("fine"), part.get("coarse"),
                       part.get("spurious_mask"))
        if bias_kind in ("label", "drop") and split != "test" and bias_level > 0:
            y_new, flipped = inject_label_bias(s.y.numpy(), s.a.numpy(), bias_level, seed=seed * 1000 + k)
            if bias_kind == "label":
                s.y, s.flipped = torch.from_numpy(y_new), torch.from_numpy(flipped)
            else:   # the control: the same positives removed, no label changed (imbalance without noise)
                s = s.subset(torch.from_numpy(np.flatnonzero(~flipped)))
        s.g = s.a.clone() if group_by == "sensitive" else s.y_clean * 2 + s.p
        splits[split] = s
    attr = "a" if group_by == "sensitive" else "p"
    n_sub = int(max(int(getattr(s, attr).max()) for s in splits.values())) + 1
    n_groups = int(max(int(s.g.max()) for s in splits.values())) + 1
    return Dataset(name, splits, num_classes, n_groups, max(n_sub, 1), attr,
                   meta={"bias_level": bias_level, "bias_kind": bias_kind, "group_by": group_by})
