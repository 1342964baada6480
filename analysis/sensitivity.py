"""Sensitivity tables: how much each sweep axis moves each metric.

For one metric over the trial table (one row per trial at its selected epoch):
- standardized OLS effects (statsmodels, HC3 robust 95% CIs): the metric and every numeric axis
  are z-scored (lr, weight_decay — and penalty when it spans ≥ 2 decades — on log10 first), so
  an effect is "SDs of metric per SD of axis"; categorical axes (arch, method) are dummy-coded
  against their first level, so an effect is "SDs of metric vs the reference level";
- type-II ANOVA with partial η² per axis;
- fANOVA importance per axis (Optuna's FanovaImportanceEvaluator), which sees non-linear effects;
- n trials, R², and p-values corrected across the table (Holm by default, or Benjamini–Hochberg).
Axes that did not vary are reported as not varied; trials a scheduler stopped early are left
out unless asked for; fewer trials than parameters gives a message, not a fit.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

AXES = ("arch", "method", "lr", "weight_decay", "bias_level", "penalty", "batch_size", "width")
CATEGORICAL = ("arch", "method", "family", "dataset")
LOG_AXES = ("lr", "weight_decay")


@dataclass
class SensitivityTable:
    metric: str
    n: int
    r2: float | None
    effects: pd.DataFrame          # term, axis, effect, ci_low, ci_high, p, p_adj
    anova: pd.DataFrame            # axis, df, F, p, partial_eta2
    importance: pd.DataFrame       # axis, fanova
    not_varied: list[str]
    message: str = ""
    subset: str = "all"
    selection: str = "final"
    excluded_stopped: int = 0
    meta: dict = field(default_factory=dict)

    def long(self) -> pd.DataFrame:
        """One tidy frame: a row per (axis, term) with every statistic, for CSV/Parquet."""
        eff = self.effects.copy()
        if not eff.empty:
            eff = eff.merge(self.anova, on="axis", how="left").merge(self.importance, on="axis", how="left")
        rows = [eff] + [pd.DataFrame({"axis": self.not_varied, "term": "not varied"})]
        out = pd.concat(rows, ignore_index=True) if len(self.not_varied) else eff
        return out.assign(metric=self.metric, subset=self.subset, n=self.n, r2=self.r2, selection=self.selection,
                          excluded_stopped=self.excluded_stopped, message=self.message)


def _is_cat(s: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(s)


def _axis_values(trials: pd.DataFrame, axis: str) -> pd.Series:
    v = trials[axis]
    if axis in CATEGORICAL or not pd.api.types.is_numeric_dtype(v):
        return v.astype(str).astype(object)
    v = v.astype(float)
    positive = (v > 0).all()
    if axis in LOG_AXES and positive or (axis == "penalty" and positive and v.max() / v.min() >= 100):
        return np.log10(v)
    return v


def design(trials: pd.DataFrame, metric: str, axes=AXES) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The standardized modelling frame: columns y + one per varying axis; returns (frame,
    varying axes, not-varied axes)."""
    trials = trials[trials[metric].notna()]      # axes vary (or not) among the trials that have the metric
    df = pd.DataFrame({"y": trials[metric].astype(float)})
    varying, fixed = [], []
    for a in axes:
        if a not in trials.columns:
            continue
        v = _axis_values(trials, a)
        if v.nunique(dropna=True) < 2:
            fixed.append(a)
            continue
        varying.append(a)
        df[a] = v if _is_cat(v) else (v - v.mean()) / v.std(ddof=0)
    df = df.dropna()
    sd = df["y"].std(ddof=0)
    df["y"] = (df["y"] - df["y"].mean()) / sd if sd > 0 else df["y"] * 0.0
    return df, varying, fixed


def formula(varying: list[str], frame: pd.DataFrame, interactions: bool = False) -> str:
    terms = [f"C({a})" if _is_cat(frame[a]) else a for a in varying]
    if interactions and "arch" in varying:
        terms += [f"C(arch):{a}" for a in varying if a != "arch" and not _is_cat(frame[a])]
    return "y ~ " + (" + ".join(terms) if terms else "1")


