"""Render the report's data (`analysis.reportdata.build`) with the Jinja2 templates in
analysis/templates/: one self-contained HTML page (figures embedded as data: URIs) and a
Markdown summary."""
from __future__ import annotations

from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).parent / "templates"


def _mdtable(t: dict) -> str:
    if not t or not t.get("rows"):
        return "None.\n"
    esc = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, t["columns"])) + " |", "|" + "---|" * len(t["columns"])]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in t["rows"]]
    return "\n".join(lines) + "\n"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"),
                                                                 default_for_string=False),
                             trim_blocks=False, lstrip_blocks=False)
    env.globals["mdtable"] = _mdtable
    return env


def render(doc: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    (out / "report.html").write_text(env.get_template("report.html.j2").render(doc=doc))
    (out / "summary.md").write_text(env.get_template("summary.md.j2").render(doc=doc))
    return out / "report.html", out / "summary.md"
