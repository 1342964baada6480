"""The report's content as plain data (dicts and lists), built from an analysis result.

`build(result, title, studies)` returns everything the templates show — no HTML or Markdown is
written here (see `analysis/render.py` and `analysis/templates/`):

    summary       findings that survive correction, each a sentence in the metric's units; the
                  leaderboard (ranked on validation, test mean ± CI over seeds); architecture comparison
    statistics    estimator, CI methods, correction, reference levels, scales, units, exclusions
    families      one section per metric family (catalogue metric sets), one block per fitted table
    insufficient  tables without enough data, folded into one list saying what is missing
    sections      the registered extra sections (`register_section`), as plain data
    studies       (heading, html, markdown) from `analysis.studies.study_sections`
    metadata      spec, trial statuses, hosts / devices / versions, failed trials with their errors
    contents      (id, title) of every section, in page order
"""
from __future__ import annotations

import base64
import json
import math
import re
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from . import plots, vocab
from .compare import BOOT_CI
from .curves import curves
from .filters import describe_exclusions, status_of
from .sensitivity import CI_METHOD, ESTIMATOR, SensitivityTable

FAMILY_TITLES = {None: "Accuracy and loss", "fairness": "Fairness", "nc": "Neural collapse",
                 "gc": "Geometric complexity", "fine": "Fine structure", "method": "Method-specific"}
CORRECTION_NAMES = {"holm": "Holm (family-wise error, across each table's terms)",
                    "bh": "Benjamini–Hochberg (false discovery rate, across each table's terms)",
                    "none": "none (raw p-values)"}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"


def fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        a = abs(float(v))
        return f"{v:.2e}" if a and (a < 1e-3 or a >= 1e5) else f"{v:.{digits}g}" if a >= 1 else f"{v:.{digits}f}"
    return str(v)


def ci(lo, hi) -> str:
    return f"{fmt(lo)} to {fmt(hi)}"


def png(data: bytes | None, alt: str) -> dict | None:
    return None if data is None else {"alt": alt, "src": "data:image/png;base64," + base64.b64encode(data).decode()}


def family_of(metric: str) -> str | None:
    try:
        from nccore import catalogue

        m = catalogue.metric_info(metric)
    except KeyError:
        return None
    return "method" if m.methods else m.metric_set


def _label(metric: str) -> str:
    return vocab.metric_meta(metric)["label"]


def _ref_text(table: SensitivityTable) -> str:
    refs = table.meta.get("reference", {})
    return ", ".join(f"{a}: {v}" for a, v in refs.items()) or "no categorical axis"


def effect_rows(t: SensitivityTable) -> list[dict]:
    eff = t.effects
    if eff.empty:
        return []
    aov = t.anova.set_index("axis") if not t.anova.empty else pd.DataFrame()
    imp = t.importance.set_index("axis")["fanova"] if not t.importance.empty else pd.Series(dtype=float)
    refs, scale = t.meta.get("reference", {}), t.meta.get("scale", {})
    rows = []
    for r in eff.itertuples():
        axis = r.axis
        m = re.search(r"\[T\.(.+?)\]", r.term)
        vs = f"{m.group(1)} vs {refs.get(axis.split('×')[0], '?')}" if m else scale.get(axis, "interaction")
        diff = getattr(r, "diff", np.nan)
        units = "–" if pd.isna(diff) else (f"{fmt(r.from_value)} → {fmt(r.to_value)} ({signed(diff)}"
                                          + (f"; {signed(r.diff_ci_low)} to {signed(r.diff_ci_high)})"
                                             if pd.notna(r.diff_ci_low) else ")"))
        rows.append({"term": getattr(r, "label", r.term), "axis": axis, "contrast": vs, "units": units,
                     "effect": fmt(r.effect), "ci": ci(r.ci_low, r.ci_high),
                     "p": fmt(r.p), "p_adj": fmt(r.p_adj), "significant": bool(r.p_adj < 0.05),
                     "eta2": fmt(aov.loc[axis, "partial_eta2"]) if axis in aov.index else "–",
                     "fanova": fmt(imp.get(axis, np.nan))})
    return rows


