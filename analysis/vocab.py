"""What the analysis needs to know about config keys and metrics, read from the catalogue.

`nccore.catalogue` declares every config key (type, unit, whether it is an analysis axis) and every
metric (direction, unit, meaning). This module is the analysis' only door to it (the catalogue
imports only the standard library, so neither torch nor Ray is loaded), and `analysis/` keeps no
list of names of its own:

- `swept_axes(manifest)`: the keys a run actually swept (its stored spec's `space`), seed excluded;
- `is_axis`, `is_categorical`, `log_scale`: how a key enters a model; `is_condition`: a data condition;
- `parse_metric(name)`: a table column `test_nc1_g0` → (test, nc1, 0), by the catalogue's parser;
- `metric_meta(name)`: label, unit, higher-is-better and meaning of `nc1` or `test_nc1_g0`;
- `primary_split(name)`: the split a metric is tabulated on; `by_group(name)`: also per subgroup;
  `curve_metrics()`: the metrics drawn per epoch in the report, in order; `has_group_rows(name)`;
- `row_columns(kind)`: row columns that say where a trial ran ("host") or when a row was recorded ("time");
- `status_class(status)`: one of completed / stopped / failed / oom / diverged (older runs wrote `done`);
- `learned_nothing(val_acc, majority_acc)`: the catalogue's "trial learned nothing" rule.
"""
from __future__ import annotations

import math

from nccore import catalogue
from sweeps import layout

SPLITS = catalogue.SPLITS
REPLICATE = "seed"                 # the key whose values are replicates, never an effect
MAJORITY = "majority_acc"          # the row column holding the majority-class rate
STATUSES = (*layout.STATUSES, layout.RUNNING)   # the run directory's statuses (running: a sweep in progress)
_ALIASES = {layout.LEGACY_COMPLETED: "completed", "error": "failed", "pending": layout.RUNNING}
LOG_SPAN = 10.0                    # positive numeric axes spanning ≥ this ratio enter models as log10


def status_class(status) -> str:
    """A trial record's status mapped onto the five final statuses, or `running` (None → failed)."""
    s = str(status) if status is not None and status == status else "failed"
    return _ALIASES.get(s, s)


def swept_axes(manifest: dict | None) -> list[str] | None:
    """The keys a run swept, in spec order, seed left out; None when the manifest holds no spec."""
    if not manifest:
        return None
    keys = manifest.get("swept") or list(((manifest.get("spec") or {}).get("space") or {}).keys())
    return [k for k in keys if k != REPLICATE]


def valid_axes() -> tuple[str, ...]:
    return tuple(k for k in catalogue.axis_keys() if k != REPLICATE)


def is_axis(key: str) -> bool:
    k = catalogue.CONFIG.get(key)
    return bool(k is not None and k.axis)


def is_condition(key: str) -> bool:
    """A data condition (bias level, dataset, …): model selection compares configurations within each
    of its values, never across them (a configuration is how the model is trained, not the data)."""
    k = catalogue.CONFIG.get(key)
    return bool(k is not None and k.condition)


def is_categorical(key: str) -> bool:
    k = catalogue.CONFIG.get(key)
    return k is not None and k.type in ("str", "bool", "path", "list[str]")


def log_scale(key: str, values) -> bool:
    """Positive numeric values spanning a factor of LOG_SPAN or more (lr, weight decay, penalty grids)."""
    vals = [float(v) for v in values if v is not None and v == v]
    return bool(vals) and min(vals) > 0 and max(vals) / min(vals) >= LOG_SPAN


def unit_of_key(key: str) -> str:
    k = catalogue.CONFIG.get(key)
    return k.unit if k is not None else ""


def row_columns(kind: str) -> tuple[str, ...]:
    """Row columns of a kind: "host" (hostname, device, versions: the same on every row of a trial)
    or "time" (when the row was recorded), in the catalogue's order."""
    return catalogue.row_fields(kind)


def primary_split(name: str) -> str:
    """The split a metric (base name) is tabulated and drawn on (catalogue: Metric.primary_split)."""
    return catalogue.METRICS[name].primary_split


def by_group(name: str) -> bool:
    """Whether the analysis also tabulates a metric's per-subgroup columns (catalogue: Metric.by_group)."""
    m = catalogue.METRICS.get(name)
    return bool(m is not None and m.by_group)


def has_group_rows(name: str) -> bool:
    """Whether a metric (base name) has values on the subgroup rows (scope split+group or group)."""
    return "group" in catalogue.METRICS[name].scope


def curve_metrics() -> tuple[str, ...]:
    """The metrics the report draws per epoch, in the catalogue's order (Metric.curve)."""
    return tuple(sorted((n for n, m in catalogue.METRICS.items() if m.curve), key=lambda n: catalogue.METRICS[n].curve))


def is_metric(column: str) -> bool:
    return column in catalogue.METRICS


def parse_metric(name: str, columns=()) -> tuple[str, str, str]:
    """A table column `<split>_<metric>[_g<k>]` → (split, metric, group; "all" for the split's own
    row): `catalogue.parse_metric` with the split required; `columns`: row columns beyond the
    catalogue's metrics that may be tabulated too. ValueError for a name it cannot read."""
    try:
        split, base, group = catalogue.parse_metric(name, split_required=True, columns=columns)
    except KeyError as e:
        raise ValueError(f"--metrics: {e.args[0]}") from None
    return split, base, group or "all"


def metric_meta(name: str) -> dict:
    """{'label', 'unit', 'higher_is_better', 'meaning', 'source'} of a metric (base or full name)."""
    try:
        m = catalogue.metric_info(name)
        lab = catalogue.label(name)
    except KeyError:
        return {"label": name, "unit": "", "higher_is_better": True, "meaning": "", "source": ""}
    hib = True if m.higher_is_better is None else m.higher_is_better
    return {"label": lab, "unit": m.unit, "higher_is_better": hib, "meaning": m.meaning, "source": m.source,
            "direction": m.higher_is_better}


def metric_splits(name: str) -> tuple[str, ...]:
    """The splits a metric (base or full name) has rows on; () for a name the catalogue lacks."""
    try:
        return tuple(catalogue.metric_info(name).splits)
    except KeyError:
        return ()


def learned_nothing(val_acc: float, majority_acc: float) -> bool:
    """The catalogue's rule; False when either number is missing (nothing to judge by)."""
    if not (math.isfinite(val_acc) and math.isfinite(majority_acc)):
        return False
    return bool(catalogue.learned_nothing(val_acc, majority_acc))


LEARNED_NOTHING_MARGIN = catalogue.LEARNED_NOTHING_MARGIN
