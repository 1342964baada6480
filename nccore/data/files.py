"""Loaders for datasets a user has on local disk. Nothing is downloaded.

Each loader checks the files it needs before reading and raises `DatasetFileError` naming the
file and the format it expects. Images are resized to `image_size` (square) and scaled to [0, 1].
"""
from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np



class DatasetFileError(ValueError):
    """A dataset file is missing or malformed."""


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetFileError(f"{path}: not found. Expected {what}: put the files at {path.parent} or set "
                               f"the dataset's `root` option to the folder that holds them.")
    return path


def _unpickle(path: Path, keys: tuple[str, ...], fmt: str) -> dict:
    try:
        with open(_need(path, fmt), "rb") as fh:
            d = pickle.load(fh, encoding="latin1")
    except DatasetFileError:
        raise
    except Exception as e:  # truncated / not a pickle
        raise DatasetFileError(f"{path}: cannot be read as a CIFAR python pickle ({e}). Expected {fmt}.") from e
    missing = [k for k in keys if k not in d]
    if missing:
        raise DatasetFileError(f"{path}: missing keys {missing}. Expected {fmt}.")
    return d


def _cifar_images(data) -> np.ndarray:
    arr = np.asarray(data, dtype=np.uint8)
    if arr.ndim != 2 or arr.shape[1] != 3072:
        raise DatasetFileError(f"CIFAR 'data' has shape {arr.shape}; expected (N, 3072) uint8 row-major RGB")
    return arr.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0


def load_cifar10(root, coarse_pairing: str = "mod5"):
    """CIFAR-10 python version: data_batch_1..5 and test_batch (keys data, labels). Coarse labels
    pair fine classes: "mod5" (f → f mod 5) or "semantic"."""
    root = Path(root)
    fmt = "the CIFAR-10 python pickle (cifar-10-batches-py/data_batch_1..5, test_batch)"
    pairing = {"mod5": np.arange(10) % 5, "semantic": np.array([0, 1, 2, 3, 4, 3, 2, 4, 0, 1])}[coarse_pairing]
    out = {}
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        parts = [_unpickle(root / n, ("data", "labels"), fmt) for n in names]
        x = np.concatenate([_cifar_images(d["data"]) for d in parts])
        fine = np.concatenate([np.asarray(d["labels"]) for d in parts])
        out[split] = dict(x=x, y=fine, fine=fine, coarse=pairing[fine])
    return out


def load_cifar100(root):
    """CIFAR-100 python version: `train` and `test` (keys data, fine_labels, coarse_labels)."""
    root = Path(root)
    fmt = "the CIFAR-100 python pickle (cifar-100-python/train, test with fine_labels, coarse_labels)"
    out = {}
    for split in ("train", "test"):
        d = _unpickle(root / split, ("data", "fine_labels", "coarse_labels"), fmt)
        fine, coarse = np.asarray(d["fine_labels"]), np.asarray(d["coarse_labels"])
        out[split] = dict(x=_cifar_images(d["data"]), y=fine, fine=fine, coarse=coarse)
    return out


