"""The analysis pipeline and the report: tables (CSV + Parquet), one self-contained HTML page
with the figures embedded, and a Markdown summary stating each table's finding in a sentence."""
from __future__ import annotations

import base64
import html
import json
import math
import time
from pathlib import Path

import pandas as pd

from . import plots
from .compare import arch_summary, nc_vs_fairness, paired_differences
from .load import load
from .select import select_epochs, trial_table
from .sensitivity import SensitivityTable, sensitivity_tables

DEFAULT_METRICS = ["test_worst_group_acc", "test_acc", "test_gap", "test_eo_diff", "test_nc1", "train_nc1",
                   "train_nc1_g0", "train_nc1_g1", "test_nc2_etf", "test_nc3", "test_nc4_mismatch", "train_cdnv",
                   "train_gc", "test_fine_nmi", "test_fine_probe_acc", "test_dfr_worst_group_acc",
                   "test_delta_norm", "test_fewshot_acc", "test_target_nc1"]


def analyse(run_dirs, select: str = "final", metrics: list[str] | None = None) -> dict:
    """Load, select epochs, build the trial table and every table of the report."""
    rows = load(run_dirs)
    chosen = select_epochs(rows, select)
    wanted = metrics or DEFAULT_METRICS
    trials = trial_table(chosen, wanted)
    present = [m for m in wanted if m in trials and trials[m].notna().any()]
    tables = sensitivity_tables(trials, present)
    return {"rows": rows, "trials": trials, "metrics": present, "select": select, "tables": tables,
            "arch": arch_summary(trials, present) if "arch" in trials else pd.DataFrame(),
            "paired": paired_differences(trials, present) if "arch" in trials else pd.DataFrame(),
            "nc_fair": nc_vs_fairness(trials) if "test_gap" in trials else pd.DataFrame()}


