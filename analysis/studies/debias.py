"""Debiasing studies: DFR last-layer retraining (Le et al.; Kirichenko et al.) against ERM, JTT,
GroupDRO and an unbiased upper bound, and change-penalised tuning (Penzel et al.) against λ = 0,
the frozen base, MAS and side-tuning.

Every comparison is paired by seed (the same data and initialisation), averaged within a seed
first, so the 95% CI (t over seeds, `compare.mean_ci`) counts seeds, not correlated trials. The
expected sign of each finding is fixed here from the papers. Epochs: DFR, ERM and the upper bound
at their final epoch; JTT and GroupDRO at their best validation worst-group epoch (the papers'
model selection); tuning methods at their final rows, which hold the early-stopped weights.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd

from .common import _mean, figure, note
from .registry import study

PANEL_COLS = ("saliency_panel", "saliency_panel_before")


def _epoch_rows(rows: pd.DataFrame, rule: str = "final") -> pd.DataFrame:
    """Rows of each trial at its last ok epoch ("final") or at its best val worst-group epoch ("best_val")."""
    ok = rows[rows["status"].fillna("ok").eq("ok")] if "status" in rows else rows
    if rule == "final":
        pick = ok.groupby("trial_id")["epoch"].max()
    else:
        v = ok[(ok.split == "val") & (ok.group == "all")].sort_values(["trial_id", "epoch"])
        pick = v.loc[v.groupby("trial_id")["worst_group_acc"].idxmax(), ["trial_id", "epoch"]].set_index("trial_id").epoch
    key = ok.trial_id.map(pick)
    return ok[ok.epoch == key]


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


def _diff(a: pd.Series, b: pd.Series) -> np.ndarray:
    return (a - b).dropna().values


# --------------------------------------------------------------------------- DFR (last-layer) study
DFR_COLS = ["worst_group_acc", "erm_worst_group_acc", "dfr_worst_group_acc", "spurious_share",
            "spurious_share_before", *PANEL_COLS] + [f"dfr_{v}_{m}" for v in ("l1_bal", "l1_unbal", "l2_bal")
                                                     for m in ("wga", "sparsity", "hoyer")]


def dfr_findings(result: dict) -> list[dict]:
    rows = result["rows"]
    fin = _wide(_epoch_rows(rows, "final"), DFR_COLS)
    best = _wide(_epoch_rows(rows, "best_val"), DFR_COLS)
    d = fin[fin.method == "dfr"]
    upper = fin[(fin.method == "erm") & (fin.bias_level == 0)]
    jtt, gdro = best[best.method == "jtt"], best[best.method == "groupdro"]
    dfr_w, erm_w = _by_seed(d, "dfr_l1_bal_wga"), _by_seed(d, "erm_worst_group_acc")
    jtt_w, gdro_w, up_w = _by_seed(jtt, "worst_group_acc"), _by_seed(gdro, "worst_group_acc"), _by_seed(upper, "worst_group_acc")
    sp = {v: _by_seed(d, f"dfr_{v}_sparsity") for v in ("l1_bal", "l1_unbal", "l2_bal")}
    wga = {v: _by_seed(d, f"dfr_{v}_wga") for v in ("l1_bal", "l1_unbal", "l2_bal")}
    W = "test worst-group accuracy"
    out = [
        _mean(_diff(dfr_w, erm_w), "DFR raises worst-group accuracy over ERM (Kirichenko et al.)",
              f"DFR − ERM {W}, same backbone, per seed", 1),
        _mean(_diff(up_w, dfr_w), "last-layer retraining is not sufficient: DFR stays below a model trained on "
              "unbiased data (Le et al.)", f"upper bound (ERM on β = 0) − DFR {W}", 1),
        _mean(_diff(jtt_w, erm_w), "JTT raises worst-group accuracy over ERM (Liu et al.)", f"JTT − ERM {W}", 1),
        _mean(_diff(gdro_w, erm_w), "GroupDRO raises worst-group accuracy over ERM (Sagawa et al.)",
              f"GroupDRO − ERM {W}", 1),
        _mean(_diff(dfr_w, jtt_w), "DFR beats JTT (Kirichenko et al., Table 2)", f"DFR − JTT {W}", 1),
        _mean(_diff(gdro_w, dfr_w), "retraining the whole network with group labels (GroupDRO) beats retraining "
              "the last layer (Le et al.)", f"GroupDRO − DFR {W}", 1),
        _mean(_diff(sp["l1_bal"], sp["l2_bal"]), "the sparsity of DFR's last layer comes from its L1 penalty",
              "share of zero weights: L1 balanced − L2 balanced", 1),
        _mean(_diff(sp["l1_bal"], sp["l1_unbal"]), "group balancing adds to the sparsity (Le et al. report sparsity "
              "after DFR)", "share of zero weights: L1 balanced − L1 unbalanced", 1),
        _mean(_diff(wga["l1_bal"], wga["l1_unbal"]), "group balancing is what raises worst-group accuracy",
              f"L1 balanced − L1 unbalanced {W}", 1),
        _mean(_diff(wga["l1_bal"], wga["l2_bal"]), "DFR's L1 head is at least as robust as an L2 head",
              f"L1 balanced − L2 balanced {W}", 1),
    ]
    means = {k: float(v.mean()) for k, v in (("ERM", erm_w), ("DFR", dfr_w), ("JTT", jtt_w), ("GroupDRO", gdro_w),
                                              ("upper bound", up_w)) if len(v)}
    out.append(note("Mean test worst-group accuracy over seeds: " + ", ".join(f"{k} {v:.3f}" for k, v in means.items())
                    + ". Sparsity (share of exact zeros): " + ", ".join(f"{k} {float(v.mean()):.3f}"
                                                                        for k, v in sp.items() if len(v)) + "."))
    if d.get("spurious_share") is not None and d["spurious_share"].notna().any():
        out.append(_mean(_diff(_by_seed(d, "spurious_share_before"), _by_seed(d, "spurious_share")),
                         "DFR moves the saliency (CAM) off the spurious background",
                         "share of CAM mass on the background: ERM head − DFR head", 1))
        others = {m: _by_seed(best[best.method == m], "spurious_share") for m in ("jtt", "groupdro")}
        out.append(note("Share of CAM mass on the spurious background (lower is better): ERM head "
                        f"{_by_seed(d, 'spurious_share_before').mean():.3f}, DFR {_by_seed(d, 'spurious_share').mean():.3f}, "
                        + ", ".join(f"{m} {v.mean():.3f}" for m, v in others.items() if len(v))
                        + (f", upper bound {_by_seed(upper, 'spurious_share').mean():.3f}" if len(upper) else "")
                        + "; the background covers about 80% of each image."))
        pick = d.dropna(subset=["saliency_panel"]).sort_values("seed")
        if len(pick):
            r = pick.iloc[0]
            png = panel_png([(r.get("saliency_panel_before"), "ERM head"), (r["saliency_panel"], "DFR head")])
            out.append(figure(png, f"CAM per group (rows: group g = 2y + p, two test images each), ERM head vs "
                                   f"DFR head on the same backbone, seed {int(r['seed'])}"))
    else:
        out.append(note("No saliency share: this dataset has no known spurious region (or the saliency metric set "
                        "was off)."))
    return out


study("dfr_last_layer")(dfr_findings)
study("dfr_last_layer_digits")(dfr_findings)
study("dfr_last_layer_gpu")(dfr_findings)


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


@study("change_penalty")
def change_penalty(result: dict) -> list[dict]:
    t = _wide(_epoch_rows(result["rows"], "final"), CP_COLS)
    cp = t[t.method == "change_penalty"]
    out = []
    probe = cp.drop_duplicates("seed").base_probe_wga if len(cp) else pd.Series(dtype=float)
    ok = bool(len(probe)) and float(probe.min()) >= 0.8
    out.append(note(f"Precondition — the base encodes the core feature: a linear probe on its features reaches "
                    f"test worst-group accuracy {probe.mean():.3f} (min {probe.min():.3f} over {len(probe)} seeds; "
                    f"required ≥ 0.8: {'met' if ok else 'NOT met'}). Frozen base test worst-group accuracy "
                    f"{cp.drop_duplicates('seed').base_worst_group_acc.mean():.3f}."))
    if len(cp):
        zero = cp[cp.penalty == 0].groupby(["seed", "n_tune_per_group"]).delta_norm.mean()
        ratio = cp.join(zero.rename("d0"), on=["seed", "n_tune_per_group"])
        ratio = (ratio.delta_norm / ratio.d0).groupby(ratio.penalty).median()
        out.append(note("λ grid against the measured change: median ‖Δ(λ)‖/‖Δ(0)‖ = " + ", ".join(
            f"λ={k:g}: {v:.3f}" for k, v in ratio.items()) + " (from 1 = no effect to ≈0 = no change)."))
        top = cp[cp.penalty == cp.penalty.max()].join(zero.rename("d0"), on=["seed", "n_tune_per_group"])
        out.append(_mean((top.delta_norm / top.d0 - 1).groupby(top.seed).mean().values,
                         "a larger λ keeps the change smaller", "‖Δ(largest λ)‖/‖Δ(0)‖ − 1, mean over n per seed", -1))
    sel = _selected(cp, interior_only=True)
    zero = cp[cp.penalty == 0].set_index(["seed", "n_tune_per_group"]).worst_group_acc
    gain0 = (sel.set_index(["seed", "n_tune_per_group"]).worst_group_acc - zero).dropna()
    gainb = sel.worst_group_acc - sel.base_worst_group_acc
    W = "test worst-group accuracy"
    out += [_mean(gain0.groupby(level=0).mean().values, "an interior λ (chosen on val) beats λ = 0 (Penzel et al.)",
                  f"{W}: best interior λ − λ = 0, mean over n per seed", 1),
            _mean(sel.assign(g=gainb).groupby("seed").g.mean().values, "an interior λ beats the frozen base model",
                  f"{W}: best interior λ − frozen base", 1)]
    if len(sel):
        per_n = sel.assign(g0=sel.set_index(["seed", "n_tune_per_group"]).index.map(gain0.to_dict()),
                           gb=gainb).groupby("n_tune_per_group")[["g0", "gb"]].mean()
        out.append(note("Per number n of counterexamples per group, mean gain of the best interior λ over λ = 0 / "
                        "over the base: " + "; ".join(f"n={int(k)}: {r.g0:+.3f} / {r.gb:+.3f}" for k, r in per_n.iterrows())
                        + f". Chosen λ (val): {', '.join(f'{v:g}' for v in sorted(sel.penalty.unique()))}."))
    best_cp = _seed_mean(sel, "worst_group_acc")
    for m, label in (("mas", "MAS"), ("side_tuning", "side-tuning")):
        s = _selected(t[t.method == m], interior_only=False)
        if len(s):
            diff = (sel.set_index(["seed", "n_tune_per_group"]).worst_group_acc
                    - s.set_index(["seed", "n_tune_per_group"]).worst_group_acc).dropna()
            out.append(_mean(diff.groupby(level=0).mean().values, f"change-penalised tuning beats {label} "
                             "(Penzel et al.)", f"{W}: change penalty − {label}, each at its val-chosen strength", 1))
    if "spurious_share" in sel and sel.spurious_share.notna().any():
        out.append(_mean(_diff(_seed_mean(sel, "spurious_share_before"), _seed_mean(sel, "spurious_share")),
                         "tuning at the chosen λ moves the saliency off the spurious background",
                         "share of CAM mass on the background: base − tuned", 1))
        pick = sel.dropna(subset=["saliency_panel"]).sort_values(["n_tune_per_group", "seed"], ascending=[False, True])
        if len(pick):
            r = pick.iloc[0]
            png = panel_png([(r.get("saliency_panel_before"), "frozen base"), (r["saliency_panel"], f"λ={r['penalty']:g}")])
            out.append(figure(png, f"CAM per group (rows: group g = 2y + p), base vs change-penalised tuning at the "
                                   f"val-chosen λ, n={int(r['n_tune_per_group'])} per group, seed {int(r['seed'])}"))
    out.append(note(f"Mean {W} of the val-chosen interior λ over seeds: {best_cp.mean():.3f}."))
    return out


study("change_penalty_gpu")(change_penalty)


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