def metric_name(metric: str) -> str:
    """The metric as a sentence names it: the catalogue's label without its direction arrow."""
    return re.sub(r"\s*[↑↓]$", "", _label(metric))


def signed(v) -> str:
    return ("−" if v < 0 else "+") + fmt(abs(float(v)))


def effect_sentence(t: SensitivityTable, e) -> str:
    """One term of one table as a sentence in the metric's units, e.g. 'test worst_group_acc falls
    from 0.700 to 0.350 (−0.350, 95% CI −0.370 to −0.330) from bias_level 0 to 0.9'; an interaction
    (no unit contrast) in SDs of the metric."""
    name = metric_name(t.metric)
    if pd.isna(e.get("diff", np.nan)):
        return (f"{name}: interaction {e['label']} {e['effect']:+.2f} SD (95% CI {e['ci_low']:+.2f} to "
                f"{e['ci_high']:+.2f})")
    verb = "rises" if e["diff"] > 0 else "falls" if e["diff"] < 0 else "stays"
    ci_ = (f", 95% CI {signed(e['diff_ci_low'])} to {signed(e['diff_ci_high'])}"
           if pd.notna(e["diff_ci_low"]) else ", in an interaction: no CI for the average")
    return (f"{name} {verb} from {fmt(e['from_value'])} to {fmt(e['to_value'])} ({signed(e['diff'])}{ci_}) "
            f"from {e['axis']} {e['from_level']} to {e['to_level']}")


def surviving(t: SensitivityTable) -> pd.DataFrame:
    """The table's terms whose corrected p-value is below 0.05, largest standardized effect first."""
    if t.message or t.effects.empty:
        return t.effects.iloc[:0]
    e = t.effects.dropna(subset=["effect"])
    e = e[e.p_adj < 0.05]
    return e.reindex(e.effect.abs().sort_values(ascending=False).index)


def finding(t: SensitivityTable) -> str:
    """One paragraph per table: what survives correction, in the metric's units."""
    where = f"{metric_name(t.metric)} ({t.subset}, n={t.n}, epoch rule {t.selection})"
    if t.message:
        return f"{where}: {t.message}."
    if t.effects.dropna(subset=["effect"]).empty:
        return f"{where}: no effect could be estimated."
    sig = surviving(t)
    s = f"{where}: R²={t.r2:.2f}; "
    if sig.empty:
        s += f"no term survives correction ({len(t.effects)} terms)"
    else:
        s += (f"{len(sig)} of {len(t.effects)} terms survive correction: "
              + "; ".join(effect_sentence(t, e) for _, e in sig.iterrows()))
    if t.not_varied:
        s += f"; not varied: {', '.join(t.not_varied)}"
    return s + "."


def _table_block(t: SensitivityTable) -> dict:
    cells = t.meta.get("cells", {})
    per = cells.get("per_config")
    levels = "; ".join(f"{a}: " + ", ".join(f"{k} {v}" for k, v in d.items()) for a, d in cells.items()
                       if a != "per_config")
    return {"id": slug(f"t-{t.metric}-{t.subset}"), "metric": t.metric, "label": _label(t.metric), "subset": t.subset,
            "n": t.n, "r2": fmt(t.r2), "sentence": finding(t), "rows": effect_rows(t),
            "reference": _ref_text(t), "unit": t.meta.get("unit") or "unitless",
            "cells": (f"{per[2]} configurations, {per[0]}–{per[1]} trials each" if per else "–")
            + (f"; per level: {levels}" if levels else ""),
            "excluded": describe_exclusions(t.excluded), "not_varied": ", ".join(t.not_varied) or "none",
            "metric_sd": fmt(t.meta.get("metric_sd"))}


