"""`loggers:` in a spec → Ray Tune's own logger callbacks (the real files are checked in tests/test_docs.py, slow)."""
import importlib.util

import pytest

from sweeps.loggers import logger_callbacks, logger_env
from sweeps.spec import SpecError, parse_spec


def check_loggers(value) -> list[str]:
    """A spec's `loggers` field as the spec parser accepts it (SpecError otherwise)."""
    return parse_spec({"name": "loggers", "loggers": value}).loggers


def test_names_map_to_ray_tunes_callbacks(tmp_path):
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.logger import TBXLoggerCallback

    tb, ml = logger_callbacks(["tensorboard", "mlflow"], tmp_path, "demo")
    assert isinstance(tb, TBXLoggerCallback) and isinstance(ml, MLflowLoggerCallback)
    assert ml.tracking_uri == (tmp_path / "mlruns").as_uri() and ml.experiment_name == "demo"
    assert logger_callbacks([], tmp_path, "demo") == []


def test_mlflow_file_store_is_allowed_for_the_run_only_when_it_is_used(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert logger_env(["mlflow"]) == {"MLFLOW_ALLOW_FILE_STORE": "true"} and logger_env(["tensorboard"]) == {}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    assert logger_env(["mlflow"]) == {}


@pytest.mark.parametrize("value, match", [
    (["tensorbord"], r"unknown logger 'tensorbord'; .*; did you mean `tensorboard`\?"),
    ("mlflow, wandb", r"unknown logger 'mlflow, wandb'"),
    ([1], "a list of names"),
])
def test_bad_logger_names_are_refused(value, match):
    with pytest.raises(SpecError, match=match):
        check_loggers(value)


def test_a_logger_whose_package_is_missing_names_the_extra():
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    with pytest.raises(SpecError, match=r"pip install 'ncsweep\[wandb\]'"):
        check_loggers(["wandb"])
    assert check_loggers("tensorboard") == ["tensorboard"] and check_loggers(None) == []
