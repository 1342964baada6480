"""run_trial: rows, determinism, exact resume, divergence, validation, the studies' smoke effects."""
import math

import pytest

from nccore.config import trial_id, validate_config
from nccore.trial import iter_epochs, run_trial

TIMING = {"train_time", "eval_time", "images_per_s"}
TINY = {"arch": "vgg11", "width": 0.125, "epochs": 3, "batch_size": 64,
        "data": {"n_train": 256, "n_val": 64, "n_test": 128, "image_size": 16}}


def _strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _same(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(_strip(a), _strip(b)):
        assert ra.keys() == rb.keys()
        for k in ra:
            va, vb = ra[k], rb[k]
            assert va == vb or (isinstance(va, float) and math.isnan(va) and math.isnan(vb)), k


def test_rows_cover_every_split_and_group_with_metrics():
    rows = list(run_trial({**TINY, "epochs": 1, "bias_level": 0.8}))
    keys = {(r["split"], r["group"]) for r in rows}
    assert keys == {(s, g) for s in ("train", "val", "test") for g in ("all", "0", "1")}
    top = next(r for r in rows if r["split"] == "test" and r["group"] == "all")
    for k in ("nc1", "nc2_etf", "nc3", "nc4_mismatch", "cdnv", "worst_group_acc", "eo_diff", "loss", "acc",
              "lr_now", "train_time", "images_per_s", "trial_id", "arch", "bias_level"):
        assert k in top, k
    grp = next(r for r in rows if r["split"] == "test" and r["group"] == "1")
    for k in ("nc1", "f1", "tpr", "fpr", "align_cos", "axis_cos", "acc"):
        assert k in grp, k


def test_same_seed_gives_identical_rows():
    _same(list(run_trial(TINY)), list(run_trial(TINY)))


def test_resume_from_checkpoint_gives_the_same_rows(tmp_path):
    full = list(run_trial(TINY))
    cfg = {**TINY, "checkpoint_dir": str(tmp_path / "ck")}
    first = []
    for epoch, rows in iter_epochs(cfg):
        first += rows
        if epoch == 1:
            break  # the process "dies" after epoch 1's checkpoint
    rest = list(run_trial(cfg))
    assert {r["epoch"] for r in rest} == {2}
    _same(full, first + rest)


def test_diverging_training_ends_with_a_diverged_row():
    rows = list(run_trial({**TINY, "lr": 1e12, "optimizer": "sgd", "epochs": 3}))
    assert rows[-1]["status"] == "diverged" and not math.isfinite(rows[-1]["train_loss"])


def test_erm_learns_the_shortcut_at_high_bias():
    rows = list(run_trial({**TINY, "arch": "resnet18", "bias_level": 0.95, "epochs": 3,
                           "data": {"n_train": 600, "n_val": 64, "n_test": 400, "image_size": 16}}))
    te = next(r for r in rows if r["split"] == "test" and r["group"] == "all" and r["epoch"] == 2)
    assert te["worst_group_acc"] < te["avg_acc"] - 0.2


def test_label_bias_lowers_tpr_of_the_biased_subgroup_in_train_rows():
    rows = list(run_trial({**TINY, "bias_kind": "label", "group_by": "sensitive", "bias_level": 0.5,
                           "data": {**TINY["data"], "separability": 1.0}}))
    tr = {r["group"]: r for r in rows if r["split"] == "train" and r["epoch"] == 2}
    assert "memorisation" in tr["1"] and "nc1_clean" in tr["all"]


@pytest.mark.parametrize("bad, match", [
    ({"arch": "resnet50"}, "arch.*choose one of"),
    ({"bias_level": 1.2}, "bias_level.*1.2"),
    ({"lr": 0}, "lr.*> 0"),
    ({"learning_rate": 0.1}, "did you mean `lr`"),
    ({"metrics": ["nc", "nc5"]}, "unknown metric set 'nc5'"),
    ({"epochs": 0}, "epochs.*positive integer"),
    ({"method_options": {"foo": 1}}, "not an option of method 'erm'"),
])
def test_bad_config_is_refused_with_the_key_named(bad, match):
    with pytest.raises(ValueError, match=match):
        validate_config(bad)


def test_trial_id_is_stable_and_ignores_where_it_runs():
    assert trial_id({"lr": 0.1}) == trial_id({"lr": 0.1, "checkpoint_dir": "/x"})
    assert trial_id({"lr": 0.1}) != trial_id({"lr": 0.1, "seed": 1})


def test_coarse_training_keeps_fine_structure_for_resnet():
    """Yang et al.'s finding at CPU scale: after training on coarse labels only, the fine shapes are
    recoverable from the features — k-means NMI inside each coarse class above its permutation
    baseline, and a linear probe far above 0.5, the ceiling of features that only know the coarse class."""
    rows = list(run_trial({"arch": "resnet18", "width": 0.125, "coarse": True, "lr": 0.1, "epochs": 8,
                           "batch_size": 128, "data": {"n_train": 1200, "n_val": 64, "n_test": 500,
                                                       "image_size": 32, "noise": 0.02}}))
    te = next(r for r in rows if r["split"] == "test" and r["group"] == "all" and r["epoch"] == 7)
    assert te["fine_nmi"] > 3 * te["fine_nmi_chance"]
    assert te["fine_probe_acc"] > 0.7