def _summary_findings(tables: list[SensitivityTable]) -> list[dict]:
    """The first screen: every term of the all-trials tables that survives correction, as a
    sentence in the metric's units; per metric in table order, largest effect first."""
    out = []
    for t in tables:
        if t.subset != "all":
            continue
        for _, e in surviving(t).iterrows():
            out.append({"metric": t.metric, "label": metric_name(t.metric), "sentence": effect_sentence(t, e),
                        "term": e["label"], "effect": float(e["effect"]), "p_adj": fmt(e["p_adj"]), "n": t.n,
                        "anchor": slug(f"t-{t.metric}-{t.subset}")})
    return out


def _frame_rows(df: pd.DataFrame, columns: list[str] | None = None) -> dict:
    if df is None or df.empty:
        return {"columns": [], "rows": []}
    cols = columns or list(df.columns)
    return {"columns": cols, "rows": [[fmt(v) for v in r] for r in df[cols].itertuples(index=False, name=None)]}


def mean_ci_text(mean, lo, hi, n) -> str:
    """'0.84 (0.80 to 0.88)', or '0.84 (1 seed: no CI)'."""
    return f"{fmt(mean)} ({ci(lo, hi)})" if n and n > 1 else f"{fmt(mean)} ({int(n or 0)} seed: no CI)"


def _leaderboard(result: dict) -> dict:
    """The leaderboard as the report shows it: per data condition, its best `leaderboard_top`
    configurations (rank, the axes that are not conditions, the validation mean they were ranked
    on, the test metric with its CI over seeds, the seeds and their trial ids)."""
    lb, metric = result.get("leaderboard"), result.get("lead_metric")
    empty = {"metric": metric, "label": _label(metric) if metric else "", "rank_label": "", "columns": [], "rows": [],
             "shown": 0, "total": 0, "top": result.get("leaderboard_top")}
    if lb is None or lb.empty or not metric:
        return empty
    top = result.get("leaderboard_top")
    rank_by = lb["rank_by"].iloc[0] if "rank_by" in lb else metric
    shown = lb[lb["rank"] <= top] if top and "rank" in lb else lb
    extra = {"mean", "ci_low", "ci_high", "seeds", "excluded", "metric", "rank_by", "rank_mean", "condition", "rank",
             "trial_ids", "selection"}
    axes = [c for c in lb.columns if c not in extra and not vocab.is_condition(c)]
    rank_col, test_col = f"{_label(rank_by)} (ranked on)", f"{_label(metric)} ± 95% CI"
    shown = shown.assign(**{rank_col: shown["rank_mean"].map(fmt), test_col: [
        mean_ci_text(*v) for v in zip(shown["mean"], shown.ci_low, shown.ci_high, shown.seeds)]})
    cols = ["condition", "rank", *axes, rank_col, test_col, "seeds", "trial_ids"]
    return {**empty, "rank_label": _label(rank_by), "shown": len(shown), "total": len(lb),
            **_frame_rows(shown, [c for c in cols if c in shown])}


def _arch(result: dict, metric: str | None) -> dict:
    arch, paired = result.get("arch", pd.DataFrame()), result.get("paired", pd.DataFrame())
    out = {"summary": {"columns": [], "rows": []}, "paired": {"columns": [], "rows": []}, "figures": [],
           "lead": {"columns": [], "rows": []}, "label": _label(metric) if metric else ""}
    if arch is None or arch.empty:
        return out
    a = arch.assign(label=arch.metric.map(_label), ci95=[ci(lo, hi) for lo, hi in zip(arch.ci_low, arch.ci_high)])
    out["summary"] = _frame_rows(a, ["label", "arch", "mean", "ci95", "configs", "n"])
    if paired is not None and not paired.empty:
        p = paired.assign(label=paired.metric.map(_label), ci95=[ci(lo, hi) for lo, hi in zip(paired.ci_low, paired.ci_high)])
        out["paired"] = _frame_rows(p, ["label", "arch_a", "arch_b", "diff", "ci95", "pairs", "configs"])
    lead = a[a.metric == metric] if metric else a.iloc[:0]
    out["lead"] = _frame_rows(lead, ["arch", "mean", "ci95", "configs", "n"])
    for m in list(dict.fromkeys([metric] + list(arch.metric.unique())))[:4]:
        fig = png(plots.bars(arch, m, _label(m)), f"{_label(m)} by architecture")
        if fig:
            out["figures"].append(fig)
    return out