def fit_table(trials: pd.DataFrame, metric: str, axes=AXES, interactions: bool = False, correction: str = "holm",
              include_stopped: bool = False, subset: str = "all", fanova: bool = True) -> SensitivityTable:
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm
    from statsmodels.stats.multitest import multipletests

    selection = str(trials["selection"].iloc[0]) if "selection" in trials and len(trials) else "final"
    stopped = trials["trial_status"].eq("stopped") if "trial_status" in trials else pd.Series(False, index=trials.index)
    used = trials if include_stopped else trials[~stopped]
    frame, varying, fixed = design(used, metric, axes)
    empty_e = pd.DataFrame(columns=["axis", "term", "effect", "ci_low", "ci_high", "p", "p_adj"])
    empty_a = pd.DataFrame(columns=["axis", "df", "F", "p_anova", "partial_eta2"])
    empty_i = pd.DataFrame(columns=["axis", "fanova"])
    table = SensitivityTable(metric, len(frame), None, empty_e, empty_a, empty_i, fixed, subset=subset,
                             selection=selection, excluded_stopped=int(stopped.sum()) if not include_stopped else 0)
    f = formula(varying, frame, interactions)
    n_params = _n_params(frame, varying, interactions)
    if not varying:
        table.message = "no axis varied: nothing to fit"
        return table
    if len(frame) <= n_params:
        table.message = f"{len(frame)} trials for {n_params} parameters: too few to fit (need more than {n_params})"
        return table
    if frame["y"].std() == 0:
        table.message = f"{metric} is constant across trials: nothing to explain"
        if "nc2" in metric:
            table.message += " (with 2 classes NC2 is identically 0 by construction; SCIENCE.md §A.3)"
        return table
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ols = smf.ols(f, data=frame).fit()
        robust = ols.get_robustcov_results(cov_type="HC3")
        aov = anova_lm(ols, typ=2)
    names = ols.model.exog_names
    ci = np.asarray(robust.conf_int())
    eff = pd.DataFrame({"term": names, "effect": np.asarray(robust.params), "ci_low": ci[:, 0],
                        "ci_high": ci[:, 1], "p": np.asarray(robust.pvalues)})
    eff = eff[eff.term != "Intercept"].copy()
    eff["axis"] = eff.term.map(_axis_of)
    eff["p_adj"] = multipletests(eff.p.fillna(1.0), method={"holm": "holm", "bh": "fdr_bh"}[correction])[1] if len(eff) else []
    resid = aov.loc["Residual", "sum_sq"]
    aov = aov.drop(index="Residual")
    anova = pd.DataFrame({"axis": [_axis_of(t) for t in aov.index], "df": aov["df"].values, "F": aov["F"].values,
                          "p_anova": aov["PR(>F)"].values,
                          "partial_eta2": (aov["sum_sq"] / (aov["sum_sq"] + resid)).values})
    table.effects, table.anova, table.r2 = eff.reset_index(drop=True), anova, float(ols.rsquared)
    if fanova:
        table.importance = fanova_importance(frame, varying)
    return table


def _axis_of(term: str) -> str:
    t = term.split(":")[0] if ":" in term and not term.startswith("C(arch):") else term
    if t.startswith("C(arch):"):
        return "arch×" + term.split(":")[1]
    return t[2:].split(")")[0] if t.startswith("C(") else t


def _n_params(frame, varying, interactions) -> int:
    k = 1
    for a in varying:
        k += frame[a].nunique() - 1 if _is_cat(frame[a]) else 1
    if interactions and "arch" in varying:
        k += (frame["arch"].nunique() - 1) * sum(not _is_cat(frame[a]) for a in varying if a != "arch")
    return k


def fanova_importance(frame: pd.DataFrame, varying: list[str], seed: int = 0, max_trials: int = 500) -> pd.DataFrame:
    """fANOVA importance of each axis (Optuna's FanovaImportanceEvaluator on the trial table).

    Its marginalisation grows quickly with the number of distinct values, so tables of more than
    `max_trials` trials are fitted on a seeded random subsample of that size (32 trees, depth 8)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    dists = {a: CategoricalDistribution(sorted(frame[a].unique())) if _is_cat(frame[a])
             else FloatDistribution(float(frame[a].min()), float(frame[a].max())) for a in varying}
    study = optuna.create_study()
    if len(frame) > max_trials:
        frame = frame.sample(max_trials, random_state=seed)
    for _, row in frame.iterrows():
        params = {a: (row[a] if _is_cat(frame[a]) else float(row[a])) for a in varying}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(row["y"])))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imp = get_param_importances(study, evaluator=FanovaImportanceEvaluator(n_trees=32, max_depth=8, seed=seed), normalize=True)
    except (RuntimeError, ValueError) as e:  # e.g. too few distinct trials for the forest
        warnings.warn(f"fANOVA skipped: {e}", RuntimeWarning, stacklevel=2)
        return pd.DataFrame(columns=["axis", "fanova"])
    return pd.DataFrame({"axis": list(imp), "fanova": list(imp.values())})


def sensitivity_tables(trials: pd.DataFrame, metrics: list[str], per_arch: bool = True, **kw) -> list[SensitivityTable]:
    """The table of every metric over all trials, and (per_arch) within each architecture."""
    out = [fit_table(trials, m, **kw) for m in metrics if m in trials]
    if per_arch and "arch" in trials and trials["arch"].nunique() > 1:
        for arch, sub in trials.groupby("arch"):
            out += [fit_table(sub, m, subset=f"arch={arch}", **kw) for m in metrics if m in sub]
    return out
