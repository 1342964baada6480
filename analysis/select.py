"""Which epoch counts for each trial: `final`, or `best:<metric>` on the validation split.

`best:worst_group_acc` picks, per trial, the epoch whose validation "all" row has the highest
worst-group accuracy (the DFR-style model-selection rule). Metrics where lower is better (loss,
NC metrics, gaps, differences, mismatch) are minimised. Ties go to the earliest epoch.
"""
from __future__ import annotations

import pandas as pd

LOWER_IS_BETTER = ("loss", "nc1", "nc2", "nc3", "nc4", "cdnv", "gap", "diff", "mismatch", "gc")


def lower_is_better(metric: str) -> bool:
    return any(metric.startswith(p) or p in metric for p in LOWER_IS_BETTER)


def select_epochs(df: pd.DataFrame, rule: str = "final") -> pd.DataFrame:
    """Rows at each trial's selected epoch, with a `selection` column recording the rule."""
    ok = df[df.get("status", "ok").fillna("ok").eq("ok")] if "status" in df else df
    if rule == "final":
        chosen = ok.groupby("trial_id")["epoch"].max()
    elif rule.startswith("best:"):
        metric = rule.split(":", 1)[1].removeprefix("val_")
        val = ok[(ok.split == "val") & (ok.group == "all")]
        if metric not in val.columns:
            raise ValueError(f"--select {rule!r}: no validation column {metric!r}; e.g. best:worst_group_acc, best:acc")
        val = val.dropna(subset=[metric])
        asc = lower_is_better(metric)
        val = val.sort_values(["trial_id", metric, "epoch"], ascending=[True, asc, True])
        chosen = val.groupby("trial_id")["epoch"].first()
    else:
        raise ValueError(f"--select {rule!r}: expected 'final' or 'best:<metric>'")
    out = ok.merge(chosen.rename("_sel").reset_index(), on="trial_id")
    out = out[out.epoch == out._sel].drop(columns="_sel")
    return out.assign(selection=rule)


def trial_table(rows: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """One row per trial: config columns plus each metric named `<split>_<column>` (group "all")
    or `<split>_<column>_g<k>` (subgroup k), taken from the selected rows."""
    config_cols = [c for c in ("trial_id", "arch", "family", "method", "dataset", "lr", "weight_decay", "bias_level",
                               "penalty", "seed", "width", "batch_size", "epochs", "trial_status", "selection", "epoch")
                   if c in rows.columns]
    base = rows[(rows.split == rows.split.iloc[0]) & (rows.group == "all")][config_cols].drop_duplicates("trial_id")
    out = base.set_index("trial_id")
    for m in metrics:
        split, col, group = parse_metric(m)
        sub = rows[(rows.split == split) & (rows.group == group)]
        if col not in sub.columns:
            continue
        out[m] = sub.set_index("trial_id")[col].astype(float)
    return out.reset_index()


def parse_metric(name: str) -> tuple[str, str, str]:
    """'test_worst_group_acc' -> (test, worst_group_acc, all); 'train_nc1_g1' -> (train, nc1, 1)."""
    split, _, rest = name.partition("_")
    if split not in ("train", "val", "test") or not rest:
        raise ValueError(f"metric {name!r}: expected <split>_<column>[_g<k>] with split train/val/test")
    col, group = rest, "all"
    head, _, tail = rest.rpartition("_g")
    if head and tail.isdigit():
        col, group = head, tail
    return split, col, group
