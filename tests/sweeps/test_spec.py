"""Spec validation: every bad spec is refused before Ray starts, naming field, value and fix."""
import copy

import pytest
import yaml

from sweeps.plan import planned_configs
from sweeps.spec import SpecError, load_spec, parse_spec

GOOD = {
    "name": "t",
    "dataset": {"name": "biased_shapes", "options": {"n_train": 64}},
    "base": {"epochs": 2, "width": 0.125},
    "space": {"arch": {"grid": ["resnet18", "vgg11"]}, "lr": {"loguniform": ["1e-3", 0.1]},
              "bias_level": {"choice": [0.0, 0.5]}},
    "search": {"algorithm": "random", "num_samples": 3, "seed": 1},
    "scheduler": {"type": "asha", "metric": "val_worst_group_acc", "mode": "max"},
    "resources": {"cpu": 1, "gpu": 0.25},
    "max_concurrent": 2,
    "retries": 1,
}


def _with(path, value):
    spec = copy.deepcopy(GOOD)
    node = spec
    *head, last = path
    for k in head:
        node = node[k]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return spec


BAD = [
    (("space", "arch"), {"grid": ["resnet18", "resnet50"]}, r"space\.arch.*resnet50.*choose one of"),
    (("space", "bias_level"), {"choice": [0.5, 1.5]}, r"space\.bias_level.*1\.5.*\[0"),
    (("base", "weight_decay"), -0.1, r"base.*weight_decay.*>= 0"),
    (("space", "lr"), {"uniform": [-1, 0.1]}, r"space\.lr.*-1.*> 0"),
    (("space", "lr"), {"loguniform": [0, 0.1]}, r"space\.lr\.loguniform.*> 0"),
    (("scheduler", "metric"), "val_accuracy", r"scheduler\.metric.*val_accuracy.*unknown metric"),
    (("base", "learning_rate"), 0.1, r"learning_rate.*did you mean `lr`"),
    (("serach",), {}, r"`serach`.*unknown top-level key"),
    (("search", "algorithm"), "bayes", r"search\.algorithm.*bayes.*grid"),
    (("resources", "gpu"), -1, r"resources\.gpu.*>= 0"),
    (("resources", "tpu"), 1, r"resources\.tpu.*cpu, gpu"),
    (("space", "lr"), {"uniform": [0.1, 0.01]}, r"low < high"),
    (("space", "momentum"), {"normal": [0, 1]}, r"space\.momentum.*grid \| choice"),
    (("dataset", "name"), "imagenet", r"dataset\.name.*imagenet.*choose one of"),
    (("dataset",), {"name": "cifar10", "options": {"root": "/no/such/dir"}}, r"dataset\.options\.root.*not found"),
    (("max_concurrent",), 0, r"max_concurrent.*positive integer"),
    (("space", "epochs"), {"grid": [0, 2]}, r"space\.epochs.*positive integer"),
    (("space", "method"), {"choice": ["erm", "no_such_method"]}, r"space\.method.*no_such_method.*choose one of"),
]


@pytest.mark.parametrize("path, value, match", BAD)
def test_bad_spec_is_refused_naming_the_field(path, value, match):
    with pytest.raises(SpecError, match=match):
        parse_spec(_with(path, value))


def test_grid_algorithm_refuses_sampled_domains_and_optuna_refuses_grids():
    with pytest.raises(SpecError, match="algorithm `grid` takes only"):
        parse_spec(_with(("search", "algorithm"), "grid"))
    spec = _with(("search",), {"algorithm": "optuna", "num_samples": 2, "metric": "val_acc"})
    with pytest.raises(SpecError, match="use {choice"):
        parse_spec(spec)


def test_good_spec_plans_grid_times_samples_deterministically():
    spec = parse_spec(GOOD)
    a, b = planned_configs(spec), planned_configs(parse_spec(GOOD))
    assert len(a) == 6 and [c["trial_id"] for c in a] == [c["trial_id"] for c in b]
    assert all(1e-3 <= c["lr"] <= 0.1 for c in a) and {c["arch"] for c in a} == {"resnet18", "vgg11"}


def test_yaml_is_read_with_a_safe_loader(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(p)


def test_missing_spec_file_is_named(tmp_path):
    with pytest.raises(SpecError, match="nope.yaml.*not found"):
        load_spec(tmp_path / "nope.yaml")


def test_shipped_specs_are_valid():
    from pathlib import Path

    for p in sorted(Path("sweeps/specs").glob("*.yaml")):
        spec = load_spec(p)
        assert spec.name and yaml.safe_load(p.read_text())


def test_variants_plan_one_subspace_after_another_and_are_validated_each():
    spec = parse_spec({**GOOD, "space": {"seed": {"grid": [0, 1]}}, "scheduler": None,
                       "search": {"algorithm": "grid"},
                       "variants": [{"method": "change_penalty", "penalty": {"grid": [0.0, 10.0]}},
                                    {"method": "side_tuning", "penalty": {"grid": [0.5]}}]})
    plan = planned_configs(spec)
    assert sorted((c["method"], c["penalty"]) for c in plan) == sorted(
        [("change_penalty", 0.0)] * 2 + [("change_penalty", 10.0)] * 2 + [("side_tuning", 0.5)] * 2)
    with pytest.raises(SpecError, match=r"variants\[1\]\.penalty.*blend α"):
        parse_spec({**GOOD, "scheduler": None, "search": {"algorithm": "grid"}, "space": {},
                    "variants": [{"method": "mas", "penalty": {"grid": [10.0]}},
                                 {"method": "side_tuning", "penalty": {"grid": [10.0]}}]})
