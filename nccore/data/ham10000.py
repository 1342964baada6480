"""HAM10000 (Tschandl et al., Sci. Data 2018) in its published layout: HAM10000_metadata.csv
(lesion_id, image_id, dx, dx_type, age, sex, localization) and the images
HAM10000_images_part_1/<image_id>.jpg, HAM10000_images_part_2/<image_id>.jpg.

Task and subgroups as in the fairness studies of medical imaging (Jones et al., MICCAI 2023;
Mouheb et al., MICCAI 2024): label 1 when dx is in `positive` (default mel, bcc, akiec: the
malignant diagnoses), sensitive attribute a = 1 for `attribute` "sex" → female, "age60" → age ≥ 60.
Rows with an unknown sex or a missing age are left out (counted in the error when nothing is left).
The dataset ships no split: lesions (not images: one lesion has several images) are split
70/10/20 into train/val/test by a fixed `split_seed`, the same in every trial.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .files import DatasetFileError, _load_images, _need, _read_csv

META = "HAM10000_metadata.csv"
PARTS = ("HAM10000_images_part_1", "HAM10000_images_part_2")
FMT = f"{META} with columns lesion_id, image_id, dx, age, sex (the published HAM10000 metadata)"


def _attribute(row: dict, attribute: str) -> int | None:
    if attribute == "sex":
        return {"female": 1, "male": 0}.get(row["sex"].strip().lower())
    if attribute == "age60":
        try:
            return int(float(row["age"]) >= 60)
        except ValueError:
            return None
    raise DatasetFileError(f"attribute={attribute!r}: expected sex or age60")


def _image_path(root: Path, image_id: str) -> str:
    for part in PARTS:
        if (root / part / f"{image_id}.jpg").exists():
            return f"{part}/{image_id}.jpg"
    _need(root / PARTS[0] / f"{image_id}.jpg", f"the image of {image_id} in {' or '.join(PARTS)}")
    return ""


def lesion_split(lesions: list[str], seed: int) -> dict[str, str]:
    """lesion id → train/val/test, 70/10/20 of the distinct lesions in a seeded order."""
    ids = sorted(set(lesions))
    order = np.random.default_rng(seed).permutation(len(ids))
    cut = [int(round(0.7 * len(ids))), int(round(0.8 * len(ids)))]
    return {ids[i]: ("train" if k < cut[0] else "val" if k < cut[1] else "test") for k, i in enumerate(order)}


def load_ham10000(root, image_size: int = 64, attribute: str = "sex", positive: str = "mel,bcc,akiec",
                  split_seed: int = 0):
    root = Path(root)
    rows = _read_csv(root / META, ("lesion_id", "image_id", "dx", "age", "sex"), FMT)
    pos = {d.strip() for d in positive.split(",")}
    kept = [(r, a) for r in rows if (a := _attribute(r, attribute)) is not None]
    if not kept:
        raise DatasetFileError(f"{root / META}: none of {len(rows)} rows has a known {attribute}")
    split = lesion_split([r["lesion_id"] for r, _ in kept], split_seed)
    out = {}
    for s in ("train", "val", "test"):
        part = [(r, a) for r, a in kept if split[r["lesion_id"]] == s]
        y = np.array([int(r["dx"].strip() in pos) for r, _ in part], dtype=np.int64)
        a = np.array([a for _, a in part], dtype=np.int64)
        x = _load_images(root, [_image_path(root, r["image_id"]) for r, _ in part], image_size)
        out[s] = dict(x=x, y=y, a=a, p=a)
    return out