def write_tables(result: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    sens = pd.concat([t.long() for t in result["tables"]], ignore_index=True) if result["tables"] else pd.DataFrame()
    frames = {"trials": result["trials"], "sensitivity": sens, "arch_summary": result["arch"],
              "arch_paired": result["paired"], "nc_vs_fairness": result["nc_fair"]}
    paths = []
    for name, df in frames.items():
        df = df.assign(selection=result["select"]) if "selection" not in df else df
        df.to_csv(out / f"{name}.csv", index=False)
        df.to_parquet(out / f"{name}.parquet", index=False)
        paths += [out / f"{name}.csv", out / f"{name}.parquet"]
    return paths


def finding(t: SensitivityTable) -> str:
    """One sentence per table."""
    where = f"{t.metric} ({t.subset}, n={t.n}, epoch rule {t.selection})"
    if t.message:
        return f"{where}: {t.message}."
    e = t.effects.dropna(subset=["effect"])
    if e.empty:
        return f"{where}: no effect could be estimated."
    top = e.iloc[e.effect.abs().argmax()]
    sig = e[e.p_adj < 0.05]
    imp = t.importance.set_index("axis")["fanova"] if not t.importance.empty else pd.Series(dtype=float)
    lead = imp.idxmax() if len(imp) else top.axis
    s = (f"{where}: R²={t.r2:.2f}; largest standardized effect {top.term} {top.effect:+.2f} SD "
         f"(95% CI {top.ci_low:+.2f} to {top.ci_high:+.2f}, adjusted p={top.p_adj:.3g})")
    s += f"; fANOVA ranks {lead} first ({imp.max():.2f})" if len(imp) else ""
    s += f"; {len(sig)} of {len(e)} terms significant after correction" if len(sig) else "; no term significant after correction"
    if t.not_varied:
        s += f"; not varied: {', '.join(t.not_varied)}"
    return s + "."


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return f"<p><em>{html.escape(alt)}: no data.</em></p>"
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'


def _fmt(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="–", border=0)


def write_report(result: dict, out: Path, title: str, extra_sections: list[tuple[str, str, str]] = ()) -> tuple[Path, Path]:
    """report.html (self-contained) and summary.md; extra_sections: (heading, html, markdown)."""
    out.mkdir(parents=True, exist_ok=True)
    trials, tables = result["trials"], result["tables"]
    status = trials["trial_status"].value_counts().to_dict() if "trial_status" in trials else {}
    md = [f"# {title}", "", f"Trials: {len(trials)} ({status}); epoch rule: `{result['select']}`.", ""]
    h = [f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
         "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;font-size:12px}"
         "td,th{padding:2px 6px;border-bottom:1px solid #ddd}img{max-width:100%}</style></head><body>",
         f"<h1>{html.escape(title)}</h1><p>Trials: {len(trials)} {html.escape(str(status))}; epoch rule "
         f"<code>{html.escape(result['select'])}</code>; generated {time.strftime('%Y-%m-%d %H:%M')}.</p>"]
    for heading, body_html, body_md in extra_sections:
        h += [f"<h2>{html.escape(heading)}</h2>", body_html]
        md += [f"## {heading}", "", body_md, ""]
    h.append("<h2>Sensitivity</h2>")
    md += ["## Sensitivity", ""]
    overall = [t for t in tables if t.subset == "all"]
    effects = pd.concat([t.effects.assign(metric=t.metric) for t in overall if not t.effects.empty] or [pd.DataFrame()])
    h.append(_img(plots.heatmap(effects) if not effects.empty else None, "sensitivity heatmap"))
    unfitted: dict[str, list[str]] = {}
    for t in tables:
        sentence = finding(t)
        if t.message and t.subset != "all":   # one line per subset, not one per metric
            unfitted.setdefault(f"{t.subset}: {t.message}", []).append(t.metric)
        else:
            md.append(f"- {sentence}")
        h.append(f"<h3>{html.escape(t.metric)} — {html.escape(t.subset)}</h3><p>{html.escape(sentence)}</p>")
        if not t.message:
            h.append(_fmt(t.long().drop(columns=["metric", "subset", "selection", "message"], errors="ignore")))
    md += [f"- {k} (tables not fitted: {', '.join(v)})." for k, v in unfitted.items()] + [""]
    h.append("<h2>Architecture comparison</h2>")
    md += ["## Architecture comparison", ""]
    if not result["arch"].empty:
        h.append(_fmt(result["arch"]))
        for m in result["metrics"][:4]:
            h.append(_img(plots.bars(result["arch"], m), m))
        best = result["arch"][result["arch"].metric == result["metrics"][0]].sort_values("mean", ascending=False)
        if not best.empty:
            r = best.iloc[0]
            md.append(f"- Highest mean {r.metric}: {r.arch} {r['mean']:.3f} (95% CI {r.ci_low:.3f}–{r.ci_high:.3f}, n={r.n}).")
    if not result["paired"].empty:
        h.append("<h3>Paired differences on matching configs</h3>" + _fmt(result["paired"]))
        for _, r in result["paired"].iterrows():
            if r.metric == result["metrics"][0] and not math.isnan(r["diff"]):
                md.append(f"- {r.metric}: {r.arch_a} − {r.arch_b} = {r['diff']:+.3f} (95% CI {r.ci_low:+.3f} to "
                          f"{r.ci_high:+.3f}, {r.pairs} pairs).")
    h.append("<h2>Neural collapse vs fairness</h2>")
    md += ["", "## Neural collapse vs fairness", ""]
    if not result["nc_fair"].empty:
        h.append(_fmt(result["nc_fair"]))
        for _, r in result["nc_fair"].iterrows():
            md.append(f"- Spearman ρ({r.nc}, {r.fairness}) = {r.rho:+.2f} (bootstrap 95% CI {r.ci_low:+.2f} to {r.ci_high:+.2f}, n={r.n}).")
    else:
        h.append("<p>No NC/gap columns to correlate.</p>")
    h.append("<h2>Curves</h2>")
    rows = result["rows"]
    for col, split, by_group in (("nc1", "train", True), ("worst_group_acc", "test", False), ("acc", "test", True)):
        h.append(f"<h3>{split} {col} per epoch</h3>" + _img(plots.curves(rows, col, split, by_group), col))
    h.append("</body></html>")
    (out / "report.html").write_text("\n".join(h))
    (out / "summary.md").write_text("\n".join(md) + "\n")
    return out / "report.html", out / "summary.md"


def spec_name(run_dir) -> str:
    p = Path(run_dir) / "manifest.json"
    return json.loads(p.read_text()).get("name", Path(run_dir).name) if p.exists() else Path(run_dir).name