def _metadata(result: dict) -> dict:
    man = next((m for m in result.get("manifests", []) if m), {})
    spec = man.get("spec") or {}
    spec_rows = [[k, json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v)] for k, v in _flatten(spec)]
    trials = result["trials"]
    st = status_of(trials).value_counts()
    statuses = [[s, int(st.get(s, 0))] for s in vocab.STATUSES]
    ln = int(trials.get("learned_nothing", pd.Series(dtype=bool)).fillna(False).astype(bool).sum())
    rec = result.get("records", pd.DataFrame())
    failed = []
    if rec is not None and len(rec):
        bad = rec[rec.status != "completed"]
        failed = [[r.trial_id, r.trial_status, str(r.error or "")[:400]] for r in bad.itertuples()]
    return {"spec": {"columns": ["field", "value"], "rows": spec_rows}, "statuses": statuses, "learned_nothing": ln,
            "hosts": _frame_rows(result.get("hosts")), "failed": {"columns": ["trial", "status", "error"], "rows": failed},
            "name": man.get("name", ""), "dirs": [str(d) for d in result.get("run_dirs", [])],
            "rows": result.get("n_rows"), "files": result.get("n_files"), "python": man.get("python", "")}


def _flatten(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict) and v and prefix.count(".") < 1:
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _statistics(result: dict) -> dict:
    refs = {}
    for t in result["tables"]:
        refs.update(t.meta.get("reference", {}))
    units = {m: vocab.metric_meta(m)["unit"] or "unitless" for m in result["metrics"]}
    scale = {}
    for t in result["tables"]:
        scale.update(t.meta.get("scale", {}))
    return {"estimator": ESTIMATOR, "ci": CI_METHOD, "boot_ci": BOOT_CI,
            "correction": CORRECTION_NAMES.get(result.get("correction", "holm"), result.get("correction")),
            "correction_short": {"holm": "Holm", "bh": "Benjamini–Hochberg", "none": "un"}.get(
                result.get("correction", "holm"), str(result.get("correction"))),
            "references": [[a, v] for a, v in refs.items()], "scales": [[a, s] for a, s in scale.items()],
            "units": [[_label(m), u] for m, u in units.items()],
            "statuses": ", ".join(result.get("include_status", ("completed",))),
            "excluded": describe_exclusions(result.get("excluded", {})),
            "interactions": ", ".join(f"{a}×{b}" for a, b in result.get("interactions", [])) or "none",
            "axes": ", ".join(result.get("axes", [])) or "none", "axes_from": result.get("axes_from", ""),
            "margin": vocab.LEARNED_NOTHING_MARGIN}


def _visuals(result: dict) -> list[dict]:
    """The visual way in: a parallel-coordinates figure of the configurations coloured by the lead
    metric, and the axes' importance for it (fANOVA, else partial η²)."""
    metric, used, axes = result.get("lead_metric"), result.get("used"), list(result.get("axes", []))
    if not metric or used is None or metric not in used or not axes:
        return []
    axes = [a for a in axes if a in used]
    configs = used.groupby(axes, dropna=False)[metric].mean().reset_index() if axes else used.iloc[:0]
    logs = tuple(a for a in axes if pd.api.types.is_numeric_dtype(used[a]) and vocab.log_scale(a, used[a].unique()))
    figs = [png(plots.parallel_coordinates(configs, axes, metric, metric_name(metric), logs),
                f"parallel coordinates: every configuration, coloured by {metric_name(metric)}")]
    t = next((t for t in result["tables"] if t.metric == metric and t.subset == "all" and not t.message), None)
    if t is not None:
        if not t.importance.empty:
            imp = t.importance.rename(columns={"fanova": "value"}).assign(measure="fANOVA importance")
        else:
            imp = t.anova[~t.anova.axis.str.contains("×")].rename(columns={"partial_eta2": "value"})[["axis", "value"]]
            imp = imp.assign(measure="partial η² (fANOVA not fitted)")
        figs.append(png(plots.importance(imp, metric_name(metric)), f"parameter importance for {metric_name(metric)}"))
    return [f for f in figs if f]


