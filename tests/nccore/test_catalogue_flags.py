"""Catalogue flags that replace lists once kept by hand elsewhere."""
import pytest

from nccore import catalogue as cat


def test_row_field_kinds_name_host_and_time_columns():
    host = cat.row_fields("host")
    assert {"hostname", "node_id", "device", "torch_version", "ray_version", "ncsweep_version"} <= set(host)
    assert cat.row_fields("time") == ("epoch_ended_at",)     # what sweeps/runner.py writes into every row
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
