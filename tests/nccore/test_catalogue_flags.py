"""Catalogue flags that replace lists once kept by hand elsewhere."""
import pytest

from nccore import catalogue as cat


def test_row_field_kinds_name_host_and_time_columns():
    host = cat.row_fields("host")
    assert {"hostname", "node_id", "device", "torch_version", "ray_version", "ncsweep_version"} <= set(host)
    assert cat.row_fields("time") == ("epoch_ended_at",)     # what sweeps/worker.py writes into every row
    assert not set(host) & set(cat.METRICS)
    with pytest.raises(ValueError, match="unknown row-field kind 'hosts'"):
        cat.row_fields("hosts")


def test_time_column_is_in_the_row_schema():
    assert "epoch_ended_at" in cat.row_schema().names


def test_keys_determining_model_are_the_shape_keys_and_dataset_options():
    model = cat.keys_determining("model")
    assert set(model) == {"arch", "width", "stem", "dataset", "coarse", "data.target", "data.image_size"}
    assert "lr" not in model and "seed" not in model       # training settings never change parameter shapes
    assert "data.target" not in cat.keys_determining("data")
    with pytest.raises(ValueError, match="unknown Key.determines value 'models'"):
        cat.keys_determining("models")


def test_method_families_match_the_method_classes():
    from nccore.methods import METHODS
    from nccore.methods.transfer import Transfer
    from nccore.methods.tuning import TuningMethod

    assert set(cat.METHOD_INFO) == set(METHODS)
    for name, info in cat.METHOD_INFO.items():
        assert (info.family == "tuning") == issubclass(METHODS[name], TuningMethod), name
        assert (info.family == "transfer") == issubclass(METHODS[name], Transfer), name
    assert cat.methods_in("tuning") == ("change_penalty", "mas", "side_tuning")
    assert cat.methods_in("transfer") == ("transfer", "gc_reg")
    assert cat.metric_info("tune_acc").methods == cat.methods_in("tuning")
    assert "gc" in cat.trial_metric_sets(["nc"], method="gc_reg") and "gc" not in cat.trial_metric_sets(["nc"])
    with pytest.raises(ValueError, match="unknown method family 'tune'"):
        cat.methods_in("tune")


def test_only_fusable_methods_fuse():
    from nccore.fused import why_not_fusable

    assert cat.fusable_methods() == ("erm",)
    assert why_not_fusable({"method": "erm"}) is None
    assert "only ['erm'] fuse" in why_not_fusable({"method": "groupdro"})


def test_methods_have_no_dead_hooks():
    from nccore.methods.base import Method

    assert not hasattr(Method, "check_options") and not hasattr(Method, "check_config")


def test_no_hand_kept_list_of_catalogue_names_is_back():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    names = ("HOST_COLUMNS", "TIME_COLUMNS", "MODEL_KEYS", "_TUNING_METHODS", "_TRANSFER_METHODS", "FUSABLE_METHODS",
             "BIAS_KINDS", "GROUP_BY =", "GROUP_METRICS", "CURVES =", '("nc", "gc")')
    for p in (q for d in ("nccore", "sweeps", "analysis") for q in (root / d).rglob("*.py")):
        text = p.read_text()
        if p.name == "catalogue.py":
            text = text.replace('TRAIN_GEOMETRY_SETS = ("nc", "gc")', "")    # declared there, once
        for name in names:
            assert name not in text, f"{p.relative_to(root)}: {name} (declare it as a flag in nccore/catalogue.py)"