def _figures(result: dict) -> list[dict]:
    overall = [t for t in result["tables"] if t.subset == "all" and not t.effects.empty]
    figs = []
    if overall:
        eff = pd.concat([t.effects.assign(metric=t.metric) for t in overall])
        figs.append(png(plots.heatmap(eff), "sensitivity heatmap: effect of each term on each metric"))
    for col, split, by_group in curves():
        figs.append(png(plots.curves(result.get("curves"), col, split, by_group), f"{split} {col} per epoch"))
    return [f for f in figs if f]


# Report sections beyond the built-in ones, in page order (after the figures, before the study
# sections): id -> (title, builder). A builder takes the analysis result and returns None (no
# section for this run) or {"text": [paragraph, ...], "tables": [{"caption", "columns", "rows"}],
# "figures": [{"alt", "src"}]} — plain data the templates render like every other section.
SECTIONS: dict[str, tuple[str, Callable[[dict], dict | None]]] = {}


def register_section(section_id: str, title: str, builder: Callable[[dict], dict | None]) -> None:
    SECTIONS[section_id] = (title, builder)


def _sections(result: dict) -> list[dict]:
    out = []
    for sid, (title, builder) in SECTIONS.items():
        content = builder(result)
        if content:
            out.append({"id": slug(sid), "title": title, "text": list(content.get("text", [])),
                        "tables": list(content.get("tables", [])), "figures": list(content.get("figures", []))})
    return out


def build(result: dict, title: str, studies=()) -> dict:
    tables = result["tables"]
    fitted = [t for t in tables if not t.message]
    families: dict = {}
    for t in fitted:
        fam = family_of(t.metric)
        families.setdefault(fam, []).append(_table_block(t))
    fam_list = [{"id": f"family-{slug(FAMILY_TITLES.get(f, str(f)))}", "title": FAMILY_TITLES.get(f, str(f)),
                 "tables": blocks} for f, blocks in families.items()]
    insufficient: dict = {}
    for t in tables:
        if t.message:
            insufficient.setdefault(t.message, []).append(f"{t.metric} ({t.subset})")
    missing = [m for m in result.get("requested", []) if m not in result["metrics"]]
    if missing:
        insufficient.setdefault("no values in the rows", []).extend(missing)
    study_blocks = [{"id": slug(h), "title": h, "html": body_html, "md": body_md} for h, body_html, body_md in studies]
    doc = {"title": title, "generated": time.strftime("%Y-%m-%d %H:%M"), "select": result["select"],
           "n_trials": len(result["trials"]), "n_used": len(result.get("used", result["trials"])),
           "summary": {"findings": _summary_findings(tables), "leaderboard": _leaderboard(result),
                       "arch": _arch(result, result.get("lead_metric")), "visuals": _visuals(result)},
           "statistics": _statistics(result), "families": fam_list,
           "insufficient": [{"reason": k, "tables": v} for k, v in insufficient.items()],
           "studies": study_blocks, "figures": _figures(result), "metadata": _metadata(result),
           "sections": _sections(result),
           "nc_fair": _frame_rows(result.get("nc_fair"), ["nc", "fairness", "rho", "ci_low", "ci_high", "p", "n", "clusters"]
                                  if result.get("nc_fair") is not None and not result["nc_fair"].empty else None)}
    doc["contents"] = ([("summary", "Summary"), ("statistics", "How to read the numbers")]
                       + [(f["id"], f["title"]) for f in fam_list]
                       + ([("insufficient", "Tables without enough data")] if doc["insufficient"] else [])
                       + [("arch-details", "Architecture comparison"), ("nc-fairness", "Neural collapse vs fairness"),
                          ("figures", "Figures")]
                       + [(s["id"], s["title"]) for s in doc["sections"]]
                       + [(s["id"], s["title"]) for s in study_blocks] + [("metadata", "Run metadata")])
    return doc