def _read_csv(path: Path, required: tuple[str, ...], fmt: str) -> list[dict]:
    with open(_need(path, fmt), newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = set(rows[0]) if rows else set()
    missing = [c for c in required if c not in cols]
    if not rows or missing:
        raise DatasetFileError(f"{path}: missing columns {missing or list(required)}. Expected {fmt}.")
    return rows


def _load_images(root: Path, names: list[str], image_size: int) -> np.ndarray:
    from PIL import Image

    x = np.empty((len(names), 3, image_size, image_size), dtype=np.float32)
    for i, name in enumerate(names):
        path = _need(root / name, "an image file listed in the metadata")
        try:
            with Image.open(path) as im:
                im = im.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
        except Exception as e:
            raise DatasetFileError(f"{path}: cannot be decoded as an image ({e})") from e
        x[i] = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return x


def _split_rows(rows, codes: dict, column: str, path: Path) -> dict[str, list[dict]]:
    out = {s: [] for s in ("train", "val", "test")}
    for r in rows:
        s = codes.get(str(r[column]).strip())
        if s is None:
            raise DatasetFileError(f"{path}: {column}={r[column]!r} is not one of {sorted(codes)}")
        out[s].append(r)
    return out


def load_waterbirds(root, image_size: int = 64):
    """Waterbirds folder with metadata.csv (img_filename, y, split 0/1/2, place); g = 2y + place."""
    root = Path(root)
    path = root / "metadata.csv"
    fmt = "Waterbirds metadata.csv with columns img_filename, y (0/1), split (0/1/2), place (0/1)"
    rows = _read_csv(path, ("img_filename", "y", "split", "place"), fmt)
    out = {}
    for split, part in _split_rows(rows, {"0": "train", "1": "val", "2": "test"}, "split", path).items():
        y = np.array([int(r["y"]) for r in part])
        p = np.array([int(r["place"]) for r in part])
        out[split] = dict(x=_load_images(root, [r["img_filename"] for r in part], image_size), y=y, p=p, a=p)
    return out


def _read_celeba_txt(path: Path, kind: str, required: tuple[str, ...]) -> list[dict]:
    """CelebA's published whitespace-separated lists as rows keyed like the CSV version.
    kind "attr": line 1 the image count, line 2 the 40 attribute names, then `name v1 … v40`;
    kind "partition": `name partition` per line."""
    with open(_need(path, f"CelebA {path.name}"), encoding="utf-8") as fh:
        lines = [ln.split() for ln in fh if ln.strip()]
    if kind == "attr":
        if len(lines) < 2 or not lines[0][0].isdigit():
            raise DatasetFileError(f"{path}: expected the published list_attr_celeba.txt (line 1: image count, "
                                   "line 2: attribute names, then one line per image)")
        names = lines[1]
        rows = [dict(zip(["image_id", *names], ln)) for ln in lines[2:] if len(ln) == len(names) + 1]
    else:
        rows = [{"image_id": ln[0], "partition": ln[1]} for ln in lines if len(ln) == 2]
    missing = [c for c in required if not rows or c not in rows[0]]
    if missing:
        raise DatasetFileError(f"{path}: missing columns {missing} (or no rows in the published layout)")
    return rows


def _celeba_rows(path: Path, kind: str, required: tuple[str, ...]) -> list[dict]:
    if path.suffix == ".csv":
        what = ("list_attr_celeba.csv with image_id and the 40 attribute columns coded -1/1" if kind == "attr"
                else "list_eval_partition.csv with image_id, partition (0/1/2)")
        return _read_csv(path, required, what)
    return _read_celeba_txt(path, kind, required)


def load_celeba(root, image_size: int = 64, target: str = "Blond_Hair", attribute: str = "Male",
                image_dir: str = "img_align_celeba", attr_file: str = "list_attr_celeba.txt",
                partition_file: str = "list_eval_partition.txt"):
    """CelebA in its published layout: list_attr_celeba.txt (count line, attribute-names line, then
    `image a1 … a40` coded -1/1), list_eval_partition.txt (`image partition` with 0/1/2 = train/
    val/test), images under img_align_celeba/; the Kaggle .csv versions of both lists also work.
    Target Blond_Hair, spurious attribute Male (y, p = attribute > 0)."""
    root = Path(root)
    attrs = {r["image_id"]: r for r in _celeba_rows(root / attr_file, "attr", ("image_id", target, attribute))}
    ppath = root / partition_file
    parts = _celeba_rows(ppath, "partition", ("image_id", "partition"))
    out = {}
    for split, part in _split_rows(parts, {"0": "train", "1": "val", "2": "test"}, "partition", ppath).items():
        try:
            y = np.array([int(attrs[r["image_id"]][target]) > 0 for r in part], dtype=np.int64)
            p = np.array([int(attrs[r["image_id"]][attribute]) > 0 for r in part], dtype=np.int64)
        except KeyError as e:
            raise DatasetFileError(f"{ppath}: image {e} has no row in {attr_file}") from e
        names = [f"{image_dir}/{r['image_id']}" for r in part]
        out[split] = dict(x=_load_images(root, names, image_size), y=y, p=p, a=p)
    return out


def load_image_csv(root, csv_name: str = "labels.csv", image_size: int = 64):
    """Generic folder + CSV (HAM10000, PAPILA, CheXpert, ISIC after preprocessing): columns
    path (relative to root), label (int), group (int sensitive attribute), split (train/val/test)."""
    root = Path(root)
    path = root / csv_name
    fmt = f"{csv_name} with columns path, label, group, split (train/val/test)"
    rows = _read_csv(path, ("path", "label", "group", "split"), fmt)
    out = {}
    for split, part in _split_rows(rows, {"train": "train", "val": "val", "test": "test"}, "split", path).items():
        try:
            y = np.array([int(r["label"]) for r in part])
            a = np.array([int(r["group"]) for r in part])
        except ValueError as e:
            raise DatasetFileError(f"{path}: label and group must be integers ({e})") from e
        out[split] = dict(x=_load_images(root, [r["path"] for r in part], image_size), y=y, a=a, p=a)
    return out
