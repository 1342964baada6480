"""The studies' pilots: grids chosen from what a small run measured.

Change-penalty pilot (sweeps/specs/change_penalty_pilot.yaml): how much each method and
strength changes the base, and the MAS strengths whose change matches each λ's.

Change ratio of a tuning trial = its ‖Δ‖ (`delta_norm` of its last test row: the weights early
stopping restored) ÷ that of change_penalty at λ = 0 with the same (seed, n_tune); a diverged trial
has ratio inf. A method's arm is its name, with MAS's `penalty_mode` appended (mas/explicit,
mas/proximal). `matched` picks, for every positive λ, the strength of another arm whose median
ratio is nearest λ's median ratio on a log scale.

GC-transfer pilot (sweeps/specs/gc_transfer_pilot.yaml): per λ of the GC regulariser, the source
GC relative to λ = 0 and the source train accuracy change against λ = 0, each taken per (seed,
target arm) and summarised by the median; `matched_lambdas` keeps the λ > 0 that lower GC (median
ratio < 1) with the median accuracy change ≥ −tol.

Run: python -m analysis.studies.pilot RUN_DIR [RUN_DIR ...] (the table of whichever pilot the runs hold)
"""
from __future__ import annotations

import math
import sys

import numpy as np
import pandas as pd

from nccore.catalogue import method_defaults


def change_ratios(rows: pd.DataFrame, configs: pd.DataFrame) -> pd.DataFrame:
    """One row per tuning trial: arm, penalty, seed, n, ratio. `rows`: the run's rows (load());
    `configs`: trial_id, trial_status, config (load.trial_records())."""
    te = rows[(rows.split == "test") & (rows.group == "all")].sort_values("epoch")
    last = te.groupby("trial_id").tail(1).set_index("trial_id")
    out = []
    for r in configs.itertuples():
        cfg = r.config
        if cfg.get("method") not in ("change_penalty", "mas", "side_tuning"):
            continue
        opts = {**method_defaults(cfg["method"]), **(cfg.get("method_options") or {})}
        arm = cfg["method"] + (f"/{opts['penalty_mode']}" if cfg["method"] == "mas" else "")
        diverged = r.trial_status == "diverged"
        delta = math.inf if diverged else float(last.delta_norm.get(r.trial_id, math.nan))
        out.append({"arm": arm, "penalty": float(cfg.get("penalty", 0.0)), "seed": int(cfg.get("seed", 0)),
                    "n": int(opts["n_tune"]), "delta": delta})
    d = pd.DataFrame(out, columns=["arm", "penalty", "seed", "n", "delta"])
    zero = d[(d.arm == "change_penalty") & (d.penalty == 0)].groupby(["seed", "n"]).delta.mean().rename("d0")
    d = d.join(zero, on=["seed", "n"])
    return d.assign(ratio=d.delta / d.d0).drop(columns="d0")


def medians(ratios: pd.DataFrame) -> pd.Series:
    """Median ratio per (arm, penalty) over seeds and n (inf counts as the largest)."""
    return ratios.groupby(["arm", "penalty"]).ratio.median()


def matched(ratios: pd.DataFrame, other: str = "mas/proximal", ref: str = "change_penalty") -> dict[float, float]:
    """For each positive λ of `ref`: the `other` strength whose median ratio is nearest on a log scale."""
    med = medians(ratios)
    if ref not in med.index.get_level_values(0) or other not in med.index.get_level_values(0):
        return {}
    cand = med[other][np.isfinite(med[other]) & (med[other] > 0)]
    if not len(cand):
        return {}
    out = {}
    for lam, r in med[ref].items():
        if lam > 0 and np.isfinite(r) and r > 0:
            out[float(lam)] = float((np.log(cand) - math.log(r)).abs().idxmin())
    return out


def gc_effects(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per gc_reg trial: epochs, penalty, seed, arm (target_shared), gc_ratio = GC ÷ GC(λ = 0)
    and acc_change = train accuracy − that of λ = 0, both against the λ = 0 trial of the same
    (epochs, seed, arm)."""
    tr = rows[(rows.split == "train") & (rows.group == "all") & (rows.method == "gc_reg")].sort_values("epoch")
    last = tr.groupby("trial_id").tail(1).copy()
    last["arm"] = last["target_shared"] if "target_shared" in last else np.nan
    key = ["epochs", "seed", "arm"]
    zero = last[last.penalty == 0].groupby(key, dropna=False)[["gc", "acc"]].mean()
    zero.columns = ["gc0", "acc0"]
    t = last.join(zero, on=key)
    return pd.DataFrame({"epochs": t.epochs, "penalty": t.penalty, "seed": t.seed, "arm": t.arm,
                         "gc_ratio": t.gc / t.gc0, "acc_change": t.acc - t.acc0}).reset_index(drop=True)


def matched_lambdas(effects: pd.DataFrame, tol: float = 0.02) -> list[tuple[int, float]]:
    """(epochs, λ) with λ > 0 whose median GC ratio is < 1 and median train-accuracy change ≥ −tol."""
    med = effects.groupby(["epochs", "penalty"])[["gc_ratio", "acc_change"]].median()
    return [(int(ep), float(lam)) for (ep, lam), r in med.iterrows()
            if lam > 0 and r.gc_ratio < 1 and r.acc_change >= -tol]


def main(argv=None) -> int:
    from analysis.load import load, trial_records

    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m analysis.studies.pilot RUN_DIR [RUN_DIR ...]", file=sys.stderr)
        return 2
    rows = load(argv)
    if "gc_reg" in set(rows.method):
        eff = gc_effects(rows)
        med = eff.groupby(["epochs", "penalty"])[["gc_ratio", "acc_change"]].agg(["median", "min", "max"])
        print("GC regulariser: source GC ÷ GC(λ = 0) and train accuracy − that of λ = 0 (same epochs), per λ over "
              "(seed, arm):")
        print(med.round(3).to_string())
        print("(epochs, λ > 0) lowering GC at matched source accuracy (median change ≥ −0.02):",
              ", ".join(f"({e}, {v:g})" for e, v in matched_lambdas(eff)) or "none")
        return 0
    ratios = change_ratios(rows, trial_records(argv))
    table = ratios.pivot_table(index=["arm", "penalty"], columns=["n", "seed"], values="ratio", aggfunc="first")
    table[("median", "")] = medians(ratios)
    print("‖Δ‖ / ‖Δ(change_penalty, λ = 0)‖ per arm and strength, by (n, seed):")
    print(table.round(3).to_string())
    for other in sorted(set(ratios.arm) - {"change_penalty"}):
        pick = matched(ratios, other)
        if pick:
            print(f"{other} strength nearest each λ's median ratio: "
                  + ", ".join(f"λ {k:g} → {v:g}" for k, v in pick.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
