"""Collapse studies: NC-fairness (Mouheb et al.), fine-structure (Yang et al.), GC-transfer (Munn et al.).

Each study reads the raw rows, measures every finding it knows (`measured`, with an `Estimate`),
and adds notes on the preconditions (train accuracy ≥ 99%: the terminal phase) and figures.
Which finding is the primary outcome, which are secondary and which are manipulation checks,
and their directions and margins, come from the spec's `study:` block or the default declared
here (`DEFAULT_*`), never from the data; `common.judge` corrects and reads the verdicts.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from nccore.catalogue import config_columns

from ..compare import mean_ci
from ..select import ok_rows, select_epochs
from . import figures
from .common import Estimate, figure, mean_est, measured, note, ols_est, rank_est, slope_est
from .registry import declaration, study

FAIR_FINDINGS = declaration("nc_fairness")["findings"]   # id -> meaning (analysis/studies/declarations.yaml)
FINE_FINDINGS = declaration("fine_structure")["findings"]   # id -> meaning (analysis/studies/declarations.yaml)
GC_FINDINGS = declaration("gc_transfer")["findings"]   # id -> meaning (analysis/studies/declarations.yaml)

TERMINAL_ACC = 0.99     # train accuracy on the training labels that marks the terminal phase
CONFIG = config_columns()   # a row's config columns, declared in nccore.catalogue


def wide(rows: pd.DataFrame, split: str, cols: list[str], groups=("all",)) -> pd.DataFrame:
    """One row per trial: its config columns and `col` (group all) or `col_g<k>` of `split`."""
    cfg = [c for c in CONFIG if c in rows.columns]
    base = rows[rows.group == "all"].drop_duplicates("trial_id").set_index("trial_id")[cfg]
    for g in groups:
        sub = rows[(rows.split == split) & (rows.group == g)].drop_duplicates("trial_id").set_index("trial_id")
        for c in cols:
            if c in sub:
                base[c if g == "all" else f"{c}_g{g}"] = pd.to_numeric(sub[c], errors="coerce")
    return base.reset_index()


def terminal_note(acc: pd.Series, what: str) -> dict:
    acc = acc.dropna()
    k = int((acc >= TERMINAL_ACC).sum())
    s = (f"Terminal phase ({what}): {k} of {len(acc)} trials reach train accuracy ≥ {TERMINAL_ACC:.0%} on their "
         f"training labels (min {acc.min():.3f}, median {acc.median():.3f}).")
    if k < len(acc):
        s += " Verdicts about collapse are read on trials that did not all reach it; treat them as pre-terminal."
    return note(s)


def _col(t: pd.DataFrame, c: str) -> pd.Series:
    return t[c] if c in t else pd.Series(np.nan, index=t.index)


# ------------------------------------------------------------------------------------ NC-fairness


def early_alignment_gap(rows: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per trial: align_cos(a=0) − align_cos(a=1) on train, mean over its first k evaluated epochs
    (`early`) and at its final epoch (`late`)."""
    tr = ok_rows(rows)
    tr = tr[(tr.split == "train") & tr.group.isin(["0", "1"])]
    if "align_cos" not in tr:
        return pd.DataFrame(columns=["trial_id", "early", "late"])
    p = tr.pivot_table(index=["trial_id", "epoch"], columns="group", values="align_cos")
    gap = (p.get("0") - p.get("1")).rename("gap").reset_index().sort_values(["trial_id", "epoch"])
    early = gap.groupby("trial_id").gap.apply(lambda s: s.iloc[:k].mean())
    late = gap.groupby("trial_id").gap.last()
    return pd.DataFrame({"early": early, "late": late}).reset_index()


