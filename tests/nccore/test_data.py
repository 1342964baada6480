"""BiasedShapes oracles, label-bias oracles (§D), digits, GPU-side batching."""
import numpy as np
import pytest
import torch

from nccore.data import build_dataset, inject_label_bias, make_biased_shapes
from nccore.data.loader import TensorLoader, augment_batch
from nccore.data.synthetic import BACKGROUNDS, shape_mask


def test_same_seed_gives_byte_identical_arrays():
    a, b = make_biased_shapes(20, 16, bias=0.5, seed=3), make_biased_shapes(20, 16, bias=0.5, seed=3)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k


def test_sample_does_not_depend_on_n():
    small, big = make_biased_shapes(5, 16, seed=1), make_biased_shapes(12, 16, seed=1)
    assert np.array_equal(small["x"], big["x"][:5]) and np.array_equal(small["fine"], big["fine"][:5])


def test_full_bias_aligns_background_with_label():
    d = make_biased_shapes(300, 8, bias=1.0, shapes=("disk", "ring", "square", "hollow_square"), seed=0)
    assert np.array_equal(d["p"], d["y"])


def test_zero_bias_makes_background_independent():
    d = make_biased_shapes(20000, 4, bias=0.0, shapes=("disk", "ring", "square", "hollow_square"), seed=0)
    assert abs(np.mean(d["p"] == d["y"]) - 0.5) < 0.02


def test_noiseless_disk_has_two_colours_and_area_pi_r_squared():
    mask = shape_mask("disk", 32, 15.5, 15.5, 8.0)
    assert abs(mask.sum() - np.pi * 64) / (np.pi * 64) < 0.10
    d = make_biased_shapes(40, 32, noise=0.0, shapes=("disk",), seed=0)
    img = d["x"][0].reshape(3, -1).T
    assert len(np.unique(img, axis=0)) == 2
    assert any(np.allclose(c, BACKGROUNDS[d["p"][0]]) for c in np.unique(img, axis=0))


def test_ring_has_fewer_pixels_than_disk():
    assert shape_mask("ring", 32, 16, 16, 9).sum() < shape_mask("disk", 32, 16, 16, 9).sum()


def test_invisible_subgroup_renders_identically():
    a0 = make_biased_shapes(10, 16, separability=0.0, seed=5, force_a=0)
    a1 = make_biased_shapes(10, 16, separability=0.0, seed=5, force_a=1)
    assert np.array_equal(a0["x"], a1["x"])
    v0 = make_biased_shapes(10, 16, separability=1.0, seed=5, force_a=0)
    assert not np.array_equal(v0["x"], make_biased_shapes(10, 16, separability=1.0, seed=5, force_a=1)["x"])


def test_bias_out_of_range_is_refused():
    with pytest.raises(ValueError, match=r"bias_level=1.5: must be a finite number in \[0.0, 1.0\]"):
        build_dataset("biased_shapes", {"n_train": 10}, bias_level=1.5)
    with pytest.raises(ValueError, match="bias_kind='flip': choose one of 'spurious', 'label', 'drop'"):
        build_dataset("biased_shapes", {"n_train": 10}, bias_kind="flip")
    with pytest.raises(ValueError, match="group_by='class': choose one of 'spurious', 'sensitive'"):
        build_dataset("biased_shapes", {"n_train": 10}, group_by="class")


def test_builders_take_their_defaults_from_the_catalogue(monkeypatch):
    import dataclasses

    from nccore import catalogue

    opts = dict(catalogue.DATASET_OPTIONS["biased_shapes"])
    opts["n_val"] = dataclasses.replace(opts["n_val"], default=7)
    opts["image_size"] = dataclasses.replace(opts["image_size"], default=8)
    monkeypatch.setitem(catalogue.DATASET_OPTIONS, "biased_shapes", opts)
    d = build_dataset("biased_shapes", {"n_train": 10, "n_test": 5})
    assert len(d.splits["val"]) == 7 and tuple(d.splits["train"].x.shape[-2:]) == (8, 8)


