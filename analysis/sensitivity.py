"""Sensitivity tables: how much each swept axis moves each metric.

For one metric over the trial table (one row per trial at its selected epoch; by default only
completed trials that learned something — `analysis.filters`):
- standardized OLS effects (statsmodels; 95% Wald CIs from HC3 heteroskedasticity-robust standard
  errors): the metric and every numeric axis are z-scored (log10 first for positive axes that
  span a factor of 10 or more; the frame is built in `analysis.design`), so an effect is "SDs of
  metric per SD of axis";
  categorical axes are dummy-coded against a reference level (the first in sorted order), so an
  effect is "SDs of metric vs the reference level";
- optional pairwise interactions (`interactions=[("arch", "lr"), ...]`), labelled `arch×lr`;
- type-II ANOVA (classical F) with partial η² per axis;
- fANOVA importance per axis (Optuna's FanovaImportanceEvaluator) fitted on per-configuration
  means (seeds averaged), which sees non-linear effects (every fitted table with at least
  FANOVA_MIN_CONFIGS configurations);
- each main effect also as a contrast in the metric's own units (`contrasts`);
- p-values corrected across the table's terms: Holm (default), Benjamini–Hochberg, or none.
Axes that did not vary are reported as not varied; fewer trials than parameters gives a message,
and so does a per-architecture table with fewer than MIN_CELL_TRIALS trials in some configuration.
The tables of one subset are fitted together (`fit_tables`): the axes' part of the frame, the
configuration cells and the design matrix are built once per set of usable trials.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import vocab
from .design import Prepared, design, is_cat  # noqa: F401  (design: re-exported, callers import it from here)
from .filters import DEFAULT_STATUS, describe_exclusions, usable
from .load import ResultsWarning

CORRECTIONS = ("holm", "bh", "none")
MIN_CELL_TRIALS = 2    # a per-architecture table is fitted only when every configuration cell has this many trials
FANOVA_MIN_CONFIGS = 4  # fANOVA's forest needs this many distinct configurations
FANOVA_TREES = 16       # trees of its forest (32 moved importances by <= 0.01 on 2000 planted trials, 4 seeds; 1.8x the time)
ESTIMATOR = "OLS on z-scored metric and axes"
CI_METHOD = "95% Wald, HC3 robust SE"


@dataclass
class SensitivityTable:
    metric: str
    n: int
    r2: float | None
    effects: pd.DataFrame          # term, axis, effect, ci_low, ci_high, p, p_adj, then UNIT_COLUMNS
    anova: pd.DataFrame            # axis, df, F, p_anova, partial_eta2
    importance: pd.DataFrame       # axis, fanova
    not_varied: list[str]
    message: str = ""
    subset: str = "all"
    selection: str = "final"
    excluded: dict = field(default_factory=dict)     # reason -> trials left out
    meta: dict = field(default_factory=dict)         # estimator, ci, correction, reference, units, cells

    @property
    def excluded_stopped(self) -> int:
        return int(self.excluded.get("status stopped", 0))

    def long(self) -> pd.DataFrame:
        """One tidy frame: a row per (axis, term) with every statistic, for CSV/Parquet."""
        eff = self.effects.copy()
        if not eff.empty:
            eff = eff.merge(self.anova, on="axis", how="left").merge(self.importance, on="axis", how="left")
        rows = [eff] + [pd.DataFrame({"axis": self.not_varied, "term": "not varied"})]
        out = pd.concat(rows, ignore_index=True) if len(self.not_varied) else eff
        excluded = "; ".join(f"{n} {k}" for k, n in self.excluded.items())
        same = dict(metric=self.metric, subset=self.subset, n=self.n, r2=self.r2, selection=self.selection,
                    excluded=excluded, message=self.message, estimator=self.meta.get("estimator", ESTIMATOR),
                    ci_method=self.meta.get("ci", CI_METHOD), correction=self.meta.get("correction", "holm"),
                    unit=self.meta.get("unit", ""))
        out = pd.concat([out, pd.DataFrame(same, index=out.index)], axis=1)    # one block, not 11 inserts
        return out[[c for c in out if c not in UNIT_COLUMNS] + [c for c in UNIT_COLUMNS if c in out]]   # added last


def _term(a: str, frame: pd.DataFrame) -> str:
    return f"C({a})" if is_cat(frame[a]) else a


def formula(varying: list[str], frame: pd.DataFrame, interactions=()) -> str:
    terms = [_term(a, frame) for a in varying]
    terms += [f"{_term(a, frame)}:{_term(b, frame)}" for a, b in interactions if a in varying and b in varying]
    return "y ~ " + (" + ".join(terms) if terms else "1")


def axis_of(term: str) -> str:
    """Statsmodels term -> axis label: 'C(arch)[T.vgg11]' -> 'arch'; 'C(arch)[T.vgg11]:lr' -> 'arch×lr'."""
    parts = []
    for p in term.split(":"):
        parts.append(p[2:].split(")")[0] if p.startswith("C(") else p)
    return "×".join(parts)


def _levels(frame, a) -> int:
    return frame[a].nunique() - 1 if is_cat(frame[a]) else 1


def n_params(frame, varying, interactions=()) -> int:
    k = 1 + sum(_levels(frame, a) for a in varying)
    return k + sum(_levels(frame, a) * _levels(frame, b) for a, b in interactions if a in varying and b in varying)


def parse_interactions(text: str | None, valid: list[str]) -> list[tuple[str, str]]:
    """'arch:lr,lr:bias_level' -> pairs; 'all' -> every pair of valid axes; unknown axes are an error."""
    if not text or text == "none":
        return []
    if text == "all":
        return [(a, b) for i, a in enumerate(valid) for b in valid[i + 1:]]
    pairs = []
    for part in text.split(","):
        names = [x.strip() for x in part.replace("×", ":").replace("*", ":").split(":")]
        bad = [x for x in names if x not in valid]
        if len(names) != 2 or bad:
            raise ValueError(f"--interactions {part!r}: expected AXIS:AXIS with axes from this run's swept axes "
                             f"({', '.join(valid)}); unknown: {', '.join(bad) or part}")
        pairs.append((names[0], names[1]))
    return pairs


def fit_table(trials: pd.DataFrame, metric: str, axes=None, interactions=(), correction: str = "holm",
              include_status=DEFAULT_STATUS, keep_learned_nothing: bool = False, subset: str = "all",
              fanova: bool = True, include_stopped: bool = False, shared: list | None = None) -> SensitivityTable:
    """shared: a list that keeps each set of usable trials' `Prepared` for the next metric (`fit_tables`)."""
    if correction not in CORRECTIONS:
        raise ValueError(f"--correction {correction!r}: expected one of {', '.join(CORRECTIONS)}")
    if include_stopped:
        include_status = tuple(dict.fromkeys([*include_status, "stopped"]))
    selection = str(trials["selection"].iloc[0]) if "selection" in trials and len(trials) else "final"
    used, excluded = usable(trials, include_status, keep_learned_nothing, metric)
    prep = Prepared.shared(used, axes, shared)
    frame, varying, fixed = prep.frame(used[metric]), prep.varying, prep.fixed
    empty_e = pd.DataFrame(columns=["axis", "term", "effect", "ci_low", "ci_high", "p", "p_adj"])
    empty_a = pd.DataFrame(columns=["axis", "df", "F", "p_anova", "partial_eta2"])
    empty_i = pd.DataFrame(columns=["axis", "fanova"])
    meta = {"estimator": ESTIMATOR, "ci": CI_METHOD, "correction": correction,
            "unit": vocab.metric_meta(metric)["unit"], "reference": frame.attrs.get("reference", {}),
            "scale": frame.attrs.get("scale", {}), "metric_sd": frame.attrs.get("y_sd"),
            "cells": prep.cells, "interactions": [f"{a}×{b}" for a, b in interactions],
            "statuses": list(include_status)}
    table = SensitivityTable(metric, len(frame), None, empty_e, empty_a, empty_i, fixed, subset=subset,
                             selection=selection, excluded=excluded, meta=meta)
    interactions = [(a, b) for a, b in interactions if a in varying and b in varying]
    k = n_params(frame, varying, interactions)
    if len(frame) == 0:
        table.message = "no usable trials" + (f" (left out: {describe_exclusions(excluded)})" if excluded else "")
    elif not varying:
        table.message = f"no axis varied among the {len(frame)} usable trial(s): nothing to fit"
    elif len(frame) <= k:
        table.message = f"{len(frame)} trials for {k} parameters: too few to fit (need more than {k})"
    elif frame["y"].std() == 0:
        table.message = f"{metric} is constant across trials: nothing to explain"
    elif subset != "all" and meta["cells"].get("per_config", (MIN_CELL_TRIALS,))[0] < MIN_CELL_TRIALS:
        table.message = (f"a configuration with {meta['cells']['per_config'][0]} trial(s): a per-architecture fit needs "
                         f"at least {MIN_CELL_TRIALS} (seeds) in every configuration")
    if table.message:
        return table
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if interactions:          # patsy: imported only here (~0.6 CPU-s)
            import statsmodels.formula.api as smf
            from statsmodels.stats.anova import anova_lm

            ols = smf.ols(formula(varying, frame, interactions), data=frame).fit()
            aov = anova_lm(ols, typ=2)
        else:                     # the same model and numbers without patsy (~2× faster per table)
            if prep.matrix is None or not prep.matrix.index.equals(frame.index):
                prep.matrix = main_effects_matrix(frame, varying)
            ols, aov = fit_main_effects(frame, varying, prep.matrix)
        robust = ols.get_robustcov_results(cov_type="HC3")
    ci = np.asarray(robust.conf_int())
    eff = pd.DataFrame({"term": ols.model.exog_names, "effect": np.asarray(robust.params), "ci_low": ci[:, 0],
                        "ci_high": ci[:, 1], "p": np.asarray(robust.pvalues)})
    eff = eff[eff.term != "Intercept"].copy()
    eff["axis"] = eff.term.map(axis_of)
    eff["p_adj"] = adjust(eff.p.fillna(1.0).to_numpy(), correction)
    eff = pd.concat([eff, contrasts(ols, frame, eff, interactions)], axis=1)
    resid = aov.loc["Residual", "sum_sq"]
    aov = aov.drop(index="Residual")
    anova = pd.DataFrame({"axis": [axis_of(t) for t in aov.index], "df": aov["df"].values, "F": aov["F"].values,
                          "p_anova": aov["PR(>F)"].values,
                          "partial_eta2": (aov["sum_sq"] / (aov["sum_sq"] + resid)).values})
    table.effects, table.anova, table.r2 = eff.reset_index(drop=True), anova, float(ols.rsquared)
    n_configs = meta["cells"].get("per_config", (0, 0, 0))[2]
    if fanova and n_configs >= FANOVA_MIN_CONFIGS:
        table.importance = fanova_importance(frame, varying)
    return table


