"""The report and the tables on disk: CSV + Parquet + LaTeX tables (the `TABLES` registry), one
self-contained HTML page and a Markdown summary. The content is built as data (`reportdata.build`)
and rendered from templates (`render.render`); `analysis.pipeline.analyse` computes the result both
start from."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from sweeps import layout

from .compare import LEADERBOARD_ADDED
from .latex import booktabs
from .pipeline import analyse  # noqa: F401  (the entry point most callers want)


def _sensitivity(result: dict) -> pd.DataFrame:
    return pd.concat([t.long() for t in result["tables"]], ignore_index=True) if result["tables"] else pd.DataFrame()


def _added_last(df: pd.DataFrame, added: list[str]) -> pd.DataFrame:
    """Columns added after a table was first documented go last (readers by position keep working)."""
    return df[[c for c in df if c not in added] + [c for c in added if c in df]]


# Every table `analyze` writes, as name -> the function giving it from an analysis result; each is
# written as name.csv, name.parquet and name.tex (booktabs). A new table is one `register_table`.
TABLES: dict[str, Callable[[dict], pd.DataFrame]] = {
    "trials": lambda r: r["trials"],
    "sensitivity": _sensitivity,
    "arch_summary": lambda r: r["arch"],
    "arch_paired": lambda r: r["paired"],
    "nc_vs_fairness": lambda r: r["nc_fair"],
    "leaderboard": lambda r: _added_last(r.get("leaderboard", pd.DataFrame()), LEADERBOARD_ADDED),
    "curves": lambda r: r.get("curves", pd.DataFrame()),
}


def register_table(name: str, table: Callable[[dict], pd.DataFrame]) -> None:
    """Add a table to what `write_tables` writes (name.csv / .parquet / .tex)."""
    TABLES[name] = table


def write_tables(result: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, table in TABLES.items():
        df = table(result)
        df = pd.DataFrame() if df is None else df
        df = df.assign(selection=result["select"]) if "selection" not in df else df
        df = df.drop(columns=[c for c in ("config",) if c in df])
        df.to_csv(out / f"{name}.csv", index=False)
        df.to_parquet(out / f"{name}.parquet", index=False)
        (out / f"{name}.tex").write_text(booktabs(df))
        paths += [out / f"{name}.{ext}" for ext in ("csv", "parquet", "tex")]
    return paths


def write_report(result: dict, out: Path, title: str, extra_sections=()) -> tuple[Path, Path]:
    """report.html (self-contained) and summary.md; extra_sections: (heading, html, markdown)."""
    from .render import render          # matplotlib and jinja2: imported only when a report is drawn
    from .reportdata import build

    return render(build(result, title, extra_sections), Path(out))


def spec_name(run_dir) -> str:
    try:
        return (layout.Location(run_dir).manifest() or {}).get("name", Path(run_dir).name)
    except (ValueError, OSError):
        return Path(run_dir).name
