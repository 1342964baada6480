"""Which trials enter an effect estimate, and which configuration (cluster of seeds) each belongs to.

By default only completed trials that learned something are used: stopped (by a scheduler, before
their last epoch), failed, oom and diverged trials are left out, and so is a trial whose validation
accuracy stayed within the catalogue's margin of the majority-class rate. `include_status` widens
the statuses; every table records how many trials of each kind it left out and why.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import vocab

DEFAULT_STATUS = ("completed",)


def parse_statuses(text: str | None) -> tuple[str, ...]:
    """'completed,stopped' -> ('completed', 'stopped'); unknown names are an error listing the valid ones."""
    if not text:
        return DEFAULT_STATUS
    names = tuple(vocab.status_class(s.strip()) for s in text.split(",") if s.strip())
    bad = [n for n in names if n not in vocab.STATUSES]
    if bad:
        raise ValueError(f"--include-status: unknown status {', '.join(map(repr, bad))}; valid: {', '.join(vocab.STATUSES)}")
    return tuple(dict.fromkeys(("completed",) + names))


def status_of(trials: pd.DataFrame) -> pd.Series:
    col = "status" if "status" in trials else "trial_status" if "trial_status" in trials else None
    if col is None:
        return pd.Series("completed", index=trials.index)
    return trials[col].map(vocab.status_class)


def usable(trials: pd.DataFrame, include_status=DEFAULT_STATUS, keep_learned_nothing: bool = False,
           metric: str | None = None) -> tuple[pd.DataFrame, dict]:
    """(the trials an estimate may use, {reason: count} of those left out)."""
    st = status_of(trials)
    keep = st.isin(include_status)
    out: dict[str, int] = {f"status {s}": int(n) for s, n in st[~keep].value_counts().items()}
    if "learned_nothing" in trials and not keep_learned_nothing:
        ln = keep & trials["learned_nothing"].fillna(False).astype(bool)
        if ln.any():
            out["learned nothing (val acc ≈ majority rate)"] = int(ln.sum())
        keep &= ~ln
    if metric is not None and metric in trials:
        miss = keep & ~np.isfinite(trials[metric].astype(float))
        if miss.any():
            out[f"no {metric} value"] = int(miss.sum())
        keep &= ~miss
    return trials[keep], out


def config_ids(trials: pd.DataFrame, axes: list[str]) -> np.ndarray:
    """An integer per trial naming its configuration: the same values on every axis (seed aside)."""
    keys = [a for a in axes if a in trials and a != vocab.REPLICATE]
    if not keys:
        return np.arange(len(trials))
    code = np.zeros(len(trials), dtype=np.int64)
    for k in keys:               # mixed-radix code of the sorted levels: the order of a sorted groupby
        c, levels = pd.factorize(trials[k].astype(str), sort=True, use_na_sentinel=False)
        code = pd.factorize(code * max(len(levels), 1) + c, sort=True)[0]   # compact: no overflow
    return code


def describe_exclusions(excluded: dict) -> str:
    return "; ".join(f"{n} {why}" for why, n in excluded.items()) if excluded else "none"