def main_effects_matrix(frame: pd.DataFrame, varying: list[str]) -> pd.DataFrame:
    """The design matrix patsy builds for `formula(varying, frame)` without interactions, with its
    column names: Intercept, `C(a)[T.level]` dummies of each categorical axis' levels after the
    first in sorted order (treatment coding), and each numeric axis as it is."""
    cols = {"Intercept": np.ones(len(frame))}
    for a in varying:
        if is_cat(frame[a]):
            for level in sorted(frame[a].unique())[1:]:
                cols[f"C({a})[T.{level}]"] = (frame[a] == level).to_numpy(float)
        else:
            cols[a] = frame[a].to_numpy(float)
    return pd.DataFrame(cols, index=frame.index)


def fit_main_effects(frame: pd.DataFrame, varying: list[str], x: pd.DataFrame | None = None):
    """(OLS results, type-II ANOVA frame as `anova_lm(typ=2)` gives it) for the main-effects model.
    Type II without interactions: an axis' sum of squares is the rise in the residual sum of
    squares when its columns are dropped from the full model; F = (SS/df) / (RSS/df_resid).
    x: `main_effects_matrix(frame, varying)`, when the caller has it already."""
    from scipy import stats
    from statsmodels.regression.linear_model import OLS   # not statsmodels.api: 0.4 CPU-s less to import

    x = main_effects_matrix(frame, varying) if x is None else x
    y = frame["y"].to_numpy(float)
    ols = OLS(y, x).fit()
    rss, df_resid = float(ols.ssr), float(ols.df_resid)
    rows = {}
    for a in varying:
        keep = [c for c in x.columns if c == "Intercept" or axis_of(c) != a]
        xr = x[keep].to_numpy(float)
        ss = float(((y - xr @ np.linalg.lstsq(xr, y, rcond=None)[0]) ** 2).sum()) - rss
        df = len(x.columns) - len(keep)
        f = (ss / df) / (rss / df_resid) if rss > 0 else np.inf
        rows[_term(a, frame)] = (ss, float(df), f, float(stats.f.sf(f, df, df_resid)))
    rows["Residual"] = (rss, df_resid, np.nan, np.nan)
    return ols, pd.DataFrame.from_dict(rows, orient="index", columns=["sum_sq", "df", "F", "PR(>F)"])


