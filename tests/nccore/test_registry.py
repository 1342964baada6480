"""The one registry mechanism behind datasets, architectures and methods."""
import pytest

from nccore.data import DATASETS
from nccore.methods import METHODS
from nccore.models import ARCHS, family
from nccore.registry import Registry


def test_register_lookup_and_listing():
    reg = Registry("widget", key="widget")

    @reg.register("round")
    def round_widget():
        return "o"

    assert reg["round"] is round_widget
    assert "round" in reg and "square" not in reg and sorted(reg) == ["round"] and len(reg) == 1


def test_unknown_name_suggests_the_closest_and_lists_the_choices():
    with pytest.raises(ValueError, match=r"arch='resnet19': unknown architecture; choose one of \['densenet121', "
                                         r"'resnet18', 'resnet34', 'vgg11', 'vgg16'\]; did you mean `resnet18`\?"):
        ARCHS["resnet19"]
    with pytest.raises(ValueError, match=r"dataset='zzz': unknown dataset; choose one of"):
        DATASETS["zzz"]


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        METHODS.add("erm", object)


def test_the_three_registries_hold_the_shipped_entries():
    assert {"resnet18", "resnet34", "densenet121", "vgg11", "vgg16"} <= set(ARCHS)
    assert [family(a) for a in ("resnet34", "densenet121", "vgg16")] == ["resnet", "densenet", "vgg"]
    assert {"biased_shapes", "colored_digits", "cifar10", "image_csv"} <= set(DATASETS)
    assert METHODS["erm"].name == "erm" and METHODS["dfr"].name == "dfr"