@study("nc_fairness")
def nc_fairness(rows: pd.DataFrame, options: dict) -> list[dict]:
    k = int(options.get("early_epochs", 3))
    fin = select_epochs(rows, "final")
    t = wide(fin, "train", ["acc", "nc1", "nc1_clean", "nc1_cb", "nc1_cb_clean"], ("all", "0", "1"))
    te = wide(fin, "test", ["tpr", "f1"], ("0", "1"))
    t = t.merge(te[["trial_id"] + [c for c in ("tpr_g0", "tpr_g1", "f1_g0", "f1_g1") if c in te]], on="trial_id")
    t = t.merge(early_alignment_gap(rows, k), on="trial_id", how="left")
    kind = t["bias_kind"] if "bias_kind" in t else pd.Series("label", index=t.index)
    both = t.assign(f1_gap=_col(t, "f1_g0") - _col(t, "f1_g1"), label=(kind != "drop").astype(float))
    t = t[kind != "drop"]          # the claims are about label flips; the drop arm is their control
    b = t.bias_level
    biased = t[b > 0]
    out = [
        measured("early_alignment_gap", FAIR_FINDINGS["early_alignment_gap"],
                 f"slope of the mean train align_cos gap (a=0 − a=1) over the first {k} epochs on bias_level",
                 slope_est(b, _col(t, "early"))),
        measured("alignment_convergence", FAIR_FINDINGS["alignment_convergence"],
                 f"alignment gap over the first {k} epochs − at the final epoch, trials with bias > 0",
                 mean_est(_col(biased, "early") - _col(biased, "late"))),
        measured("f1_gap_slope", FAIR_FINDINGS["f1_gap_slope"], "slope of test F1(a=0) − F1(a=1) on bias_level",
                 slope_est(b, _col(t, "f1_g0") - _col(t, "f1_g1"))),
        measured("f1_biased_slope", FAIR_FINDINGS["f1_biased_slope"], "slope of test F1(a=1) on bias_level",
                 slope_est(b, _col(t, "f1_g1"))),
        measured("nc1_gap_slope", FAIR_FINDINGS["nc1_gap_slope"],
                 "slope of final train NC1(a=1) − NC1(a=0) (observed labels) on bias_level",
                 slope_est(b, _col(t, "nc1_g1") - _col(t, "nc1_g0"))),
        measured("nc1_clean_gap_slope", FAIR_FINDINGS["nc1_clean_gap_slope"],
                 "slope of final train NC1(a=1) − NC1(a=0) (clean labels) on bias_level",
                 slope_est(b, _col(t, "nc1_clean_g1") - _col(t, "nc1_clean_g0"))),
        *[measured(f"nc1_cb{lab}_gap_slope", FAIR_FINDINGS[f"nc1_cb{lab}_gap_slope"],
                   f"slope of final train NC1(a=1) − NC1(a=0), class-balanced Σ_W ({what} labels), on bias_level",
                   slope_est(b, _col(t, f"nc1_cb{lab}_g1") - _col(t, f"nc1_cb{lab}_g0")))
          for lab, what in (("", "observed"), ("_clean", "clean"))],
        measured("label_noise_vs_imbalance", FAIR_FINDINGS["label_noise_vs_imbalance"],
                 "coefficient of bias_level × (flip, not drop) on test F1(a=0) − F1(a=1), one intercept (bias 0 "
                 "is the same data for both kinds)",
                 ols_est(both.f1_gap, {"bias": both.bias_level, "bias_x_flip": both.bias_level * both.label},
                         "bias_x_flip") if (kind == "drop").any() else Estimate(np.nan)),
        measured("tpr_biased_slope", FAIR_FINDINGS["tpr_biased_slope"], "slope of test TPR(a=1) on bias_level",
                 slope_est(b, _col(t, "tpr_g1"))),
        measured("memorisation_rise", FAIR_FINDINGS["memorisation_rise"],
                 "memorisation at the final epoch − its mean over the first third of epochs, biased trials",
                 _memorisation_rise(rows)),
        note(declaration("nc_fairness")["claim"]), terminal_note(t["acc"], "observed training labels")]
    if "early" in t and t["early"].notna().any():
        per = "; ".join(f"bias {lv:g}: {g.early.mean():+.3f} → {g.late.mean():+.3f} (per trial "
                        + ", ".join(f"{e:+.2f}→{l_:+.2f}" for e, l_ in zip(g.early, g.late)) + ")"
                        for lv, g in t.groupby("bias_level"))
        out.append(note(f"Train alignment gap align_cos(a=0) − align_cos(a=1), flip arm, mean over the first {k} "
                        f"epochs → at the final epoch, per bias level: {per}."))
    for col, labels in (("nc1", "observed labels"), ("nc1_clean", "clean labels"),
                        ("nc1_cb", "observed labels, class-balanced Σ_W"), ("nc1_cb_clean", "clean labels, class-balanced Σ_W")):
        if f"{col}_g1" in t and t[f"{col}_g1"].notna().any():
            d = t[f"{col}_g1"] - t[f"{col}_g0"]
            per = ", ".join(f"bias {lv:g}: {m:+.3g} [{lo:+.3g}, {hi:+.3g}]" for lv, (m, lo, hi, _) in
                            ((lv, mean_ci(d[b == lv])) for lv in sorted(b.unique())))
            out.append(note(f"Final train NC1(a=1) − NC1(a=0), {labels}, mean [95% CI] per bias level: {per}."))
    out += [figure(figures.group_curves(rows, "align_cos", "train", "bias_level"),
                   "Train align_cos per epoch, per subgroup (solid a=0, dashed a=1); one colour per bias level"),
            figure(figures.group_curves(rows, "nc1", "train", "bias_level"),
                   "Train NC1 per epoch, per subgroup (solid a=0, dashed a=1), observed labels"),
            figure(figures.memorisation_curves(rows),
                   "Flipped training samples: share predicted as the flipped label (memorisation, solid) and as "
                   "the clean label (dashed), per epoch and bias level"),
            figure(figures.by_level(t, "bias_level", ["f1_g0", "f1_g1"]), "Test F1 per subgroup vs bias_level")]
    return out