UNIT_COLUMNS = ["label", "from_level", "to_level", "from_value", "to_value", "diff", "diff_ci_low", "diff_ci_high"]


def _level(v) -> str:
    return f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)


def readable(term: str, frame: pd.DataFrame) -> str:
    """A term as a reader names it: 'arch vgg11 vs resnet18', 'bias_level 0 → 0.9', 'lr 0.001 → 0.1
    (log scale)', 'arch=vgg11 × lr' (an interaction)."""
    refs, span, scale = frame.attrs.get("reference", {}), frame.attrs.get("span", {}), frame.attrs.get("scale", {})
    parts = []
    for p in term.split(":"):
        a = axis_of(p)
        m = re.search(r"\[T\.(.+)\]$", p)
        if m and ":" in term:
            parts.append(f"{a}={m.group(1)}")
        elif m:
            parts.append(f"{a} {m.group(1)} vs {refs.get(a, '?')}")
        elif ":" in term or a not in span:
            parts.append(a)
        else:
            parts.append(f"{a} {_level(span[a][0])} → {_level(span[a][1])}"
                         + (" (log scale)" if scale.get(a, "").startswith("log") else ""))
    return " × ".join(parts)


def contrasts(ols, frame: pd.DataFrame, eff: pd.DataFrame, interactions=()) -> pd.DataFrame:
    """Each main-effect term as a contrast in the metric's own units: `from_value` → `to_value`,
    the model's mean prediction over the trials with the axis set to `from_level` and to
    `to_level` (the reference and the term's level; a numeric axis' lowest and highest value),
    `diff` = to − from, and its 95% CI (the term's CI × the metric's SD × the axis' z-span; left
    empty when the axis is in an interaction). Interaction terms get only a `label`."""
    sd, mean = frame.attrs["y_sd"], frame.attrs["y_mean"]
    refs, span = frame.attrs.get("reference", {}), frame.attrs.get("span", {})
    in_pairs = {x for pair in interactions for x in pair}
    rows = []
    for r in eff.itertuples():
        out = dict.fromkeys(UNIT_COLUMNS, np.nan)
        out["label"] = readable(r.term, frame)
        a = r.axis
        if "×" not in a and (a in refs or a in span):
            if a in refs:
                level = re.search(r"\[T\.(.+)\]$", r.term).group(1)
                points = levels = (refs[a], level)
                width = 1.0
            else:
                raw_lo, raw_hi, z_lo, z_hi = span[a]
                points, levels, width = (z_lo, z_hi), (_level(raw_lo), _level(raw_hi)), z_hi - z_lo
            pred = _mean_predictions(ols, frame, a, points, a in in_pairs)
            tiny = 1e-9 * (abs(mean) + sd)            # rounding noise of an exact 0 (e.g. a gap at bias 0)
            start, end = (0.0 if abs(v) < tiny else v for v in (mean + sd * pred[0], mean + sd * pred[1]))
            out.update(from_level=str(levels[0]), to_level=str(levels[1]), from_value=start, to_value=end,
                       diff=sd * (pred[1] - pred[0]))
            if a not in in_pairs:
                out.update(diff_ci_low=sd * width * r.ci_low, diff_ci_high=sd * width * r.ci_high)
        rows.append(out)
    return pd.DataFrame(rows, columns=UNIT_COLUMNS, index=eff.index)


