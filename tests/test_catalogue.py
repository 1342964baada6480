"""The catalogue is the one declaration of keys and metrics: it agrees with the registries and with
what a trial really writes, it loads without torch, and docs/spec.md is generated from it."""
import math
import subprocess
import sys
from pathlib import Path

import pytest

from nccore import catalogue as cat


def test_catalogue_imports_nothing_heavy():
    code = ("import sys, nccore.catalogue, nccore.config, sweeps.spec, sweeps.validate; "
            "heavy = [m for m in ('torch', 'ray', 'pandas', 'pyarrow', 'sklearn') if m in sys.modules]; "
            "assert not heavy, heavy")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_names_agree_with_the_registries():
    from nccore.data import DATASETS
    from nccore.methods import METHODS
    from nccore.models import ARCHS

    assert set(cat.METHOD_OPTIONS) == set(METHODS)
    assert set(cat.DATASET_OPTIONS) == set(DATASETS)
    assert set(cat.ARCH_FAMILIES) == set(ARCHS)
    assert cat.CONFIG["method"].choices == tuple(cat.METHOD_OPTIONS)


def test_every_default_is_accepted_by_its_own_declaration():
    for k in cat.CONFIG.values():
        assert cat.check_value(k, k.default) is None, k.name
    for table in (cat.METHOD_OPTIONS, cat.DATASET_OPTIONS):
        for owner, opts in table.items():
            for k in opts.values():
                assert k.required or cat.check_value(k, k.default) is None, (owner, k.name)


def test_check_value_names_what_is_allowed():
    assert cat.check_value(cat.CONFIG["lr"], math.nan) == "must be finite: a finite number > 0.0"
    assert cat.check_value(cat.CONFIG["bias_level"], 1.5) == "must be a finite number in [0.0, 1.0]"
    assert cat.check_value(cat.CONFIG["epochs"], 0) == "must be a positive integer"
    assert "did you mean 'resnet18'" in cat.check_value(cat.CONFIG["arch"], "resnet17")
    assert cat.check_value(cat.CONFIG["penalty"], 5.0) is None
    assert "blend α" in cat.check_value(cat.CONFIG["penalty"], 5.0, "side_tuning")
    assert cat.check_value(cat.CONFIG["seed"], True) is not None          # a bool is not an integer here


def test_metric_names_parse_with_split_and_group():
    assert cat.parse_metric("test_worst_group_acc") == ("test", "worst_group_acc", None)
    assert cat.parse_metric("train_nc1_g1") == ("train", "nc1", "1")
    assert cat.parse_metric("train_loss") == (None, "train_loss", None)    # the epoch's training loss
    assert cat.metric_info("val_nc1").higher_is_better is False
    assert cat.metric_info("worst_group_acc").higher_is_better is True
    with pytest.raises(KeyError, match="did you mean 'val_worst_group_acc'"):
        cat.parse_metric("val_worst_grp_acc")
    assert cat.label("test_worst_group_acc") == "test worst_group_acc ↑"


def test_reported_metrics_follow_methods_and_metric_sets():
    erm = cat.reported_metrics(["erm"], {"nc", "fairness"})
    assert "val_worst_group_acc" in erm and "train_nc1" in erm and "train_loss" in erm
    assert not any("fewshot" in m or "delta_norm" in m or m.endswith("_gc") for m in erm)
    assert "test_fewshot_acc" in cat.reported_metrics(["transfer"], {"nc", "gc"})
    assert "train_gc" in cat.reported_metrics(["erm"], {"gc"}) and "val_gc" not in cat.reported_metrics()
    assert set(erm) <= set(cat.reported_metrics())


def test_row_schema_is_versioned_and_holds_config_columns_and_metrics():
    schema = cat.row_schema()
    assert schema.metadata[b"ncsweep_schema_version"] == str(cat.SCHEMA_VERSION).encode()
    names = set(schema.names)
    assert set(cat.config_columns()) <= names and set(cat.METRICS) <= names
    assert str(schema.field("epochs").type) == "int64" and str(schema.field("lr").type) == "double"
    assert "device" not in cat.config_columns() and "channels_last" not in cat.config_columns()


def test_learned_nothing_is_within_the_margin_of_the_majority_rate():
    assert cat.learned_nothing(0.51, 0.5) and cat.learned_nothing(0.5 + cat.LEARNED_NOTHING_MARGIN, 0.5)
    assert not cat.learned_nothing(0.6, 0.5)


def test_method_defaults_come_from_the_catalogue():
    assert cat.method_defaults("dfr")["n_refits"] == cat.METHOD_OPTIONS["dfr"]["n_refits"].default
    a, b = cat.method_defaults("dfr"), cat.method_defaults("dfr")
    a["Cs"].append(99.0)
    assert 99.0 not in b["Cs"]                                           # fresh copies


def test_docs_spec_md_is_generated_from_the_catalogue():
    from sweeps.keys import spec_markdown

    text = Path("docs/spec.md").read_text()
    assert text == spec_markdown(), "docs/spec.md is stale: run `python -m sweeps.keys > docs/spec.md`"


def test_no_hand_kept_key_or_metric_lists_remain():
    tree = [p for d in ("nccore", "sweeps") for p in Path(d).rglob("*.py") if p.name != "catalogue.py"]
    for p in tree:
        text = p.read_text()
        for name in ("CONFIG_COLUMNS", "REPORTED = (", "METRIC_SETS = (", "CHOICES = {", "_ALIASES = {"):
            assert name not in text, f"{p}: {name} (declare it in nccore/catalogue.py)"


def test_every_column_a_trial_writes_is_declared():
    from nccore.trial import run_trial

    rows = list(run_trial({"epochs": 1, "width": 0.0625, "batch_size": 32, "metrics": ["nc", "fairness"],
                           "data": {"n_train": 64, "n_val": 32, "n_test": 32, "image_size": 8}}))
    names = set(cat.row_schema().names)
    undeclared = sorted({k for r in rows for k in r} - names)
    assert not undeclared, f"row columns missing from nccore/catalogue.py: {undeclared}"
    assert all("_channels_last" not in r for r in rows)
