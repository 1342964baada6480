"""Studies that test what five papers claim: each spec under sweeps/specs/ declares its study
(`study:` block: primary outcome, secondary outcomes, manipulation checks, with directions and
margins), and the study's module measures every finding from the run's rows; `common.judge`
corrects within the study (Holm) and reads the verdicts.

Study modules: `collapse` (nc_fairness, fine_structure, gc_transfer) and `debias` (dfr,
change_penalty). `ncsweep study RUN_DIR` prints the verdict table; the report shows it too.
"""
from __future__ import annotations

from .common import VERDICTS, _html, _md, headline, judge, text_table  # noqa: F401
from .registry import STUDIES, check_declaration, resolve, study  # noqa: F401
from . import collapse, debias  # noqa: F401,E402  (registers the studies)


def run_study(name: str | None, rows, declaration: dict | None = None) -> tuple[str | None, list[dict]]:
    """(study name, judged findings + notes + figures) of `rows`; (None, []) for no study."""
    s, decl = resolve(name, declaration)
    if s is None:
        return None, []
    return s.name, judge(s.measure(rows, dict(decl.get("options") or {})), decl)


def declaration_of(manifests) -> dict | None:
    for m in manifests or ():
        d = (m.get("spec") or {}).get("study")
        if isinstance(d, dict):
            return d
    return None


def study_sections(name: str, result: dict) -> list[tuple[str, str, str]]:
    """(heading, html, markdown) of the run's study, for the report."""
    sname, findings = run_study(name, result["rows"], declaration_of(result.get("manifests")))
    if sname is None:
        return []
    return [(f"Study: {sname}", _html(findings), _md(findings))]


def study_command(run_dir: str) -> int:
    """`ncsweep study RUN_DIR`: the study's verdict table, its headline and its notes."""
    from pathlib import Path

    from ..load import load, manifests

    man = manifests([run_dir])
    decl = declaration_of(man)
    name = next((m.get("name") for m in man if m.get("name")), Path(run_dir).name)
    sname, fs = run_study(name, load([run_dir]), decl)
    if sname is None:
        print(f"{run_dir}: its spec declares no study and its name {name!r} is no known study "
              f"({', '.join(sorted(STUDIES))})")
        return 2
    print(f"study {sname} — {run_dir} ({'declared in the spec' if decl else 'default declaration (old run)'})")
    print(headline(fs))
    print(text_table(fs))
    for f in fs:
        if f.get("id"):
            print(f"  {f['id']}: {f['claim']} — {f['measure']}")
    for f in fs:
        if "note" in f:
            print(f"note: {f['note']}")
    return 0