def _mean_predictions(ols, frame: pd.DataFrame, axis: str, points, interacts: bool) -> list[float]:
    """The model's mean prediction over the trials with `axis` set to each of `points` (a z-value,
    or a level of a categorical axis). Without an interaction the model is linear in the axis'
    own columns, so this is the design matrix's column means with those columns replaced (no
    patsy rebuild: ~100× cheaper); with one, the frame is re-predicted."""
    if interacts:
        return [float(np.mean(ols.predict(frame.assign(**{axis: z})))) for z in points]
    names = ols.model.exog_names
    beta = np.asarray(ols.params, float)
    base = np.asarray(ols.model.exog, float).mean(axis=0)
    cat = f"C({axis})[T."
    out = []
    for z in points:
        row = base.copy()
        for j, name in enumerate(names):
            if name == axis:
                row[j] = float(z)
            elif name.startswith(cat):
                row[j] = float(name == f"{cat}{z}]")
        out.append(float(row @ beta))
    return out


def adjust(p: np.ndarray, correction: str) -> np.ndarray:
    """Adjusted p-values: Holm step-down (FWER), Benjamini–Hochberg (FDR), or none."""
    p = np.asarray(p, float)
    if correction == "none" or len(p) == 0:
        return p
    if correction == "bh":
        from scipy.stats import false_discovery_control

        return false_discovery_control(p, method="bh")
    order = np.argsort(p)
    m = len(p)
    stepped = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = stepped
    return out


