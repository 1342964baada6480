"""Experiment trackers through Ray Tune's own logger callbacks: `loggers: [tensorboard, mlflow, wandb]`.

| spec name     | Ray Tune callback                                   | where it writes |
|---------------|-----------------------------------------------------|-----------------|
| `tensorboard` | `ray.tune.logger.TBXLoggerCallback` (tensorboardX)  | one `events.out.tfevents.*` file per trial under the run's Tune directory (`RUN_DIR/_tune/`) |
| `mlflow`      | `ray.air.integrations.mlflow.MLflowLoggerCallback`  | one MLflow run per trial, experiment = spec name, in the local file store `RUN_DIR/mlruns` unless `MLFLOW_TRACKING_URI` is set |
| `wandb`       | `ray.air.integrations.wandb.WandbLoggerCallback`    | one W&B run per trial, project = spec name, offline in `RUN_DIR/wandb` unless `WANDB_MODE` is set (then `wandb sync` uploads) |

Each trial logs its config and, per epoch, the scalars Tune sees (`<split>_<metric>`, `train_loss`).
MLflow and W&B are optional extras: `pip install 'ncsweep[mlflow]'` / `'ncsweep[wandb]'`; a spec that
names one whose package is missing is refused before Ray starts.
"""
from __future__ import annotations

import os
from pathlib import Path


def logger_env(names: list[str]) -> dict:
    """Environment the named loggers need while a sweep runs (the runner sets it for the run only).
    MLflow 3 refuses its file store unless MLFLOW_ALLOW_FILE_STORE is set; RUN_DIR/mlruns is one."""
    if "mlflow" in names and not os.environ.get("MLFLOW_TRACKING_URI"):
        return {"MLFLOW_ALLOW_FILE_STORE": os.environ.get("MLFLOW_ALLOW_FILE_STORE", "true")}
    return {}


def logger_callbacks(names: list[str], run_dir, experiment: str) -> list:
    """Ray Tune callbacks for the named loggers of a sweep writing into `run_dir`."""
    run_dir = Path(run_dir)
    out = []
    for name in names:
        if name == "tensorboard":
            from ray.tune.logger import TBXLoggerCallback

            out.append(TBXLoggerCallback())
        elif name == "mlflow":
            from ray.air.integrations.mlflow import MLflowLoggerCallback

            uri = os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / "mlruns").as_uri()
            out.append(MLflowLoggerCallback(tracking_uri=uri, experiment_name=experiment))
        elif name == "wandb":
            from ray.air.integrations.wandb import WandbLoggerCallback

            mode = os.environ.get("WANDB_MODE", "offline")
            out.append(WandbLoggerCallback(project=experiment, dir=str(run_dir), mode=mode))
    return out