def _memorisation_rise(rows: pd.DataFrame) -> Estimate:
    tr = ok_rows(rows)
    tr = tr[(tr.split == "train") & (tr.group == "all")]
    if "memorisation" not in tr:
        return Estimate(np.nan)
    tr = tr.assign(memorisation=pd.to_numeric(tr.memorisation, errors="coerce")).dropna(subset=["memorisation"])
    rise = [g.memorisation.iloc[-1] - g.memorisation.iloc[: max(1, len(g) // 3)].mean()
            for _, g in tr.sort_values("epoch").groupby("trial_id")]
    return mean_est(rise)


# ------------------------------------------------------------------------------------ fine structure


def _arm(t: pd.DataFrame) -> pd.Series:
    return np.where(t.method == "untrained", "untrained", np.where(t.coarse.astype(bool), "coarse", "fine"))


@study("fine_structure")
def fine_structure(rows: pd.DataFrame, options: dict) -> list[dict]:
    fin = select_epochs(rows, "final")
    t = wide(fin, "train", ["acc", "nc1"]).merge(
        wide(fin, "test", ["fine_probe_acc", "fine_nmi", "fine_nmi_chance"])[
            ["trial_id", "fine_probe_acc", "fine_nmi", "fine_nmi_chance"]], on="trial_id")
    t["arm"] = _arm(t)
    coarse = t[t.arm == "coarse"]
    unit = ["arch", "seed"]
    arm_mean = t.groupby(unit + ["arm"])[["fine_nmi", "fine_probe_acc"]].mean().unstack("arm")
    gain = _minus(arm_mean, "fine_nmi", "coarse", "untrained")
    p = arm_mean.get("fine_probe_acc", pd.DataFrame())
    frac = ((p["coarse"] - p["untrained"]) / (p["fine"] - p["untrained"])).dropna() \
        if {"coarse", "untrained", "fine"} <= set(p.columns) else pd.Series(dtype=float)
    c = coarse.assign(log_lr=np.log10(coarse.lr), log_wd=np.log10(coarse.weight_decay.where(coarse.weight_decay > 0)))
    out = [
        measured("nmi_gain", FINE_FINDINGS["nmi_gain"], "fine NMI: coarse-trained (mean over lr × wd cells) − "
                 "untrained, per (arch, seed)", mean_est(gain.values)),
        measured("probe_gap_fraction", FINE_FINDINGS["probe_gap_fraction"],
                 "(coarse − untrained) / (fine-trained − untrained) probe accuracy, per (arch, seed)",
                 mean_est(frac.values)),
        measured("lr_effect", FINE_FINDINGS["lr_effect"], "OLS coefficient of log10 lr (with log10 wd) on fine NMI",
                 ols_est(c.fine_nmi, {"log_lr": c.log_lr, "log_wd": c.log_wd}, "log_lr")),
        measured("wd_effect", FINE_FINDINGS["wd_effect"], "OLS coefficient of log10 wd (with log10 lr) on fine NMI",
                 ols_est(c.fine_nmi, {"log_lr": c.log_lr, "log_wd": c.log_wd}, "log_wd")),
        measured("coarse_collapse", FINE_FINDINGS["coarse_collapse"], "log10(final / first-epoch train NC1), "
                 "coarse trials", mean_est(_nc1_drop(rows, coarse))),
    ]
    for arch, fid in (("resnet18", "resnet_vs_vgg"), ("densenet121", "densenet_vs_vgg")):
        d = _paired_arch(gain, arch, "vgg11")
        out.append(measured(fid, FINE_FINDINGS[fid], f"NMI gain {arch} − vgg11, paired by seed", mean_est(d)))
    cells = coarse.groupby(["arch", "lr", "weight_decay"]).fine_nmi.mean()
    out += [note(declaration("fine_structure")["claim"]), terminal_note(coarse["acc"], "coarse-label training"),
            note("Fine NMI of the coarse-trained trials per (arch, lr, wd), mean over seeds: " + "; ".join(
                f"{a} lr {lr:g} wd {wd:g}: {v:.3f}" for (a, lr, wd), v in cells.items()) + ".")]
    out += [figure(figures.arm_bars(t, "fine_probe_acc"), "Fine linear-probe accuracy per arch and arm "
                   "(mean ± 95% CI over seeds)"),
            figure(figures.arm_bars(t, "fine_nmi"), "Fine k-means NMI per arch and arm (mean ± 95% CI over seeds)"),
            figure(figures.group_curves(rows[rows.coarse.astype(bool) & (rows.method != "untrained")], "nc1", "train",
                                        "arch", by_group=False), "Coarse-label train NC1 per epoch (collapse)")]
    return out


def _minus(frame: pd.DataFrame, metric: str, a: str, b: str) -> pd.Series:
    if metric not in frame or not {a, b} <= set(frame[metric].columns):
        return pd.Series(dtype=float)
    return (frame[metric][a] - frame[metric][b]).dropna()


def _paired_arch(score: pd.Series, arch: str, other: str) -> np.ndarray:
    if not len(score) or arch not in score.index.get_level_values(0) or other not in score.index.get_level_values(0):
        return np.array([])
    return (score.loc[arch] - score.loc[other]).dropna().values


def _nc1_drop(rows: pd.DataFrame, coarse: pd.DataFrame) -> list[float]:
    tr = ok_rows(rows)
    tr = tr[(tr.split == "train") & (tr.group == "all") & tr.trial_id.isin(coarse.trial_id)].sort_values("epoch")
    out = []
    for _, g in tr.groupby("trial_id"):
        nc = pd.to_numeric(g["nc1"], errors="coerce").to_numpy(float)
        if len(nc) >= 2 and nc[0] > 0 and nc[-1] > 0:
            out.append(float(np.log10(nc[-1] / nc[0])))
    return out


# ------------------------------------------------------------------------------------ GC transfer


@study("gc_transfer")
def gc_transfer(rows: pd.DataFrame, options: dict) -> list[dict]:
    fin = select_epochs(rows, "final")
    t = wide(fin, "train", ["acc", "gc", "gc_norm", "gc_exact", "nc1", "n", "fewshot_acc", "target_nc1", "target_cdnv",
                            "target_shared"])
    cov = _covariates(t)
    reg = _causal_arm(t)
    dose = reg.penalty.rank(method="dense") - 1
    steps = ", ".join(f"{v:g}" for v in sorted(reg.penalty.unique()))
    given = "partial Spearman ρ" + (" (covariates: train accuracy, target arm)" if cov.shape[1] > 1 else "")
    out = [measured("gc_fewshot_rank", GC_FINDINGS["gc_fewshot_rank"], given, rank_est(t.gc, t.fewshot_acc, cov)),
           measured("gc_target_nc1_rank", GC_FINDINGS["gc_target_nc1_rank"], given,
                    rank_est(t.gc, t.target_nc1, cov)),
           measured("gc_norm_fewshot_rank", GC_FINDINGS["gc_norm_fewshot_rank"], given,
                    rank_est(_col(t, "gc_norm"), t.fewshot_acc, cov)),
           measured("gc_exact_agreement", GC_FINDINGS["gc_exact_agreement"], "Spearman ρ",
                    rank_est(t.gc, _col(t, "gc_exact"))),
           measured("target_nc1_fewshot_rank", GC_FINDINGS["target_nc1_fewshot_rank"], given,
                    rank_est(t.target_nc1, t.fewshot_acc, cov)),
           measured("arm_gc_fewshot_diff", GC_FINDINGS["arm_gc_fewshot_diff"],
                    "Fisher z difference of partial Spearman ρ, compatible − incompatible", arm_rank_diff(t)),
           measured("arm_fewshot_gap", GC_FINDINGS["arm_fewshot_gap"],
                    "mean over seeds of (compatible − incompatible) few-shot accuracy", arm_gap(t)),
           measured("reg_fewshot_slope", GC_FINDINGS["reg_fewshot_slope"], f"OLS slope per λ step ({steps})",
                    ols_est(reg.fewshot_acc, {"dose": dose, "acc": reg.acc,
                                              **({"arm": reg.target_shared} if cov.shape[1] > 1 else {})}, "dose")),
           measured("reg_target_nc1_slope", GC_FINDINGS["reg_target_nc1_slope"], f"OLS slope per λ step ({steps})",
                    slope_est(dose, reg.target_nc1)),
           measured("reg_lowers_gc", GC_FINDINGS["reg_lowers_gc"], f"OLS slope per λ step ({steps})",
                    slope_est(dose, reg.gc)),
           measured("reg_train_acc_slope", GC_FINDINGS["reg_train_acc_slope"], f"OLS slope per λ step ({steps})",
                    slope_est(dose, reg.acc)),
           note(declaration("gc_transfer")["claim"]), terminal_note(t["acc"], "source classes"), _steps_note(t)]
    comp, inc = _arms(t)
    if len(comp) and len(inc):
        per = {k: rank_est(a.gc, a.fewshot_acc, a.acc) for k, a in (("compatible", comp), ("incompatible", inc))}
        out.append(note("Target arms: partial ρ(GC, few-shot accuracy | train accuracy) "
                        + "; ".join(f"{k} {e.value:+.3f} ({e.n} trials, few-shot accuracy "
                                    f"{a.fewshot_acc.mean():.3f})" for (k, e), a in zip(per.items(), (comp, inc)))
                        + ". Compatible targets have a sibling class among the source classes; incompatible "
                          "targets come from families the source never saw."))
    out += [figure(figures.scatter(t, "gc", "fewshot_acc", "method"), "Source GC vs few-shot accuracy, per trial"),
            figure(figures.scatter(t, "target_nc1", "fewshot_acc", "method"), "Target NC1 vs few-shot accuracy"),
            figure(figures.by_level(reg, "penalty", ["gc"]), "Source GC vs regulariser strength λ"),
            figure(figures.by_level(reg, "penalty", ["fewshot_acc", "acc"]),
                   "Few-shot accuracy and source train accuracy vs λ")]
    return out


def _arms(t: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(compatible, incompatible) trials by target_shared (1 / 0); empty without the column."""
    shared = _col(t, "target_shared")
    return t[shared == 1], t[shared == 0]


def _covariates(t: pd.DataFrame) -> np.ndarray:
    """Train accuracy, and the target arm where the run has both arms (its few-shot accuracy and
    GC levels may differ by arm: the relation is read within arms)."""
    comp, inc = _arms(t)
    if len(comp) and len(inc):
        return np.column_stack([t.acc, _col(t, "target_shared")])
    return t.acc.to_numpy(float).reshape(-1, 1)


def arm_rank_diff(t: pd.DataFrame) -> Estimate:
    """Fisher z(partial ρ(GC, few-shot | train acc)) in the compatible arm − in the incompatible arm;
    standard error √(se_c² + se_i²) of two independent samples, normal."""
    comp, inc = _arms(t)
    if not (len(comp) and len(inc)):
        return Estimate(np.nan)
    a, b = (rank_est(s.gc, s.fewshot_acc, s.acc) for s in (comp, inc))
    if not (a.ok() and b.ok()):
        return Estimate(np.nan, n=a.n + b.n)
    return Estimate(a._z() - b._z(), float(np.hypot(a.se, b.se)), np.inf, a.n + b.n)


def arm_gap(t: pd.DataFrame) -> Estimate:
    """Per seed: mean few-shot accuracy of the compatible arm − of the incompatible arm (same configurations
    in both arms); t over seeds."""
    comp, inc = _arms(t)
    if not (len(comp) and len(inc)):
        return Estimate(np.nan)
    d = comp.groupby("seed").fewshot_acc.mean() - inc.groupby("seed").fewshot_acc.mean()
    return mean_est(d.dropna())


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