def fanova_importance(frame: pd.DataFrame, varying: list[str], seed: int = 0, max_configs: int = 200,
                      n_trees: int = FANOVA_TREES) -> pd.DataFrame:
    """fANOVA importance of each axis (`analysis.fanova`: Optuna's FanovaImportanceEvaluator's
    numbers, ~5x faster) on per-configuration means of the standardized metric (seeds averaged
    first). Beyond `max_configs` configurations a seeded random subsample of that size is used,
    drawn from the configurations in sorted order (the same subsample whatever the rows' order).
    Depth 5 (not Optuna's default 64): on the few hundred points of a sweep the importances match
    deeper forests to ±0.03 at a fifth of the cost."""
    from .fanova import importances

    agg = frame.groupby(varying, sort=True, dropna=False)["y"].mean().reset_index()
    if len(agg) > max_configs:
        agg = agg.sample(max_configs, random_state=seed)
    space = {a: ("cat", sorted(frame[a].unique())) if is_cat(frame[a])
             else ("float", float(frame[a].min()), float(frame[a].max())) for a in varying}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imp = importances(list(agg[varying].itertuples(index=False, name=None)), agg["y"].to_numpy(float),
                              space, n_trees=n_trees, max_depth=5, seed=seed)
    except (RuntimeError, ValueError, ZeroDivisionError) as e:  # e.g. too few distinct configurations for the forest
        warnings.warn(f"fANOVA skipped: {e}", ResultsWarning, stacklevel=2)
        return pd.DataFrame(columns=["axis", "fanova"])
    return pd.DataFrame({"axis": list(imp), "fanova": list(imp.values())})


def table_jobs(trials: pd.DataFrame, metrics: list[str], per_arch: bool = True) -> list[tuple[str, str]]:
    """(metric, subset) of every table: each metric over all trials, and within each architecture."""
    jobs = [(m, "all") for m in metrics if m in trials]
    if per_arch and "arch" in trials and trials["arch"].nunique() > 1:
        jobs += [(m, f"arch={a}") for a in sorted(trials["arch"].dropna().unique()) for m in metrics if m in trials]
    return jobs


def table_batches(trials: pd.DataFrame, metrics: list[str], per_arch: bool = True) -> list[tuple[list[str], str]]:
    """`table_jobs` grouped by subset, in the same order: ([metric, ...], subset) per subset."""
    batches: dict[str, list[str]] = {}
    for m, s in table_jobs(trials, metrics, per_arch):
        batches.setdefault(s, []).append(m)
    return [(ms, s) for s, ms in batches.items()]


def subset_rows(trials: pd.DataFrame, subset: str) -> pd.DataFrame:
    """The trials of a subset: all, or `arch=<name>`."""
    return trials if subset == "all" else trials[trials["arch"].astype(str) == subset.split("=", 1)[1]]


def run_job(trials: pd.DataFrame, metric: str, subset: str, **kw) -> SensitivityTable:
    return fit_table(subset_rows(trials, subset), metric, subset=subset, **kw)


def fit_tables(trials: pd.DataFrame, metrics: list[str], subset: str, **kw) -> list[SensitivityTable]:
    """`run_job` for each metric of one subset: the axes' encoding, configuration cells and design
    matrix are built once per distinct set of usable trials and shared by the metrics."""
    rows, shared = subset_rows(trials, subset), []
    return [fit_table(rows, m, subset=subset, shared=shared, **kw) for m in metrics]


def sensitivity_tables(trials: pd.DataFrame, metrics: list[str], per_arch: bool = True, workers: int = 1,
                       **kw) -> list[SensitivityTable]:
    """Every table of `table_jobs`, in that order; with workers > 1 in that many forked processes."""
    from .parallel import run_all

    out = run_all([(fit_tables, (trials, ms, s), kw) for ms, s in table_batches(trials, metrics, per_arch)], workers)
    return [t for batch in out for t in batch]