# ------------------------------------------------------------------ label bias (§D)
def test_exact_label_bias_flips_a_quarter_of_group_one_positives():
    y = np.array([1] * 8 + [0] * 4 + [1] * 8)
    a = np.array([1] * 12 + [0] * 8)
    y2, flipped = inject_label_bias(y, a, 0.25, mode="exact", seed=0)
    assert flipped.sum() == 2 and np.all(y2[flipped] == 0) and np.all(y[flipped] == 1)
    assert np.array_equal(y2[a == 0], y[a == 0])


def test_label_bias_rate_zero_and_one():
    y, a = np.array([1, 1, 0, 1]), np.array([1, 1, 1, 0])
    assert np.array_equal(inject_label_bias(y, a, 0.0)[0], y)
    assert np.array_equal(inject_label_bias(y, a, 1.0)[0], [0, 0, 0, 1])


def test_bernoulli_label_bias_is_reproducible():
    rng = np.random.default_rng(0)
    y, a = rng.integers(0, 2, 500), rng.integers(0, 2, 500)
    r1, r2 = inject_label_bias(y, a, 0.25, seed=7), inject_label_bias(y, a, 0.25, seed=7)
    assert np.array_equal(r1[0], r2[0]) and 0.15 < r1[1].sum() / ((y == 1) & (a == 1)).sum() < 0.35


def test_dataset_label_bias_touches_train_and_val_never_test():
    d = build_dataset("biased_shapes", {"n_train": 400, "n_val": 200, "n_test": 200, "image_size": 8},
                      bias_level=0.5, bias_kind="label", group_by="sensitive")
    for name in ("train", "val"):
        s = d.splits[name]
        assert s.flipped.any() and torch.equal(s.y[~s.flipped], s.y_clean[~s.flipped])
        assert bool((s.a[s.flipped] == 1).all() and (s.y_clean[s.flipped] == 1).all())
    assert not d.splits["test"].flipped.any()
    assert torch.equal(d.splits["test"].y, d.splits["test"].y_clean)
    assert d.subgroup_attr == "a" and torch.equal(d.splits["test"].g, d.splits["test"].a)


def test_colored_digits_from_sklearn():
    d = build_dataset("colored_digits", {"image_size": 16}, bias_level=1.0)
    tr = d.splits["train"]
    assert tr.x.shape[1:] == (3, 16, 16) and d.num_classes == 2
    assert torch.equal(tr.p, tr.y % 2)
    assert len(tr) + len(d.splits["val"]) + len(d.splits["test"]) == 1797


def test_unknown_dataset_names_choices():
    with pytest.raises(ValueError, match="choose one of"):
        build_dataset("imagenet")


# ------------------------------------------------------------------ device-side batching
def test_augment_crops_a_shifted_window_and_flips():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8) + 1
    out = augment_batch(x, torch.Generator().manual_seed(0), pad=1)
    assert out.shape == x.shape
    for i in range(2):
        vals = set(out[i].flatten().tolist()) - {0.0}
        assert vals <= set(x[i].flatten().tolist()) and len(vals) >= 49  # a 7×7 core always survives


def test_loader_is_deterministic_for_a_generator_state():
    d = build_dataset("biased_shapes", {"n_train": 50, "n_val": 10, "n_test": 10, "image_size": 8})
    l1 = TensorLoader(d.splits["train"], 16, shuffle=True, augment=True, gen=torch.Generator().manual_seed(1))
    l2 = TensorLoader(d.splits["train"], 16, shuffle=True, augment=True, gen=torch.Generator().manual_seed(1))
    for (x1, y1), (x2, y2) in zip(l1, l2):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert len(l1) == 4 and len(TensorLoader(d.splits["train"], 16, drop_last=True)) == 3
