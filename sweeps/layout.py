"""The run directory's names, in one place: every writer (sweeps.store, sweeps.verify) and reader
(analysis.load, the report, `ncsweep status`) takes them from here, as `pyarrow.dataset` owns
partition naming so that no caller parses paths itself. No torch, no Ray, no pyarrow.

    RUN_DIR/manifest.json, spec.json, lock.json, ray_procs.json, ncsweep.log
    RUN_DIR/trials/<trial_id>.json              one record per trial
    RUN_DIR/rows/<trial_id>/epoch-NNNN.parquet  one file per (trial, epoch) while it runs
    RUN_DIR/rows/<trial_id>/trial.parquet       the trial's epochs merged
    RUN_DIR/checkpoints/<trial_id>/, crash/<trial_id>.stderr

docs/run-directory.md describes each file.
"""
from __future__ import annotations

import os

KEY = ("trial_id", "epoch", "split", "group")   # each row's identity: a run directory holds each once
# Terminal statuses. completed: ran all its epochs; stopped: a scheduler ended it before its max
# epochs; diverged: a non-finite loss; failed: an error after its retries; oom: out of memory.
STATUSES = ("completed", "stopped", "diverged", "failed", "oom")
RUNNING = "running"                              # a trial in progress (or interrupted: resume continues it)
LEGACY_COMPLETED = "done"                        # what older run directories called completed
TERMINAL = frozenset(STATUSES) | {LEGACY_COMPLETED}
FAILED = ("failed", "oom")
FINISHED = ("completed", "stopped", "diverged", LEGACY_COMPLETED)   # terminal, with rows to check

MANIFEST = "manifest.json"
TRIALS, ROWS = "trials", "rows"
MERGED = "trial.parquet"                         # a trial's epochs merged into one file
_EPOCH_PREFIX, _EPOCH_SUFFIX = "epoch-", ".parquet"


def epoch_file(epoch: int) -> str:
    """The name of one epoch's rows file: epoch-NNNN.parquet."""
    return f"{_EPOCH_PREFIX}{int(epoch):04d}{_EPOCH_SUFFIX}"


def is_epoch_file(path: str) -> bool:
    """Whether path names one (trial, epoch) rows file (string tests, not a regex: readers run
    this over 10^5 paths several times)."""
    name = path.rpartition(os.sep)[2]
    return name.startswith(_EPOCH_PREFIX) and name.endswith(_EPOCH_SUFFIX) and \
        name[len(_EPOCH_PREFIX):-len(_EPOCH_SUFFIX)].isdigit()


def epoch_of(path: str) -> int:
    """The epoch an epoch file's name holds (`is_epoch_file(path)` must be true)."""
    return int(path.rpartition(os.sep)[2][len(_EPOCH_PREFIX):-len(_EPOCH_SUFFIX)])

