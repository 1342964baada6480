"""The report and the tables on disk: CSV + Parquet tables, one self-contained HTML page and a
Markdown summary. The content is built as data (`reportdata.build`) and rendered from templates
(`render.render`); `analysis.pipeline.analyse` computes the result both start from."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .pipeline import analyse  # noqa: F401  (the entry point most callers want)


def write_tables(result: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    sens = pd.concat([t.long() for t in result["tables"]], ignore_index=True) if result["tables"] else pd.DataFrame()
    frames = {"trials": result["trials"], "sensitivity": sens, "arch_summary": result["arch"],
              "arch_paired": result["paired"], "nc_vs_fairness": result["nc_fair"],
              "leaderboard": result.get("leaderboard", pd.DataFrame())}
    paths = []
    for name, df in frames.items():
        df = df.assign(selection=result["select"]) if "selection" not in df else df
        df = df.drop(columns=[c for c in ("config",) if c in df])
        df.to_csv(out / f"{name}.csv", index=False)
        df.to_parquet(out / f"{name}.parquet", index=False)
        paths += [out / f"{name}.csv", out / f"{name}.parquet"]
    return paths


def write_report(result: dict, out: Path, title: str, extra_sections=()) -> tuple[Path, Path]:
    """report.html (self-contained) and summary.md; extra_sections: (heading, html, markdown)."""
    from .render import render          # matplotlib and jinja2: imported only when a report is drawn
    from .reportdata import build

    return render(build(result, title, extra_sections), Path(out))


def spec_name(run_dir) -> str:
    p = Path(run_dir) / "manifest.json"
    try:
        return json.loads(p.read_text()).get("name", Path(run_dir).name) if p.exists() else Path(run_dir).name
    except (json.JSONDecodeError, OSError):
        return Path(run_dir).name
