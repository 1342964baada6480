"""Debiasing studies: DFR last-layer retraining (Le et al.; Kirichenko et al.) against ERM, JTT,
GroupDRO and an unbiased upper bound, and change-penalised tuning (Penzel et al.) against λ = 0,
the frozen base, MAS, side-tuning and a group-balanced last-layer probe.

Every comparison is paired by seed (the same data and initialisation), averaged within a seed
first, so the t-interval counts seeds, not correlated trials. Roles, directions and margins come
from the spec's `study:` block or the defaults declared here. Epochs: DFR, ERM and the upper
bound at their final epoch; JTT and GroupDRO at their best validation worst-group epoch (the
papers' model selection); tuning methods at their final rows, which hold the early-stopped weights.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd

from ..select import select_epochs
from .common import figure, mean_est, measured, note
from .registry import declaration, study

DFR_FINDINGS = declaration("dfr")["findings"]   # id -> meaning (analysis/studies/declarations.yaml)
CP_FINDINGS = declaration("change_penalty")["findings"]   # id -> meaning (analysis/studies/declarations.yaml)

PANEL_COLS = ("saliency_panel", "saliency_panel_before")
GROUPS = range(4)            # g = 2y + p of a binary task: 0, 3 bias-aligned; 1, 2 bias-contradicting
W = "test worst-group accuracy"


def _wide(rows: pd.DataFrame, cols) -> pd.DataFrame:
    """One row per trial: config columns, test/all metrics `cols`, and val/all worst-group accuracy."""
    cfg = [c for c in ("method", "seed", "bias_level", "penalty", "dataset") if c in rows]
    test = rows[(rows.split == "test") & (rows.group == "all")].drop_duplicates("trial_id").set_index("trial_id")
    out = test[cfg].copy()
    for c in cols:
        if c in test:
            out[c] = test[c] if c in PANEL_COLS else pd.to_numeric(test[c], errors="coerce")
    val = rows[(rows.split == "val") & (rows.group == "all")].drop_duplicates("trial_id").set_index("trial_id")
    out["val_wga"] = pd.to_numeric(val["worst_group_acc"], errors="coerce").reindex(out.index)
    return out.reset_index()


def _by_seed(t: pd.DataFrame, col: str) -> pd.Series:
    return t.groupby("seed")[col].mean() if len(t) and col in t else pd.Series(dtype=float)


def _val_best(t: pd.DataFrame) -> pd.DataFrame:
    """Per (seed, bias level): the trial of a method's hyperparameter grid best on val worst-group
    accuracy (the papers' model selection; group labels on val only)."""
    keys = [k for k in ("seed", "bias_level") if k in t]
    return t.sort_values("val_wga", ascending=False).drop_duplicates(keys) if len(t) else t


def _diff(a: pd.Series, b: pd.Series) -> np.ndarray:
    return (a - b).dropna().values


# --------------------------------------------------------------------------- DFR (last-layer) study
DFR_COLS = ["worst_group_acc", "erm_worst_group_acc", "dfr_worst_group_acc", "spurious_share",
            "spurious_share_before", "pointing_acc", "pointing_acc_before", "pointing_worst", "pointing_worst_before",
            *PANEL_COLS] + [f"dfr_{v}_{m}" for v in ("l1_bal", "l1_unbal", "l2_bal")
                                                     for m in ("wga", "sparsity", "hoyer")] + \
           [f"{h}_acc_g{g}" for h in ("erm", "dfr") for g in GROUPS]


def group_changes(d: pd.DataFrame) -> pd.DataFrame:
    """Per seed: DFR − ERM head test accuracy in each group g (columns 0..3), mean over bias levels."""
    cols = {g: d[f"dfr_acc_g{g}"] - d[f"erm_acc_g{g}"] for g in GROUPS if f"dfr_acc_g{g}" in d and f"erm_acc_g{g}" in d}
    if not cols:
        return pd.DataFrame()
    return pd.DataFrame(cols).assign(seed=d.seed.values).groupby("seed").mean()


@study("dfr")
def dfr_findings(rows: pd.DataFrame, options: dict) -> list[dict]:
    fin = _wide(select_epochs(rows, "final"), DFR_COLS)
    best = _wide(select_epochs(rows, "best:worst_group_acc"), DFR_COLS)
    d = fin[fin.method == "dfr"]
    upper = fin[(fin.method == "erm") & (fin.bias_level == 0)]
    jtt, gdro = _val_best(best[best.method == "jtt"]), _val_best(best[best.method == "groupdro"])
    dfr_w, erm_w = _by_seed(d, "dfr_l1_bal_wga"), _by_seed(d, "erm_worst_group_acc")
    jtt_w, gdro_w, up_w = _by_seed(jtt, "worst_group_acc"), _by_seed(gdro, "worst_group_acc"), _by_seed(upper, "worst_group_acc")
    sp = {v: _by_seed(d, f"dfr_{v}_sparsity") for v in ("l1_bal", "l1_unbal", "l2_bal")}
    wga = {v: _by_seed(d, f"dfr_{v}_wga") for v in ("l1_bal", "l1_unbal", "l2_bal")}
    ch = group_changes(d)
    pick = lambda gs: ch[[g for g in gs if g in ch]].mean(axis=1).values if len(ch) else []   # noqa: E731
    F = DFR_FINDINGS
    out = [
        measured("dfr_vs_erm", F["dfr_vs_erm"], f"DFR − ERM head {W}, per seed", mean_est(_diff(dfr_w, erm_w))),
        measured("minority_gain", F["minority_gain"], "test accuracy change, groups 1 and 2, per seed",
                 mean_est(pick((1, 2)))),
        measured("majority_cost", F["majority_cost"], "test accuracy change, groups 0 and 3, per seed",
                 mean_est(pick((0, 3)))),
        measured("saliency_shift", F["saliency_shift"], "share of CAM mass on the background: ERM head − DFR head",
                 mean_est(_diff(_by_seed(d, "spurious_share_before"), _by_seed(d, "spurious_share")))),
        measured("pointing_gain", F["pointing_gain"], "share of test images whose CAM maximum is on the object "
                 "(mean over groups): DFR head − ERM head, per seed",
                 mean_est(_diff(_by_seed(d, "pointing_acc"), _by_seed(d, "pointing_acc_before")))),
        measured("balancing_raises_wga", F["balancing_raises_wga"], f"L1 balanced − L1 unbalanced {W}",
                 mean_est(_diff(wga["l1_bal"], wga["l1_unbal"]))),
        measured("l1_vs_l2_wga", F["l1_vs_l2_wga"], f"L1 balanced − L2 balanced {W}",
                 mean_est(_diff(wga["l1_bal"], wga["l2_bal"]))),
        measured("jtt_vs_erm", F["jtt_vs_erm"], f"JTT − ERM {W}", mean_est(_diff(jtt_w, erm_w))),
        measured("groupdro_vs_erm", F["groupdro_vs_erm"], f"GroupDRO − ERM {W}", mean_est(_diff(gdro_w, erm_w))),
        measured("dfr_vs_jtt", F["dfr_vs_jtt"], f"DFR − JTT {W}", mean_est(_diff(dfr_w, jtt_w))),
        measured("groupdro_vs_dfr", F["groupdro_vs_dfr"], f"GroupDRO − DFR {W}", mean_est(_diff(gdro_w, dfr_w))),
        measured("upper_bound_above_dfr", F["upper_bound_above_dfr"], f"upper bound − DFR {W}",
                 mean_est(_diff(up_w, dfr_w))),
        measured("l1_sparser_than_l2", F["l1_sparser_than_l2"], "share of zero weights: L1 balanced − L2 balanced",
                 mean_est(_diff(sp["l1_bal"], sp["l2_bal"]))),
    ]
    means = {k: float(v.mean()) for k, v in (("ERM", erm_w), ("DFR", dfr_w), ("JTT", jtt_w), ("GroupDRO", gdro_w),
                                              ("upper bound", up_w)) if len(v)}
    out.append(note("Mean test worst-group accuracy over seeds: " + ", ".join(f"{k} {v:.3f}" for k, v in means.items())
                    + ". Sparsity (share of exact zeros): " + ", ".join(f"{k} {float(v.mean()):.3f}"
                                                                        for k, v in sp.items() if len(v)) + "."))
    if len(ch):
        out.append(note("ERM head → DFR test accuracy change per group g = 2y + p (mean over seeds): " + ", ".join(
            f"g{g} {ch[g].mean():+.3f}" for g in ch.columns) + "."))
    if d.get("spurious_share") is not None and d["spurious_share"].notna().any():
        others = {m: _by_seed(best[best.method == m], "spurious_share") for m in ("jtt", "groupdro")}
        out.append(note("Share of CAM mass on the spurious background (lower is better): ERM head "
                        f"{_by_seed(d, 'spurious_share_before').mean():.3f}, DFR {_by_seed(d, 'spurious_share').mean():.3f}"
                        + "".join(f", {m} {v.mean():.3f}" for m, v in others.items() if len(v))
                        + (f", upper bound {_by_seed(upper, 'spurious_share').mean():.3f}" if len(upper) else "")
                        + "; the background covers about 80% of each image."))
        if d.get("pointing_acc") is not None and d["pointing_acc"].notna().any():
            pt = {k: float(_by_seed(d, k).mean()) for k in ("pointing_acc_before", "pointing_acc",
                                                              "pointing_worst_before", "pointing_worst")}
            out.append(note("Pointing game (share of test images whose CAM maximum lies on the object, about 20% "
                            f"for a map pointing at random), mean over groups / lowest group: ERM head "
                            f"{pt['pointing_acc_before']:.3f} / {pt['pointing_worst_before']:.3f}, DFR head "
                            f"{pt['pointing_acc']:.3f} / {pt['pointing_worst']:.3f}."))
        pick_p = d.dropna(subset=["saliency_panel"]).sort_values("seed")
        if len(pick_p):
            r = pick_p.iloc[0]
            png = panel_png([(r.get("saliency_panel_before"), "ERM head"), (r["saliency_panel"], "DFR head")])
            out.append(figure(png, f"CAM per group (rows: group g = 2y + p, two test images each), ERM head vs "
                                   f"DFR head on the same backbone, seed {int(r['seed'])}"))
    else:
        out.append(note("No saliency share: this dataset has no known spurious region (or the saliency metric set "
                        "was off)."))
    return out


# --------------------------------------------------------------------------- change-penalty study
CP_COLS = ["worst_group_acc", "delta_norm", "base_worst_group_acc", "base_probe_wga", "n_tune_per_group",
           "spurious_share", "spurious_share_before", *PANEL_COLS]


def _selected(t: pd.DataFrame, interior_only: bool) -> pd.DataFrame:
    """Per (seed, n): the trial whose penalty is best on val worst-group accuracy (ties: smaller penalty),
    among the interior penalties of the grid when interior_only."""
    if not len(t):
        return t
    grid = np.sort(t.penalty.unique())
    if interior_only:
        t = t[(t.penalty > grid[0]) & (t.penalty < grid[-1])]
    t = t.sort_values(["seed", "n_tune_per_group", "val_wga", "penalty"], ascending=[True, True, False, True])
    return t.drop_duplicates(["seed", "n_tune_per_group"])


def _seed_mean(t: pd.DataFrame, col: str) -> pd.Series:
    return t.groupby("seed")[col].mean() if len(t) else pd.Series(dtype=float)


def _change_ratio(t: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """Per tuning trial (indexed by trial_id): ‖Δ‖ / ‖Δ‖ of the change-penalty λ = 0 trial of the same (seed, n)."""
    zero = t[(t.method == "change_penalty") & (t.penalty == 0)].groupby(key).delta_norm.mean().rename("d0")
    if not len(zero):
        return pd.DataFrame(columns=["method", "penalty", "ratio", *key, "worst_group_acc"])
    r = t[t.method.isin(["change_penalty", "mas", "side_tuning"])].join(zero, on=key)
    return r.assign(ratio=r.delta_norm / r.d0).set_index("trial_id")


def _matched(other: pd.DataFrame, chosen: pd.DataFrame, key: list[str]) -> pd.Series:
    """Per (seed, n): test worst-group accuracy of the `other` trial whose change ratio is nearest the chosen one's."""
    out = {}
    for k, c in chosen.groupby(key):
        cand = other[(other[key[0]] == k[0]) & (other[key[1]] == k[1])].dropna(subset=["ratio"])
        if len(cand) and np.isfinite(c.ratio.iloc[0]):
            out[k] = cand.loc[(cand.ratio - c.ratio.iloc[0]).abs().idxmin(), "worst_group_acc"]
    return pd.Series(out, dtype=float).rename_axis(key) if out else pd.Series(dtype=float)


def _sub(a: pd.Series, b: pd.Series) -> pd.Series:
    """a − b aligned on (seed, n); empty when either is."""
    return (a - b).dropna() if len(a) and len(b) else pd.Series(dtype=float)


def _per_seed(s: pd.Series) -> np.ndarray:
    """A (seed, n)-indexed series averaged over n within each seed."""
    return s.dropna().groupby(level=0).mean().values if len(s) else np.array([])


@study("change_penalty")
def change_penalty(rows: pd.DataFrame, options: dict) -> list[dict]:
    t = _wide(select_epochs(rows, "final"), CP_COLS)
    cp = t[t.method == "change_penalty"]
    key = ["seed", "n_tune_per_group"]
    sel = _selected(cp, interior_only=True)
    s_wga = sel.set_index(key).worst_group_acc if len(sel) else pd.Series(dtype=float)
    zero = cp[cp.penalty == 0].set_index(key).worst_group_acc if len(cp) else pd.Series(dtype=float)
    gain0 = _sub(s_wga, zero)
    base = sel.set_index(key).base_worst_group_acc if len(sel) else pd.Series(dtype=float)
    probe = sel.set_index(key).base_probe_wga if len(sel) else pd.Series(dtype=float)
    ns = sorted(gain0.index.get_level_values(1).unique()) if len(gain0) else []
    inter = (gain0.xs(ns[0], level=1) - gain0.xs(ns[-1], level=1)).dropna().values if len(ns) >= 2 else []
    F = CP_FINDINGS
    out = [measured("interior_vs_zero", F["interior_vs_zero"], f"{W}: best interior λ − λ = 0, mean over n per seed",
                    mean_est(_per_seed(gain0))),
           measured("interior_vs_base", F["interior_vs_base"], f"{W}: best interior λ − frozen base, mean over n per seed",
                    mean_est(_per_seed(_sub(s_wga, base)))),
           measured("n_interaction", F["n_interaction"],
                    f"gain over λ = 0 at n = {ns[0] if ns else '?'} − at n = {ns[-1] if ns else '?'} per group, per seed",
                    mean_est(inter)),
           measured("cp_vs_probe", F["cp_vs_probe"], f"{W}: best interior λ − balanced L2 probe on the base, per seed",
                    mean_est(_per_seed(_sub(s_wga, probe))))]
    ratio = _change_ratio(t, key)
    for m, fid in (("mas", "cp_vs_mas"), ("side_tuning", "cp_vs_side_tuning")):
        s = _selected(t[t.method == m], interior_only=False)
        other = s.set_index(key).worst_group_acc if len(s) else pd.Series(dtype=float)
        out.append(measured(fid, F[fid], f"{W}: change penalty − {m}, each at its val-chosen strength, per seed",
                            mean_est(_per_seed(_sub(s_wga, other)))))
        matched = _matched(ratio[ratio.method == m], ratio.loc[sel.trial_id] if len(sel) else ratio.iloc[:0], key)
        out.append(measured(f"{fid}_matched", F[f"{fid}_matched"], f"{W}: change penalty at its chosen λ − {m} "
                            "at the strength with the nearest ‖Δ‖/‖Δ(λ = 0)‖, per seed",
                            mean_est(_per_seed(_sub(s_wga, matched)))))
    if len(ratio):
        med = ratio.groupby(["method", "penalty"]).ratio.median()
        out.append(note("Change of every method against unpenalised tuning, median ‖Δ‖/‖Δ(λ = 0)‖ (1: as much "
                        "as λ = 0, 0: none): " + "; ".join(f"{m} {p:g}: {v:.3f}" for (m, p), v in med.items()) + "."))
    share = (_diff(_seed_mean(sel, "spurious_share_before"), _seed_mean(sel, "spurious_share"))
             if "spurious_share" in sel and sel.spurious_share.notna().any() else [])
    out.append(measured("saliency_shift", F["saliency_shift"], "share of CAM mass on the background: base − tuned",
                        mean_est(share)))
    if len(cp):
        z = cp[cp.penalty == 0].groupby(key).delta_norm.mean().rename("d0")
        top = cp[cp.penalty == cp.penalty.max()].join(z, on=key)
        out.append(measured("penalty_shrinks_change", F["penalty_shrinks_change"],
                            "‖Δ(largest λ)‖/‖Δ(0)‖ − 1, mean over n per seed",
                            mean_est((top.delta_norm / top.d0 - 1).groupby(top.seed).mean().values)))
    pr = cp.drop_duplicates("seed").set_index("seed").base_probe_wga if len(cp) else pd.Series(dtype=float)
    low = [int(k) for k, v in pr.items() if not v >= 0.8]
    out.append(note(f"Precondition — the base encodes the core feature: a group-balanced linear probe on its "
                    f"features reaches test worst-group accuracy {pr.mean():.3f} (min {pr.min():.3f} over {len(pr)} "
                    f"seeds; required ≥ 0.8: {'met' if len(pr) and not low else 'NOT met'}"
                    + (f", below it: seed {', '.join(map(str, low))}" if low else "") + ")."))
    if len(gain0):
        per_n = gain0.groupby(level=1).mean()
        out.append(note("Per number n of counterexamples per group, mean gain of the best interior λ over λ = 0: "
                        + "; ".join(f"n={int(k)}: {v:+.3f}" for k, v in per_n.items())
                        + f". Chosen λ (val): {', '.join(f'{v:g}' for v in sorted(sel.penalty.unique()))}."))
    pick = sel.dropna(subset=["saliency_panel"]).sort_values(["n_tune_per_group", "seed"], ascending=[False, True]) \
        if "saliency_panel" in sel else sel.iloc[:0]
    if len(pick):
        r = pick.iloc[0]
        png = panel_png([(r.get("saliency_panel_before"), "frozen base"), (r["saliency_panel"], f"λ={r['penalty']:g}")])
        out.append(figure(png, f"CAM per group (rows: group g = 2y + p), base vs change-penalised tuning at the "
                               f"val-chosen λ, n={int(r['n_tune_per_group'])} per group, seed {int(r['seed'])}"))
    return out


# --------------------------------------------------------------------------- saliency panels
def panel_png(panels: list[tuple[str | None, str]]) -> bytes | None:
    """A PNG grid: one row per image, columns = the image, then its map under each panel (overlay)."""
    from nccore.metrics.saliency import decode_panel

    decoded = [(decode_panel(s), title) for s, title in panels if isinstance(s, str) and s]
    if not decoded:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = decoded[0][0]
    n = len(first["images"])
    fig, axes = plt.subplots(n, 1 + len(decoded), figsize=(1.4 * (1 + len(decoded)), 1.4 * n), squeeze=False)
    for i in range(n):
        img = first["images"][i].transpose(1, 2, 0)
        axes[i, 0].imshow(img)
        axes[i, 0].set_ylabel(f"g={first['groups'][i]}", fontsize=7)
        for j, (p, title) in enumerate(decoded, start=1):
            axes[i, j].imshow(img)
            axes[i, j].imshow(p["maps"][i], cmap="jet", alpha=0.5, vmin=0, vmax=255)
            if i == 0:
                axes[i, j].set_title(title, fontsize=7)
            axes[i, j].set_xlabel(f"pred {p['preds'][i]} (y {p['labels'][i]})", fontsize=6)
        if i == 0:
            axes[i, 0].set_title("image", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()
