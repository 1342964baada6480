"""Per-epoch curves for the report: each curve metric split by the axis with the largest effect on
it, with 95% t-intervals over seeds.

    curves()                                         # ((column, split, by_group), ...): what is drawn
    per_trial = trial_curves(src)                    # (column, split, by_group, trial_id, group, epoch, value)
    agg = split_curves(per_trial, used, tables)      # (column, split, by_group, axis, level, group, epoch,
                                                     #  mean, ci_low, ci_high, seeds)

The curves are the catalogue's `Metric.curve` metrics, in its order, each on its primary split
(`vocab.primary_split`), per subgroup when the metric has subgroup rows.

A curve's axis is the one with the largest partial η² in the all-trials table of `<split>_<column>`
(ties: table order); an axis with more than MAX_LEVELS values is passed over for the next. At each
epoch, the trials of one level are averaged per seed (over the level's configurations), and the
seeds' means give the mean and its t-interval — seeds are the replicates, configurations are not.
"""
from __future__ import annotations

import pandas as pd

from . import vocab
from .compare import t_interval
from .load import ident

MAX_LEVELS = 8
COLUMNS = ["column", "split", "by_group", "axis", "level", "group", "epoch", "mean", "ci_low", "ci_high", "seeds"]


def curves() -> tuple[tuple[str, str, bool], ...]:
    """(column, split, by_group) of each per-epoch curve, in drawing order."""
    return tuple((n, vocab.primary_split(n), vocab.has_group_rows(n)) for n in vocab.curve_metrics())


def trial_curves(src) -> pd.DataFrame:
    """Each curve column's value per (trial, group, epoch) from the scanned rows (status ok only)."""
    out = []
    for col, split, by_group in curves():
        if col not in src.columns:
            continue
        grp = "\"group\" <> 'all'" if by_group else "\"group\" = 'all'"
        ok = " and status = 'ok'" if "status" in src.columns else ""
        df = src.query(f"""select trial_id, "group", epoch, avg({ident(col)}) as value from rows
                           where split = ? and {grp}{ok} and isfinite({ident(col)})
                           group by trial_id, "group", epoch""", [split])
        out.append(df.assign(column=col, split=split, by_group=by_group))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def split_axis(tables, metric: str, trials: pd.DataFrame) -> str | None:
    """The axis with the largest partial η² in `metric`'s all-trials table (≤ MAX_LEVELS values)."""
    t = next((t for t in tables if t.metric == metric and t.subset == "all" and not t.anova.empty), None)
    if t is None:
        return "arch" if "arch" in trials and 1 < trials["arch"].nunique() <= MAX_LEVELS else None
    ranked = t.anova[~t.anova.axis.str.contains("×")].sort_values("partial_eta2", ascending=False, kind="stable")
    return next((a for a in ranked.axis if a in trials and trials[a].nunique() <= MAX_LEVELS), None)


def split_curves(per_trial: pd.DataFrame, trials: pd.DataFrame, tables) -> pd.DataFrame:
    """Aggregate `trial_curves` over the used trials, split by each curve's `split_axis`."""
    if per_trial is None or per_trial.empty or trials.empty:
        return pd.DataFrame(columns=COLUMNS)
    seed = vocab.REPLICATE if vocab.REPLICATE in trials else None
    out = []
    for (col, split, by_group), g in per_trial.groupby(["column", "split", "by_group"], sort=False):
        axis = split_axis(tables, f"{split}_{col}", trials)
        keep = ["trial_id"] + ([axis] if axis else []) + ([seed] if seed else [])
        d = g.merge(trials[keep], on="trial_id")
        d["level"] = d[axis].astype(str) if axis else "all"
        d["_seed"] = d[seed] if seed else d["trial_id"]
        per_seed = d.groupby(["level", "group", "epoch", "_seed"], sort=True)["value"].mean().reset_index()
        agg = per_seed.groupby(["level", "group", "epoch"], sort=True)["value"].agg(["mean", "std", "size"])
        lo, hi = t_interval(agg["mean"], agg["std"], agg["size"])
        out.append(agg.reset_index().assign(column=col, split=split, by_group=by_group, axis=axis or "",
                                            ci_low=lo, ci_high=hi, seeds=agg["size"].to_numpy(),
                                            epoch=lambda x: x["epoch"].astype(int)))
    return pd.concat(out, ignore_index=True)[COLUMNS] if out else pd.DataFrame(columns=COLUMNS)

