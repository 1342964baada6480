"""Collapse studies: NC-fairness (Mouheb et al.), fine-structure (Yang et al.), GC-transfer (Munn et al.).

Each study reads the raw rows (`result["rows"]`), takes every trial at its final epoch (these are
claims about the terminal phase of training, so no model selection), and returns findings whose
expected sign is fixed here from the paper, with controls, notes on the preconditions (train
accuracy ≥ 99%: the terminal phase) and figures. Verdict words come from `common.verdict`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from nccore.catalogue import config_columns

from ..compare import mean_ci
from . import figures
from .common import _mean, _partial, figure, finding, note, slope_ci
from .registry import study

TERMINAL_ACC = 0.99     # train accuracy on the training labels that marks the terminal phase
CONFIG = config_columns()   # a row's config columns, declared in nccore.catalogue


def final_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Each trial's rows at its last ok epoch."""
    ok = rows[rows["status"].fillna("ok").eq("ok")] if "status" in rows else rows
    last = ok.groupby("trial_id")["epoch"].transform("max")
    return ok[ok.epoch == last]


def wide(rows: pd.DataFrame, split: str, cols: list[str], groups=("all",)) -> pd.DataFrame:
    """One row per trial: its config columns and `col` (group all) or `col_g<k>` of `split`."""
    cfg = [c for c in CONFIG if c in rows.columns]
    base = rows[rows.group == "all"].drop_duplicates("trial_id").set_index("trial_id")[cfg]
    for g in groups:
        sub = rows[(rows.split == split) & (rows.group == g)].drop_duplicates("trial_id").set_index("trial_id")
        for c in cols:
            if c in sub:
                base[c if g == "all" else f"{c}_g{g}"] = sub[c].astype(float)
    return base.reset_index()


def diff_ci(a, b) -> tuple[float, float, float, int]:
    """mean(a) − mean(b) with a Welch 95% CI."""
    a, b = (np.asarray(v, float) for v in (a, b))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return np.nan, np.nan, np.nan, len(a) + len(b)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se > 0 else 1
    d = float(a.mean() - b.mean())
    h = float(stats.t.ppf(0.975, df) * se)
    return d, d - h, d + h, len(a) + len(b)


def terminal_note(acc: pd.Series, what: str) -> dict:
    acc = acc.dropna()
    k = int((acc >= TERMINAL_ACC).sum())
    s = (f"Terminal phase ({what}): {k} of {len(acc)} trials reach train accuracy ≥ {TERMINAL_ACC:.0%} on their "
         f"training labels (min {acc.min():.3f}, median {acc.median():.3f}).")
    if k < len(acc):
        s += " Verdicts about collapse are read on trials that did not all reach it; treat them as pre-terminal."
    return note(s)


# ------------------------------------------------------------------------------------ NC-fairness
CLAIM_FAIR = ("Claim (Mouheb et al., MICCAI 2024): when positives of one subgroup are under-diagnosed in the "
              "training labels (flipped 1 → 0 at rate bias_level), that subgroup's TPR falls, its features "
              "collapse less cleanly than the other subgroup's, and the network memorises the flipped labels. "
              "Control: bias_level 0. Per-subgroup NC is measured on the observed (trained-on) and on the clean "
              "labels.")


