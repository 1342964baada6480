"""Which epoch counts for each trial, and the trial table (one row per trial) built from it.

Epoch rules: `final` (a trial's last epoch with status "ok"), or `best:<metric>` — the epoch whose
validation "all" row is best on that metric (e.g. `best:worst_group_acc`, the DFR-style model
selection); the catalogue says whether higher or lower is better. Ties go to the earliest epoch.

Metric names in tables are `<split>_<column>` (group "all") or `<split>_<column>_g<k>` (subgroup k).

`trial_table_from(source, records, ...)` does the selection and the pivot in duckdb over the rows
table of `analysis.load.Source` (one pass, only the needed columns); `select_epochs` and
`trial_table` do the same on an in-memory DataFrame (the study sections use them). The rule is
written once, as SQL (`chosen_epochs_sql`): `select_epochs` runs it with duckdb on the frame.
"""
from __future__ import annotations

import difflib

import duckdb
import numpy as np
import pandas as pd

from . import vocab
from .load import ident
from .vocab import parse_metric   # the catalogue's parser: <split>_<metric>[_g<k>] -> (split, metric, group)

SPLITS = vocab.SPLITS


def metric_columns(columns, numeric: set[str] | None = None) -> list[str]:
    """Row columns the catalogue declares as metrics."""
    return [c for c in columns if vocab.is_metric(c) and (numeric is None or c in numeric)]


