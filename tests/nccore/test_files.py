"""Local-file loaders on tiny fixture files written here, and their errors on broken ones."""
import csv
import pickle

import numpy as np
import pytest
from PIL import Image

from nccore.data import build_dataset
from nccore.data.files import DatasetFileError


def _pickle(path, obj):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def _cifar10(root, n=6):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        _pickle(root / name, {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                              "labels": list(rng.integers(0, 10, n))})


def _images(root, names, size=8):
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((size, size, 3), 20 * i % 255, dtype=np.uint8)).save(root / name)


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def test_cifar10_pickles_with_coarse_pairing(tmp_path):
    _cifar10(tmp_path)
    d = build_dataset("cifar10", {"root": str(tmp_path), "target": "coarse"})
    tr = d.splits["train"]
    assert tr.x.shape[1:] == (3, 32, 32) and float(tr.x.max()) <= 1.0
    assert len(tr) + len(d.splits["val"]) == 30 and len(d.splits["test"]) == 6
    assert bool((tr.y == tr.fine % 5).all())


def test_cifar100_fine_and_coarse(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        _pickle(tmp_path / split, {"data": rng.integers(0, 255, (10, 3072), dtype=np.uint8),
                                   "fine_labels": list(range(10)), "coarse_labels": [i // 5 for i in range(10)]})
    d = build_dataset("cifar100", {"root": str(tmp_path)})
    assert d.splits["test"].coarse.tolist() == [i // 5 for i in range(10)]


def test_truncated_pickle_names_the_file(tmp_path):
    _cifar10(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DatasetFileError, match="data_batch_3.*CIFAR"):
        build_dataset("cifar10", {"root": str(tmp_path)})


def test_missing_root_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(DatasetFileError, match=r"data_batch_1: not found.*put the files at .*nope.*`root`"):
        build_dataset("cifar10", {"root": str(tmp_path / "nope")})
    with pytest.raises(ValueError, match="option `root` is required"):
        build_dataset("waterbirds", {})


def test_waterbirds_metadata(tmp_path):
    names = [f"imgs/{i}.png" for i in range(6)]
    _images(tmp_path, names)
    _write_csv(tmp_path / "metadata.csv", ["img_id", "img_filename", "y", "split", "place"],
               [[i, n, i % 2, i // 2, (i // 2) % 2] for i, n in enumerate(names)])
    d = build_dataset("waterbirds", {"root": str(tmp_path), "image_size": 8})
    te = d.splits["test"]
    assert te.x.shape == (2, 3, 8, 8) and te.g.tolist() == [2 * y + p for y, p in zip(te.y.tolist(), te.p.tolist())]


def test_waterbirds_missing_column(tmp_path):
    _write_csv(tmp_path / "metadata.csv", ["img_filename", "y"], [["a.png", 0]])
    with pytest.raises(DatasetFileError, match=r"metadata.csv: missing columns \['split', 'place'\]"):
        build_dataset("waterbirds", {"root": str(tmp_path)})


def test_celeba_attribute_and_partition_files(tmp_path):
    ids = [f"{i:06d}.jpg" for i in range(6)]
    _images(tmp_path / "img_align_celeba", ids)
    _write_csv(tmp_path / "list_attr_celeba.csv", ["image_id", "Blond_Hair", "Male"],
               [[n, 1 if i % 2 else -1, -1 if i < 3 else 1] for i, n in enumerate(ids)])
    _write_csv(tmp_path / "list_eval_partition.csv", ["image_id", "partition"], [[n, i // 2] for i, n in enumerate(ids)])
    d = build_dataset("celeba", {"root": str(tmp_path), "image_size": 8, "attr_file": "list_attr_celeba.csv",
                                 "partition_file": "list_eval_partition.csv"})
    assert d.splits["train"].y.tolist() == [0, 1] and d.splits["test"].p.tolist() == [1, 1]


def test_celeba_published_txt_lists(tmp_path):
    """The layout CelebA ships: a count line, a names line, then `image a1 … aK` coded -1/1
    (two spaces before a 1, as in the original file); `image partition` per line."""
    ids = [f"{i:06d}.jpg" for i in range(6)]
    _images(tmp_path / "img_align_celeba", ids)
    names = ["5_o_Clock_Shadow", "Blond_Hair", "Male"]
    lines = ["6", " ".join(names)] + [f"{n} -1 {' 1' if i % 2 else '-1'} {' 1' if i >= 3 else '-1'}"
                                      for i, n in enumerate(ids)]
    (tmp_path / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "list_eval_partition.txt").write_text("".join(f"{n} {i // 2}\n" for i, n in enumerate(ids)))
    d = build_dataset("celeba", {"root": str(tmp_path), "image_size": 8})
    assert d.splits["train"].y.tolist() == [0, 1] and d.splits["val"].p.tolist() == [0, 1]
    assert d.splits["test"].g.tolist() == [2 * 0 + 1, 2 * 1 + 1]
    (tmp_path / "list_attr_celeba.txt").write_text("image_id Blond_Hair Male\n")
    with pytest.raises(DatasetFileError, match="published list_attr_celeba.txt"):
        build_dataset("celeba", {"root": str(tmp_path), "image_size": 8})


def test_generic_image_csv_and_bad_split_value(tmp_path):
    names = [f"x/{i}.png" for i in range(6)]
    _images(tmp_path, names)
    rows = [[n, i % 2, i // 3, ["train", "val", "test"][i % 3]] for i, n in enumerate(names)]
    _write_csv(tmp_path / "labels.csv", ["path", "label", "group", "split"], rows)
    d = build_dataset("image_csv", {"root": str(tmp_path), "image_size": 8}, group_by="sensitive")
    assert len(d.splits["train"]) == 2 and d.subgroup_attr == "a"
    rows[0][3] = "training"
    _write_csv(tmp_path / "labels.csv", ["path", "label", "group", "split"], rows)
    with pytest.raises(DatasetFileError, match="split='training' is not one of"):
        build_dataset("image_csv", {"root": str(tmp_path), "image_size": 8})


def test_undecodable_image_names_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    _write_csv(tmp_path / "labels.csv", ["path", "label", "group", "split"], [["bad.png", 0, 0, "train"]])
    with pytest.raises(DatasetFileError, match="bad.png: cannot be decoded"):
        build_dataset("image_csv", {"root": str(tmp_path)})


def test_ham10000_published_layout(tmp_path):
    """HAM10000_metadata.csv + images in the two part folders; label = malignant dx, a = female;
    a lesion's images stay in one split; unknown sex is left out."""
    rows, names = [], []
    for i in range(20):
        lesion, image = f"HAM_{i // 2:07d}", f"ISIC_{i:07d}"     # two images per lesion
        part = "HAM10000_images_part_1" if i < 10 else "HAM10000_images_part_2"
        names.append(f"{part}/{image}.jpg")
        rows.append([lesion, image, ["mel", "nv", "bcc", "bkl"][i % 4], "histo", 30 + 3 * i,
                     "unknown" if i == 19 else ["male", "female"][(i // 2) % 2], "back"])
    _images(tmp_path, names)
    _write_csv(tmp_path / "HAM10000_metadata.csv",
               ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"], rows)
    d = build_dataset("ham10000", {"root": str(tmp_path), "image_size": 8}, group_by="sensitive")
    assert sum(len(s) for s in d.splits.values()) == 19
    for s in d.splits.values():
        assert set(s.y.tolist()) <= {0, 1} and set(s.a.tolist()) <= {0, 1}
    # mel/bcc are at i % 4 ∈ {0, 2}: the 10 even i (all kept) are positive; a = female on odd lesions
    assert sum(int(s.y.sum()) for s in d.splits.values()) == 10
    assert sum(int(s.a.sum()) for s in d.splits.values()) == 9      # lesions 1, 3, …, 9 less image 19
    from nccore.data.ham10000 import lesion_split
    split = lesion_split([r[0] for r in rows[:19]], 0)
    assert sorted(split.values()).count("train") == 7 and len(split) == 10
    d2 = build_dataset("ham10000", {"root": str(tmp_path), "image_size": 8, "attribute": "age60"})
    assert int(d2.splits["train"].a.sum() + d2.splits["val"].a.sum() + d2.splits["test"].a.sum()) == 10