def nc_fairness(result: dict) -> list[dict]:
    rows = result["rows"]
    fin = final_rows(rows)
    t = wide(fin, "train", ["acc", "nc1", "nc1_clean", "memorisation"], ("all", "0", "1"))
    te = wide(fin, "test", ["tpr", "f1"], ("0", "1"))
    t = t.merge(te[["trial_id", "tpr_g0", "tpr_g1", "f1_g1"]], on="trial_id")
    out = [note(CLAIM_FAIR), terminal_note(t["acc"], "observed training labels")]
    s, lo, hi, n = slope_ci(t.bias_level, t.tpr_g1)
    out.append(finding("(i) the biased subgroup's test TPR falls as the label-bias rate rises",
                       "slope of test TPR (a=1) on bias_level", s, lo, hi, -1, n))
    s, lo, hi, n = slope_ci(t.bias_level, t.tpr_g0 - t.tpr_g1)
    out.append(finding("(i') the TPR gap between the subgroups widens with bias (a=0 as the within-trial control)",
                       "slope of test TPR(a=0) − TPR(a=1) on bias_level", s, lo, hi, 1, n))
    for col, labels in (("nc1", "observed"), ("nc1_clean", "clean")):
        if f"{col}_g1" not in t:
            continue
        d = t[f"{col}_g1"] - t[f"{col}_g0"]
        out.append(finding(f"(ii) the biased subgroup's train NC1 exceeds the other's under bias and not at bias 0 "
                           f"({labels} labels)",
                           f"interaction: mean NC1(a=1) − NC1(a=0) at bias > 0 minus at bias 0, {labels} labels",
                           *diff_ci(d[t.bias_level > 0], d[t.bias_level == 0])[:3], 1, len(d.dropna())))
        per = ", ".join(f"bias {b:g}: {m:+.3g} [{lo_:+.3g}, {hi_:+.3g}]" for b, (m, lo_, hi_, _) in
                        ((b, mean_ci(d[t.bias_level == b])) for b in sorted(t.bias_level.unique())))
        out.append(note(f"NC1(a=1) − NC1(a=0), {labels} labels, mean [95% CI] per bias level: {per}."))
    out += _memorisation(rows)
    out += [figure(figures.group_curves(rows, "nc1", "train", "bias_level"),
                   "Train NC1 per epoch, per subgroup (solid a=0, dashed a=1), observed labels; one colour per bias level"),
            figure(figures.group_curves(rows, "nc1_clean", "train", "bias_level"),
                   "The same with the clean labels"),
            figure(figures.memorisation_curves(rows),
                   "Flipped training samples: share predicted as the flipped label (memorisation, solid) and as "
                   "the clean label (dashed), per epoch and bias level"),
            figure(figures.by_level(t, "bias_level", ["tpr_g0", "tpr_g1"]), "Test TPR per subgroup vs bias_level")]
    return out


