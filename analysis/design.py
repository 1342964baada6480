"""The modelling frame of a sensitivity table: the metric and the swept axes, standardized.

    p = Prepared.of(used, axes)       # the axes' part, once per set of usable trials
    frame = p.frame(used[metric])     # y (z-scored) + one column per varying axis
    frame, varying, fixed = design(trials, metric, axes)   # both at once, for one metric

A numeric axis is z-scored (log10 first when its values are positive and span a factor of 10 or
more, `vocab.log_scale`); a categorical axis stays as its levels (the first in sorted order is
the reference). `frame.attrs` holds each axis' scale, reference level and span, and the
metric's mean and SD (for contrasts in the metric's units). The axes' part depends only on which
trials are used, so `analysis.sensitivity.fit_tables` builds it once and shares it between metrics.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import vocab
from .filters import config_ids


def is_cat(s: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(s)


def default_axes(trials: pd.DataFrame) -> list[str]:
    """Catalogue axes present as columns (used when the run's manifest does not say what was swept)."""
    return [c for c in trials.columns if vocab.is_axis(c) and c != vocab.REPLICATE]


def _axis_values(trials: pd.DataFrame, axis: str) -> tuple[pd.Series, str]:
    v = trials[axis]
    if vocab.is_categorical(axis) or not pd.api.types.is_numeric_dtype(v):
        return v.astype(str).astype(object), "categorical"
    v = v.astype(float)
    if vocab.log_scale(axis, v.unique()):
        return np.log10(v), "log10, z-scored"
    return v, "z-scored"


@dataclass
class Prepared:
    """The axes' part of the modelling frame for one set of usable trials, shared by every metric
    fitted on them: each varying axis z-scored (log10 first where log-scaled) or categorical
    (`columns`, indexed as the trials), the varying and not-varied axes, each axis' scale,
    reference level and span (`attrs`), and the configuration cells."""
    index: pd.Index
    axes: tuple | None
    columns: pd.DataFrame
    varying: list[str]
    fixed: list[str]
    attrs: dict
    cells: dict
    matrix: pd.DataFrame | None = None      # main_effects_matrix, built on first use

    @classmethod
    def of(cls, trials: pd.DataFrame, axes=None) -> Prepared:
        names = default_axes(trials) if axes is None else list(axes)
        cols, varying, fixed, scale, ref, span = {}, [], [], {}, {}, {}
        for a in names:
            if a not in trials.columns:
                continue
            v, how = _axis_values(trials, a)
            if v.nunique(dropna=True) < 2:
                fixed.append(a)
                continue
            varying.append(a)
            scale[a] = how
            if is_cat(v):
                ref[a] = sorted(v.dropna().unique())[0]
                cols[a] = v
            else:
                cols[a] = z = (v - v.mean()) / v.std(ddof=0)
                raw = trials[a].astype(float)
                span[a] = (float(raw.min()), float(raw.max()), float(z.min()), float(z.max()))
        return cls(trials.index, None if axes is None else tuple(axes), pd.DataFrame(cols, index=trials.index),
                   varying, fixed, {"scale": scale, "reference": ref, "span": span}, cells(trials, varying))

    @classmethod
    def shared(cls, trials: pd.DataFrame, axes, cache: list | None) -> Prepared:
        """`Prepared.of(trials, axes)`, taken from `cache` (a list, filled here) when an earlier
        metric used the same trials."""
        key = None if axes is None else tuple(axes)
        for p in cache or ():
            if p.axes == key and p.index.equals(trials.index):
                return p
        p = cls.of(trials, axes)
        if cache is not None:
            cache.append(p)
        return p

    def frame(self, y: pd.Series) -> pd.DataFrame:
        """The standardized modelling frame: y (z-scored) + the varying axes' columns, rows with a
        missing value dropped; `frame.attrs` holds each axis' scale and reference level."""
        df = pd.DataFrame({"y": y.astype(float), **{a: self.columns[a] for a in self.columns}}).dropna()
        sd, mean = df["y"].std(ddof=0), df["y"].mean()
        df["y"] = (df["y"] - mean) / sd if sd > 0 else df["y"] * 0.0
        nan = float("nan")
        df.attrs.update(scale=self.attrs["scale"], reference=self.attrs["reference"],
                        y_sd=float(sd) if sd == sd else nan, y_mean=float(mean) if mean == mean else nan,
                        span=self.attrs["span"])
        return df


def design(trials: pd.DataFrame, metric: str, axes=None) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The standardized modelling frame: columns y + one per varying axis; returns (frame,
    varying axes, not-varied axes). `frame.attrs` holds each axis' scale and reference level."""
    trials = trials[np.isfinite(trials[metric].astype(float))]
    p = Prepared.of(trials, axes)
    return p.frame(trials[metric]), p.varying, p.fixed


def cells(trials: pd.DataFrame, varying: list[str]) -> dict:
    """Trials per configuration cell (min / max over cells) and per level of each categorical axis."""
    out = {}
    if varying:
        sizes = pd.Series(config_ids(trials, varying)).value_counts()
        out["per_config"] = (int(sizes.min()), int(sizes.max()), int(len(sizes)))
    for a in varying:
        if a in trials and vocab.is_categorical(a):
            out[a] = {str(k): int(v) for k, v in trials[a].astype(str).value_counts().sort_index().items()}
    return out
