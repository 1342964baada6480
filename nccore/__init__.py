"""nccore — the science of ncsweep: datasets, models, training methods and metrics for neural
collapse and fairness studies. No Ray here; `run_trial(config)` is a plain function."""
__version__ = "0.1.0"


def run_trial(config: dict):
    """Yield one row (dict) per (epoch, split, group); see nccore.trial.iter_epochs."""
    from .trial import run_trial as _run

    return _run(config)