def _memorisation(rows: pd.DataFrame) -> list[dict]:
    tr = rows[(rows.split == "train") & (rows.group == "all")]
    if "memorisation" not in tr or tr["memorisation"].notna().sum() == 0:
        return [note("(iii) memorisation: no flipped training samples in these trials.")]
    rise = [g.memorisation.iloc[-1] - g.memorisation.iloc[: max(1, len(g) // 3)].mean()
            for _, g in tr.dropna(subset=["memorisation"]).sort_values("epoch").groupby("trial_id")]
    return [_mean(rise, "(iii) the share of flipped training labels the network fits rises over training",
                  "memorisation at the final epoch minus its mean over the first third of epochs, biased trials", 1)]


study("nc_fairness_label_bias")(nc_fairness)
study("nc_fairness_colored_digits")(nc_fairness)


# ------------------------------------------------------------------------------------ fine structure
CLAIM_FINE = ("Claim (Yang, Steinhardt, Hu, ICML 2023): after training on coarse labels into collapse, the fine "
              "labels are still recoverable from the last-layer features; ResNet/DenseNet keep more of this "
              "structure than VGG. Baselines: the same architecture untrained (lower bound) and trained on the "
              "fine labels (upper bound); recoverability is reported as the fraction of that gap.")


def _arm(t: pd.DataFrame) -> pd.Series:
    return np.where(t.method == "untrained", "untrained", np.where(t.coarse.astype(bool), "coarse", "fine"))


@study("fine_grained_coarse")
def fine_grained(result: dict) -> list[dict]:
    rows = result["rows"]
    fin = final_rows(rows)
    t = wide(fin, "train", ["acc", "nc1"]).merge(
        wide(fin, "test", ["fine_probe_acc", "fine_nmi", "fine_nmi_chance", "fine_nc1"]).drop(
            columns=[c for c in CONFIG if c != "seed"], errors="ignore"), on=["trial_id", "seed"])
    t["arm"] = _arm(t)
    coarse = t[t.arm == "coarse"]
    out = [note(CLAIM_FINE), terminal_note(coarse["acc"], "coarse-label training"), _nc1_floor(rows, coarse)]
    piv = t.pivot_table(index=["arch", "seed"], columns="arm", values=["fine_probe_acc", "fine_nmi"])
    for metric, name in (("fine_probe_acc", "fine linear-probe accuracy"), ("fine_nmi", "fine k-means NMI")):
        if ("coarse" not in piv[metric]) or ("untrained" not in piv[metric]):
            continue
        d = piv[metric]["coarse"] - piv[metric]["untrained"]
        out.append(_mean(d.values, f"{name} after coarse training lies above the untrained baseline",
                         f"{name}: coarse-trained − untrained (paired by arch, seed)", 1))
        for arch in sorted(d.index.get_level_values(0).unique()):
            out.append(_mean(d.loc[arch].values, f"{arch}: {name} above its untrained baseline",
                             f"{arch}: coarse − untrained", 1))
    frac = _gap_fraction(piv)
    if frac is not None:
        out.append(_mean(frac.values, "coarse training recovers part of the fine structure a fine-label model has",
                         "fraction of the untrained→fine-trained probe gap reached by coarse training", 1))
        out += _vgg_pairs(frac, "gap fraction of the probe accuracy")
    if {"coarse", "untrained"} <= set(piv["fine_nmi"].columns):
        out += _vgg_pairs((piv["fine_nmi"]["coarse"] - piv["fine_nmi"]["untrained"]).dropna(),
                          "k-means NMI above the untrained baseline")
    out += [figure(figures.arm_bars(t, "fine_probe_acc"), "Fine linear-probe accuracy per arch and arm "
                   "(mean ± 95% CI over seeds)"),
            figure(figures.arm_bars(t, "fine_nmi"), "Fine k-means NMI per arch and arm (mean ± 95% CI over seeds)"),
            figure(figures.group_curves(rows[rows.coarse.astype(bool) & (rows.method != "untrained")], "nc1", "train",
                                        "arch", by_group=False), "Coarse-label train NC1 per epoch (collapse)")]
    return out


def _gap_fraction(piv: pd.DataFrame) -> pd.Series | None:
    p = piv["fine_probe_acc"]
    if not {"coarse", "untrained", "fine"} <= set(p.columns):
        return None
    return ((p["coarse"] - p["untrained"]) / (p["fine"] - p["untrained"])).dropna()


def _vgg_pairs(score: pd.Series, what: str) -> list[dict]:
    """Each non-VGG architecture minus each VGG on `score` (indexed by arch, seed), paired by seed."""
    out = []
    archs = score.index.get_level_values(0).unique()
    for vgg in [a for a in archs if a.startswith("vgg")]:
        for other in [a for a in archs if not a.startswith("vgg")]:
            d = (score.loc[other] - score.loc[vgg]).dropna()
            out.append(_mean(d.values, f"{other} keeps more fine structure than {vgg} ({what})",
                             f"{what}: {other} − {vgg} (paired by seed)", 1))
    return out


def _nc1_floor(rows: pd.DataFrame, coarse: pd.DataFrame) -> dict:
    """NC1 at its floor: the final epoch's train NC1 is within 25% of the minimum over the last
    three epochs, and below 0.1 of the first epoch's."""
    tr = rows[(rows.split == "train") & (rows.group == "all") & rows.trial_id.isin(coarse.trial_id)].sort_values("epoch")
    ok, vals = 0, []
    for _, g in tr.groupby("trial_id"):
        nc = g["nc1"].to_numpy(float)
        vals.append(nc[-1])
        ok += bool(len(nc) >= 3 and nc[-1] <= 1.25 * nc[-3:].min() and nc[-1] <= 0.1 * nc[0])
    return note(f"NC1 floor: {ok} of {len(vals)} coarse-trained trials end with train NC1 within 25% of the minimum "
                f"of their last three epochs and below a tenth of the first epoch's (final NC1 median "
                f"{np.median(vals) if vals else np.nan:.3g}, max {np.max(vals) if vals else np.nan:.3g}).")


# ------------------------------------------------------------------------------------ GC transfer
CLAIM_GC = ("Claim (Munn, Dherin, Gonzalvo, NeurIPS 2024): a lower geometric complexity (GC) of the source "
            "embedding goes with more neural collapse on new (held-out) classes and higher few-shot "
            "nearest-class-mean accuracy. Causal arm: an explicit GC regulariser λ (method gc_reg, penalty = λ; "
            "λ = 0 is the control). Observational arm: learning rate and batch size at equal optimiser steps. "
            "Correlations are also given as partial correlations controlling for source training accuracy.")


@study("gc_transfer")
def gc_transfer(result: dict) -> list[dict]:
    rows = result["rows"]
    fin = final_rows(rows)
    t = wide(fin, "train", ["acc", "gc", "nc1", "n", "fewshot_acc", "target_nc1", "target_cdnv"])
    out = [note(CLAIM_GC), terminal_note(t["acc"], "source classes"), _steps_note(t)]
    reg = _causal_arm(t)
    if reg.penalty.nunique() > 1:
        out += [_dose(reg, "gc", "the regulariser lowers source GC (manipulation check)", -1),
                _dose(reg, "target_nc1", "a stronger GC regulariser gives more collapse on new classes", -1),
                _dose(reg, "fewshot_acc", "a stronger GC regulariser gives higher few-shot accuracy", 1),
                _dose(reg, "fewshot_acc", "… also at equal source training accuracy", 1, control="acc"),
                _dose(reg, "acc", "(side effect) the regulariser costs source training accuracy", -1)]
    out += [_partial(t.gc, t.fewshot_acc, t.acc, "lower source GC goes with higher few-shot accuracy (all trials)",
                     "partial Spearman ρ(GC, few-shot accuracy | train accuracy)", -1),
            _partial(t.gc, t.target_nc1, t.acc, "lower source GC goes with lower NC1 on new classes (all trials)",
                     "partial Spearman ρ(GC, target NC1 | train accuracy)", 1),
            _partial(t.target_nc1, t.fewshot_acc, t.acc, "more collapse on new classes goes with higher few-shot "
                     "accuracy (all trials)", "partial Spearman ρ(target NC1, few-shot accuracy | train accuracy)", -1),
            _partial(t.gc, t.fewshot_acc, None, "(unadjusted) lower GC goes with higher few-shot accuracy",
                     "Spearman ρ(GC, few-shot accuracy)", -1)]
    out += [figure(figures.scatter(t, "gc", "fewshot_acc", "method"), "Source GC vs few-shot accuracy, per trial"),
            figure(figures.scatter(t, "target_nc1", "fewshot_acc", "method"), "Target NC1 vs few-shot accuracy"),
            figure(figures.by_level(reg, "penalty", ["gc"]), "Source GC vs regulariser strength λ"),
            figure(figures.by_level(reg, "penalty", ["fewshot_acc", "acc"]),
                   "Few-shot accuracy and source train accuracy vs λ")]
    return out


def _dose(reg: pd.DataFrame, col: str, claim: str, sign: int, control: str | None = None) -> dict:
    """OLS slope (HC3 CI) of `col` on the rank of λ among the arm's λ values (0, 1, 2, …: a
    monotone dose), optionally with `control` as a second regressor (its effect held fixed)."""
    import statsmodels.api as sm

    dose = reg.penalty.rank(method="dense") - 1
    x = pd.DataFrame({"dose": dose}) if control is None else pd.DataFrame({"dose": dose, control: reg[control]})
    d = pd.concat([x, reg[col].rename("_y")], axis=1).dropna()
    measure = f"slope of {col} per λ step ({', '.join(f'{v:g}' for v in sorted(reg.penalty.unique()))})" + \
        (f" with {control} held fixed" if control else "")
    if len(d) < x.shape[1] + 2 or d["dose"].nunique() < 2:
        return finding(claim, measure, np.nan, np.nan, np.nan, sign, len(d))
    fit = sm.OLS(d["_y"], sm.add_constant(d.drop(columns="_y"))).fit(cov_type="HC3")
    lo, hi = fit.conf_int().loc["dose"]
    return finding(claim, measure, float(fit.params["dose"]), float(lo), float(hi), sign, len(d))


def _causal_arm(t: pd.DataFrame) -> pd.DataFrame:
    """The regulariser trials and the λ = 0 trials that share their lr, batch size and epochs."""
    keys = ["lr", "batch_size", "epochs"]
    reg = t[t.method == "gc_reg"]
    on = reg[reg.penalty > 0][keys].drop_duplicates()
    return reg.merge(on, on=keys)


def _steps_note(t: pd.DataFrame) -> dict:
    """Optimiser steps (epochs × ⌊n_train / batch⌋) of the observational arm, per batch size."""
    obs = t[~t.trial_id.isin(_causal_arm(t).trial_id)]
    steps = obs.epochs * (obs.n // obs.batch_size)
    by = obs.assign(steps=steps).groupby("batch_size")["steps"].agg(lambda s: sorted({int(v) for v in s.dropna()}))
    return note("Optimiser steps of the lr × batch-size arm (epochs × ⌊n_train/batch⌋): "
                + "; ".join(f"batch {b}: {v}" for b, v in by.items()) + ".")