def check_metrics(names: list[str], columns, numeric: set[str] | None = None) -> None:
    """Raise ValueError naming each unknown metric and listing the valid ones."""
    valid = metric_columns(columns, numeric)
    bad = []
    for n in names:
        try:
            _, col, _ = parse_metric(n)
        except ValueError:
            col = None
        if col not in valid:
            close = difflib.get_close_matches(n, [f"{s}_{c}" for s in SPLITS for c in valid], n=1)
            bad.append(f"{n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    if bad:
        raise ValueError(f"--metrics: unknown metric {', '.join(bad)}; valid: <split>_<column>[_g<k>] with split "
                         f"train/val/test and column one of {', '.join(sorted(valid))}")


def _direction_sql(metric: str) -> str:
    return "desc" if vocab.metric_meta(metric)["higher_is_better"] else "asc"


def chosen_epochs_sql(rule: str, columns: list[str]) -> str:
    """SQL (no parameters) giving (trial_id, sel) from the `rows` table."""
    ok = "coalesce(status, 'ok') = 'ok'" if "status" in columns else "true"    # no status: an ok row
    if rule == "final":
        return f"select trial_id, max(epoch) as sel from rows where {ok} group by trial_id"
    if rule.startswith("best:"):
        metric = rule.split(":", 1)[1].removeprefix("val_")
        if metric not in columns:
            raise ValueError(f"--select {rule!r}: no validation column {metric!r}; e.g. best:worst_group_acc, best:acc")
        m = ident(metric)
        return (f"""select trial_id, epoch as sel from rows
                    where {ok} and split = 'val' and "group" = 'all' and {m} is not null and isfinite({m})
                    qualify row_number() over (partition by trial_id order by {m} {_direction_sql(metric)}, epoch) = 1""")
    raise ValueError(f"--select {rule!r}: expected 'final' or 'best:<metric>'")


def trial_table_from(src, records: pd.DataFrame, rule: str, metrics: list[str], config: list[str],
                     majority: str | None = None) -> pd.DataFrame:
    """One row per trial seen in the rows or the records: config columns, `status` (one of the
    five), `epoch` (the selected one; NaN when no epoch finished), `epochs_run`, and each metric."""
    cols = src.columns
    chosen = chosen_epochs_sql(rule, cols)
    wanted = [parse_metric(m, cols) for m in metrics] + [("val", "acc", "all")] + ([("val", majority, "all")] if majority else [])
    wanted = [w for w in dict.fromkeys(wanted) if w[1] in cols]
    pairs = sorted({f"{s}/{g}" for s, _, g in wanted})
    values = sorted({c for _, c, _ in wanted})
    sel = src.query(
        f"""select trial_id, split, "group", {', '.join(ident(c) for c in values) or 'null as _none'}
            from ({src.at_chosen(chosen, values)}) where list_contains(?, split || '/' || "group")""", [pairs])
    cfg_cols = [c for c in config if c in cols]
    div = ", bool_or(status = 'diverged') as _diverged" if "status" in cols else ", false as _diverged"
    base = src.query(
        f"""select r.trial_id, c.sel as epoch, max(r.epoch) + 1 as epochs_run{div}
            {''.join(f', any_value({ident(k)}) as {ident(k)}' for k in cfg_cols)}
            from rows r left join ({chosen}) c on r.trial_id = c.trial_id group by r.trial_id, c.sel""")
    out = _with_records(base, records).set_index("trial_id")
    for s, c, g in wanted:
        sub = sel[(sel.split == s) & (sel.group == g)].set_index("trial_id")[c]
        name = f"{s}_{c}" + ("" if g == "all" else f"_g{g}")
        out[name] = pd.to_numeric(sub, errors="coerce").astype(float).reindex(out.index)
    out = out.reset_index()
    acc = out["val_acc"] if "val_acc" in out else pd.Series(np.nan, index=out.index)
    maj = out[f"val_{majority}"] if majority and f"val_{majority}" in out else pd.Series(np.nan, index=out.index)
    out["learned_nothing"] = [vocab.learned_nothing(float(a), float(m)) for a, m in zip(acc, maj)]
    out = out.assign(selection=rule)
    return out[[c for c in out if c != "run_dir"] + ["run_dir"]]      # a column added later: last


def _with_records(base: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """Add each trial's status (its record's, or from its rows when it has none); trials with a
    record but no rows (failed before their first epoch) get a row too, config from the record."""
    rec = records.set_index("trial_id") if len(records) else pd.DataFrame(columns=["status", "error", "config"])
    base = base.copy()
    st = base.trial_id.map(rec["status"]) if len(rec) else pd.Series(np.nan, index=base.index)
    from_rows = np.where(base["_diverged"].fillna(False).astype(bool), "diverged", "completed")
    base["status"] = st.fillna(pd.Series(from_rows, index=base.index))
    base.loc[base["_diverged"].fillna(False).astype(bool) & base.status.eq("completed"), "status"] = "diverged"
    base["trial_status"] = base.trial_id.map(rec["trial_status"]) if "trial_status" in rec else base["status"]
    base["run_dir"] = base.trial_id.map(rec["run_dir"]) if "run_dir" in rec else np.nan   # its newest record's
    have = set(base.trial_id)
    missing = [t for t in rec.index if t not in have]
    if missing:
        extra = pd.DataFrame([{"trial_id": t, "status": rec.loc[t, "status"], "trial_status": rec.loc[t, "trial_status"],
                               "run_dir": rec.loc[t, "run_dir"],
                               "epochs_run": 0, **{k: v for k, v in (rec.loc[t, "config"] or {}).items()
                                                   if k in base.columns and k != "trial_id"}} for t in missing])
        base = pd.concat([base, extra], ignore_index=True)
    return base.drop(columns="_diverged")


# ---------------------------------------------------------------- the same on a DataFrame (studies)
def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows with status ok (a row without a status counts as ok)."""
    return df[df["status"].fillna("ok").eq("ok")] if "status" in df else df


def select_epochs(df: pd.DataFrame, rule: str = "final") -> pd.DataFrame:
    """Each trial's ok rows at its selected epoch (`chosen_epochs_sql`, run by duckdb on the frame;
    row order and index kept), with a `selection` column recording the rule."""
    metric = rule.split(":", 1)[1].removeprefix("val_") if rule.startswith("best:") else None
    frame = df[[c for c in ("trial_id", "epoch", "split", "group", "status") if c in df]]
    if metric in df:
        frame = frame.assign(**{metric: pd.to_numeric(df[metric], errors="coerce").astype(float)})
    con = duckdb.connect()
    try:
        con.register("rows", frame)
        chosen = con.execute(chosen_epochs_sql(rule, list(frame.columns))).df()
    finally:
        con.close()
    ok = ok_rows(df)
    return ok[ok.epoch == ok.trial_id.map(chosen.set_index("trial_id")["sel"])].assign(selection=rule)


def trial_table(rows: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """One row per trial: config columns plus each metric named `<split>_<column>` (group "all")
    or `<split>_<column>_g<k>` (subgroup k), taken from the selected rows."""
    config_cols = ["trial_id"] + [c for c in rows.columns if vocab.is_axis(c) or c == vocab.REPLICATE] + \
        [c for c in ("trial_status", "selection", "epoch") if c in rows.columns]
    base = rows[rows.group == "all"][config_cols].drop_duplicates("trial_id")
    out = base.set_index("trial_id")
    for m in metrics:
        split, col, group = parse_metric(m, rows.columns)
        sub = rows[(rows.split == split) & (rows.group == group)]
        if col not in sub.columns:
            continue
        out[m] = sub.set_index("trial_id")[col].astype(float)
    return out.reset_index()
